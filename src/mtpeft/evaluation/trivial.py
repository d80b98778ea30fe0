"""Trivial baselines on the same evaluation sets: what a model must beat to have learned anything.

Binary tasks: always predicting the majority class (accuracy) and always predicting the positive
class (F1, precision, recall). Search: the expected MRR of a uniformly random ranking.
"""

from __future__ import annotations

import numpy as np

from mtpeft.evaluation.metrics import accuracy, binary_f1
from mtpeft.tasks.base import EvalSet


def random_ranking_mrr(corpus_size: int) -> float:
    """E[1/rank] when the answer's rank is uniform over 1..N."""
    return float(np.mean(1.0 / np.arange(1, corpus_size + 1))) if corpus_size else 0.0


def trivial_metrics(evalset: EvalSet) -> dict[str, float]:
    data = evalset.data
    if hasattr(data, "corpus"):
        return {"mrr": random_ranking_mrr(len(data.corpus))}
    labels = np.array([e.label for e in data])
    majority = int(labels.mean() >= 0.5)
    return accuracy(labels, np.full(len(labels), majority)) | binary_f1(labels, np.ones(len(labels), dtype=int))


def trivial_baselines(sets: dict[str, list[EvalSet]]) -> dict[str, dict[str, float]]:
    return {evalset.name: trivial_metrics(evalset) for evalsets in sets.values() for evalset in evalsets}
