"""Metrics against values computed by hand."""

import numpy as np
import pytest

from mtpeft.evaluation.metrics import accuracy, best_threshold, binary_f1, mrr, reciprocal_ranks


def test_accuracy_by_hand():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0])["accuracy"] == pytest.approx(0.5)


def test_binary_f1_by_hand():
    # labels 1 1 1 0 0, predictions 1 0 1 1 0: TP 2, FP 1, FN 1
    m = binary_f1([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_binary_f1_no_positive_prediction_is_zero_not_nan():
    assert binary_f1([1, 0], [0, 0]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_mrr_by_hand_with_ties():
    scores = np.array([
        [0.9, 0.1, 0.5],  # answer 0 ranked 1st -> 1
        [0.9, 0.1, 0.5],  # answer 2 ranked 2nd -> 1/2
        [0.3, 0.3, 0.1],  # answer 1 tied with 0: a tie counts against the answer (pessimistic) -> 1/2
        [0.1, 0.2, 0.3],  # answer 0 ranked 3rd -> 1/3
    ])
    answers = [0, 2, 1, 0]
    assert reciprocal_ranks(scores, answers).tolist() == pytest.approx([1, 0.5, 0.5, 1 / 3])
    assert mrr(scores, answers)["mrr"] == pytest.approx((1 + 0.5 + 0.5 + 1 / 3) / 4)


def test_best_threshold_f1_and_accuracy():
    labels = [0, 0, 1, 1, 0, 1]
    probs = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    # cut at 0.35 -> predictions 0 1 1 1 0 1: TP 3 FP 1 -> F1 6/7, the best reachable
    assert best_threshold(labels, probs, "f1") == pytest.approx(0.35)
    assert binary_f1(labels, (np.array(probs) >= 0.35).astype(int))["f1"] == pytest.approx(6 / 7)
    # accuracy: cut at 0.8 -> 0 0 0 1 0 1 = 5/6, cut at 0.35 -> 5/6 too; the first maximum (higher cut) wins
    t = best_threshold(labels, probs, "accuracy")
    assert accuracy(labels, (np.array(probs) >= t).astype(int))["accuracy"] == pytest.approx(5 / 6)


def test_best_threshold_tie_groups_are_not_split():
    # equal probabilities must fall on the same side of the cut
    labels = [1, 0, 1]
    probs = [0.5, 0.5, 0.2]
    t = best_threshold(labels, probs, "f1")
    assert t in (0.5, 0.2)
    assert binary_f1(labels, (np.array(probs) >= t).astype(int))["f1"] == pytest.approx(0.8)
