"""Run every task's evaluation sets and collect ``{EVAL: {METRIC: value}}``."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtpeft.tasks.base import EvalContext, EvalSet, Task


def evaluate_sets(model: Any, tasks: dict[str, Task], sets: dict[str, list[EvalSet]], ctx: EvalContext) -> dict[str, dict[str, float]]:
    """Score every set with the tasks' current decision parameters; ``sets`` maps a task name to
    its evaluation sets of one split."""
    results: dict[str, dict[str, float]] = {}
    for name, evalsets in sets.items():
        for evalset in evalsets:
            results[evalset.name] = tasks[name].evaluate(model, evalset, ctx)
    return results


def output_spread(outputs: Any) -> float | None:
    """Standard deviation of a set's per-example scores (a binary head's probabilities), or None
    for outputs that are not one score per example. Near 0 means the head answers the same for
    every input: the shared representation has collapsed (seen at too high a learning rate)."""
    if isinstance(outputs, np.ndarray) and outputs.ndim == 1 and len(outputs) > 1:
        return float(np.std(outputs))
    return None


def validate_sets(model: Any, tasks: dict[str, Task], valid: dict[str, list[EvalSet]], ctx: EvalContext,
                  spreads: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Validation in one forward pass per set: each task tunes its decision parameters
    (thresholds) on the outputs of its primary set, then every set is scored from the same
    outputs (tuning first, so the scores use the tuned threshold). ``spreads``, when given,
    receives each set's ``output_spread``."""
    results: dict[str, dict[str, float]] = {}
    for name, evalsets in valid.items():
        task = tasks[name]
        outputs = {evalset.name: task.outputs(model, evalset, ctx) for evalset in evalsets}
        if spreads is not None:
            spreads.update({s: v for s, out in outputs.items() if (v := output_spread(out)) is not None})
        primary = [s for s in evalsets if s.name == name]
        if primary:
            task.tune_from(primary[0], outputs[name])
        for evalset in evalsets:
            results[evalset.name] = task.score_from(evalset, outputs.pop(evalset.name))
    return results


def calibrate(model: Any, tasks: dict[str, Task], valid: dict[str, list[EvalSet]], ctx: EvalContext) -> None:
    """Let each task fit its decision parameters on its primary VALIDATION set (without scoring)."""
    for name, evalsets in valid.items():
        primary = [s for s in evalsets if s.name == name]
        if primary:
            tasks[name].calibrate(model, primary[0], ctx)


def selection_score(tasks: dict[str, Task], valid_metrics: dict[str, dict[str, float]]) -> float:
    """Mean of every task's headline metric on its primary validation set (the study's criterion);
    a lower-is-better metric (an error rate) counts negated, so a higher score is always better."""
    values = [valid_metrics[name][task.metric] * (1 if task.higher_is_better else -1)
              for name, task in tasks.items() if name in valid_metrics]
    return sum(values) / len(values) if values else 0.0
