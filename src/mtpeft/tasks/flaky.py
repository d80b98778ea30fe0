"""Flaky-test prediction: is this test method flaky? FlakeFlagger; F1 of the flaky class.

Only ~3.7% of FlakeFlagger is flaky. By default the loss weighs positives by negatives/positives of
the training set (``pos_weight: auto``) and the decision threshold is the F1-best one on the
validation set (``threshold: tune``); the test set is never looked at for either.
"""

from __future__ import annotations

import numpy as np

from mtpeft.evaluation.metrics import binary_f1
from mtpeft.tasks.binary import BinaryTask
from mtpeft.tasks.registry import register_task


@register_task("flaky")
class FlakyTask(BinaryTask):
    name = "flaky"
    metric = "f1"
    description = "flaky-test prediction (FlakeFlagger): test method -> flaky?; F1"
    prompt_placeholders = ("code",)
    languages = ("java",)
    default_threshold = "tune"
    default_pos_weight = "auto"
    label_fields = ("flaky", "label", "target")
    option_names = ("text_field",)

    @property
    def text_fields(self) -> tuple[str, ...]:
        # Flakify's test-smell-reduced ``final_code`` or the raw ``full_code``; configurable
        chosen = self.options.get("text_field")
        return (chosen,) if chosen else ("full_code", "final_code", "code", "func")

    def score(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        return binary_f1(labels, predictions, weights)
