"""Trivial baselines on the same evaluation sets: what a model must beat to have learned anything.

Each task says what its trivial predictor is (``Task.trivial_metrics``): for the binary tasks,
always the majority class (accuracy) and always the positive class (F1, precision, recall); for
search, the expected MRR of a uniformly random ranking.
"""

from __future__ import annotations

from mtpeft.tasks.base import EvalSet, Task


def trivial_baselines(tasks: dict[str, Task], sets: dict[str, list[EvalSet]]) -> dict[str, dict[str, float]]:
    """``sets`` maps a task name to its evaluation sets of one split."""
    return {evalset.name: tasks[name].trivial_metrics(evalset) for name, evalsets in sets.items() for evalset in evalsets}
