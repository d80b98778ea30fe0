"""Task affinity: how much task i's test metric changes when trained together with task j,
relative to training i alone (in points, i.e. x100 of a metric in [0, 1])."""

from __future__ import annotations

from typing import Mapping

Matrix = dict[str, dict[str, float | None]]


def points(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return 100.0 * (after - before)


def affinity_matrix(tasks: list[str], single: Mapping[str, float], pairs: Mapping[frozenset, Mapping[str, float]]) -> Matrix:
    """A[i][j] = metric_i(trained on {i, j}) - metric_i(trained on {i}) in points; None where a
    cell is missing; the diagonal is None (a task with itself is the single-task run)."""
    matrix: Matrix = {}
    for i in tasks:
        matrix[i] = {}
        for j in tasks:
            pair = pairs.get(frozenset((i, j))) if i != j else None
            matrix[i][j] = points(pair.get(i), single.get(i)) if pair else None
    return matrix


def mean_matrix(matrices: list[Matrix]) -> Matrix:
    """Entry-wise mean over methods (entries missing in one method are averaged over the others)."""
    if not matrices:
        return {}
    tasks = list(matrices[0])
    out: Matrix = {}
    for i in tasks:
        out[i] = {}
        for j in tasks:
            values = [m[i][j] for m in matrices if m.get(i, {}).get(j) is not None]
            out[i][j] = sum(values) / len(values) if values else None
    return out
