"""Run every task's evaluation sets and collect ``{EVAL: {METRIC: value}}``."""

from __future__ import annotations

from typing import Any

from mtpeft.tasks.base import EvalContext, EvalSet, Task


def evaluate_sets(model: Any, tasks: dict[str, Task], sets: dict[str, list[EvalSet]], ctx: EvalContext) -> dict[str, dict[str, float]]:
    """``sets`` maps a task name to its evaluation sets of one split."""
    results: dict[str, dict[str, float]] = {}
    for name, evalsets in sets.items():
        for evalset in evalsets:
            results[evalset.name] = tasks[name].evaluate(model, evalset, ctx)
    return results


def calibrate(model: Any, tasks: dict[str, Task], valid: dict[str, list[EvalSet]], ctx: EvalContext) -> None:
    """Let each task fit its decision parameters (thresholds) on its primary VALIDATION set."""
    for name, evalsets in valid.items():
        primary = [s for s in evalsets if s.name == name]
        if primary:
            tasks[name].calibrate(model, primary[0], ctx)


def selection_score(tasks: dict[str, Task], valid_metrics: dict[str, dict[str, float]]) -> float:
    """Mean of every task's headline metric on its primary validation set (the study's criterion)."""
    values = [valid_metrics[name][task.metric] for name, task in tasks.items() if name in valid_metrics]
    return sum(values) / len(values) if values else 0.0
