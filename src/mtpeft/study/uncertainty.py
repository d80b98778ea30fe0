"""Standard errors of the cells' test metrics, from what every cell already records.

A test cap keeps the set's class shares and scores without weights, so a cell's precision and
recall (metrics.json), the sample's positive share (the always-positive baseline's precision,
trivial_baselines.json) and its size (data_report.json) give the confusion counts exactly. A
bootstrap over examples is then a multinomial draw of the four counts, so F1's standard error needs
no per-example predictions. Accuracy's is binomial. MRR keeps no per-query ranks: as every
reciprocal rank lies in [0, 1], its variance is at most m(1 - m), which bounds the standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

DRAWS = 4000  # bootstrap draws: the standard error itself then varies by ~1% between seeds


@dataclass(frozen=True)
class StandardError:
    value: float  # in the metric's own units (0-1)
    how: str  # "binomial", "bootstrap" (of the confusion counts) or "upper bound"


def confusion_counts(n: int, positive_share: float, precision: float, recall: float) -> tuple[int, int, int, int] | None:
    """(TP, FP, FN, TN) of an unweighted binary test sample, or None when they cannot be recovered."""
    positives = round(positive_share * n)
    true_pos = round(recall * positives)
    if positives == 0 or (true_pos > 0 and precision <= 0):
        return None
    false_pos = round(true_pos / precision) - true_pos if true_pos else 0
    false_neg = positives - true_pos
    true_neg = n - positives - false_pos
    return (true_pos, false_pos, false_neg, true_neg) if true_neg >= 0 else None


def f1_bootstrap_se(counts: tuple[int, int, int, int], draws: int = DRAWS, seed: int = 0) -> float:
    """Standard error of the positive class's F1 over resamples of the test examples."""
    n = sum(counts)
    resampled = np.random.default_rng(seed).multinomial(n, np.asarray(counts, dtype=np.float64) / n, size=draws)
    tp, fp, fn = resampled[:, 0], resampled[:, 1], resampled[:, 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(draws), where=denominator > 0)
    return float(f1.std(ddof=1))


def standard_error(metric: str, values: Mapping[str, float], trivial: Mapping[str, float], n: int | None) -> StandardError | None:
    """The standard error of one cell's test ``metric`` (``values``: its metrics on the set;
    ``trivial``: the trivial baseline's on the same sample; ``n``: examples, or queries for MRR)."""
    if not n or metric not in values:
        return None
    value = values[metric]
    if metric == "accuracy":
        return StandardError(math.sqrt(value * (1 - value) / n), "binomial")
    if metric == "mrr":
        return StandardError(math.sqrt(max(value * (1 - value), 0.0) / n), "upper bound")
    if metric == "f1" and {"precision", "recall"} <= values.keys() and "precision" in trivial:
        counts = confusion_counts(n, trivial["precision"], values["precision"], values["recall"])
        if counts is not None:
            return StandardError(f1_bootstrap_se(counts), "bootstrap")
    return None


def difference_se(a: StandardError | None, b: StandardError | None) -> float | None:
    """Standard error of the difference of two cells' metrics, as if independent. Both are scored
    on the same examples, whose errors usually agree, so a paired estimate would be smaller."""
    return None if a is None or b is None else math.hypot(a.value, b.value)
