"""Vulnerability (defect) detection: is this C function vulnerable? Devign; accuracy."""

from __future__ import annotations

import numpy as np

from mtpeft.evaluation.metrics import accuracy, binary_f1
from mtpeft.tasks.binary import BinaryTask
from mtpeft.tasks.registry import register_task


@register_task("defect")
class DefectTask(BinaryTask):
    name = "defect"
    metric = "accuracy"
    description = "vulnerability detection (Devign): function -> vulnerable?; accuracy"
    prompt_placeholders = ("code",)
    languages = ("c",)
    default_threshold = "tune"  # accuracy-best threshold on validation; set 0.5 for the study's rule
    text_fields = ("func", "code", "function")
    label_fields = ("target", "label")

    def score(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        # accuracy is the headline (CodeXGLUE); F1 of the vulnerable class is reported beside it
        return accuracy(labels, predictions, weights) | binary_f1(labels, predictions, weights)
