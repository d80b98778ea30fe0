"""Vulnerability (defect) detection: is this C function vulnerable? Devign; accuracy."""

from __future__ import annotations

import numpy as np

from mtpeft.data import binary_label, pick_text
from mtpeft.data.fields import record_id
from mtpeft.data.jsonl import Record
from mtpeft.evaluation.metrics import accuracy, binary_f1
from mtpeft.tasks.binary import BinaryTask, Example
from mtpeft.tasks.registry import register_task


@register_task("defect")
class DefectTask(BinaryTask):
    name = "defect"
    metric = "accuracy"
    description = "vulnerability detection (Devign): function -> vulnerable?; accuracy"
    default_threshold = "tune"  # accuracy-best threshold on validation; set 0.5 for the study's rule
    text_fields = ("func", "code", "function")
    label_fields = ("target", "label")

    def parse(self, record: Record, require_label: bool = True) -> Example:
        label = binary_label(record, self.label_fields) if require_label or "target" in record.data else None
        return Example(record_id(record), pick_text(record, self.text_fields), label)

    def score(self, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        # accuracy is the headline (CodeXGLUE); F1 of the vulnerable class is reported beside it
        return accuracy(labels, predictions) | binary_f1(labels, predictions)
