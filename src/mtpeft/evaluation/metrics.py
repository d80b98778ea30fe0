"""Pure metric functions, matching the CodeXGLUE evaluators the study reports."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


def accuracy(labels: Sequence[int], predictions: Sequence[int], weights: Sequence[float] | None = None) -> dict[str, float]:
    """CodeXGLUE defect detection: the share of functions whose 0/1 prediction equals the label.
    ``weights`` (per example) count an example several times, as in ``best_threshold``."""
    return {"accuracy": float(accuracy_score(labels, predictions, sample_weight=weights))}


def binary_f1(labels: Sequence[int], predictions: Sequence[int], weights: Sequence[float] | None = None) -> dict[str, float]:
    """Precision, recall and F1 of the positive class (clone / flaky), 0 where undefined."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average="binary", pos_label=1, zero_division=0, sample_weight=weights
    )
    return {"f1": float(f1), "precision": float(precision), "recall": float(recall)}


def reciprocal_ranks(scores: np.ndarray, answers: Sequence[int]) -> np.ndarray:
    """1 / rank of each query's answer among all candidates (rows: queries, columns: candidates).

    Pessimistic ranks: every candidate scored at least as high as the answer counts as ranked
    before it (CodeBERT's code-search ``run.py`` counts scores >= the answer's). Ties never help,
    so a collapsed embedding that scores everything alike gets the worst rank, not the best.
    """
    scores = np.asarray(scores, dtype=np.float64)
    answers = np.asarray(answers, dtype=np.int64)
    answer_scores = scores[np.arange(len(answers)), answers]
    ranks = (scores >= answer_scores[:, None]).sum(axis=1)
    return 1.0 / ranks


def random_ranking_mrr(corpus_size: int) -> float:
    """E[1/rank] when the answer's rank is uniform over 1..N."""
    return float(np.mean(1.0 / np.arange(1, corpus_size + 1))) if corpus_size else 0.0


def mrr(scores: np.ndarray, answers: Sequence[int]) -> dict[str, float]:
    """Mean reciprocal rank of each query's answer among all candidates."""
    if len(answers) == 0:
        return {"mrr": 0.0}
    return {"mrr": float(reciprocal_ranks(scores, answers).mean())}


def best_threshold(labels: Sequence[int], probabilities: Sequence[float], metric: str = "f1",
                   weights: Sequence[float] | None = None) -> float:
    """The threshold t (predict positive when p >= t) that maximises ``f1`` (positive class) or ``accuracy``.

    Used on validation data only. Every cut between distinct probabilities is a candidate, and so is
    one above the highest probability ("all negative", which accuracy may prefer). ``weights`` (per
    example) count an example several times, e.g. negatives a stratified cap under-sampled.
    Sorting once makes every candidate threshold O(1).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    positives = float((w * labels).sum())
    if len(labels) == 0 or (metric == "f1" and positives == 0):
        return 0.5
    order = np.argsort(-probabilities, kind="stable")
    sorted_p, sorted_y, sorted_w = probabilities[order], labels[order], w[order]
    true_pos = np.concatenate([[0.0], np.cumsum(sorted_w * sorted_y)])  # index k: the top k predicted positive
    predicted_pos = np.concatenate([[0.0], np.cumsum(sorted_w)])
    total = predicted_pos[-1]
    if metric == "f1":
        score = 2 * true_pos / np.maximum(predicted_pos + positives, 1e-12)
    elif metric == "accuracy":
        true_neg = (total - positives) - (predicted_pos - true_pos)
        score = (true_pos + true_neg) / total
    else:
        raise ValueError(f"cannot tune a threshold for metric {metric!r}")
    # k = 0 (all negative) is reachable; otherwise only the last index of a run of equal probabilities
    reachable = np.concatenate([[True], np.append(sorted_p[1:] != sorted_p[:-1], True)])
    best = int(np.argmax(np.where(reachable, score, -1.0)))
    if best == 0:
        return float(np.nextafter(sorted_p[0], np.inf))  # above the highest probability
    return float(sorted_p[best - 1])
