"""``learned_softmax`` (the study's): sum_i n * softmax(w)_i * L_i with w learned with the model.

The factor n (tasks) makes step 0 equal the plain sum. The gradient on w always favours the task
with the lowest loss and nothing stops it (issue 8 measured a collapse onto search at lr 1e-3), so
two options:

- ``lr``: the learning rate of w (default: the training lr; still follows the warm-up schedule);
- ``reg`` (lambda, default 0) with ``reg_kind``: ``kl`` adds lambda * KL(softmax(w) || uniform),
  ``l2`` adds lambda * ||w||^2; both pull the weights back toward equal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.training.weightings.base import LossWeighting
from mtpeft.training.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("learned_softmax")
class LearnedSoftmax(LossWeighting):
    OPTIONS = {"lr": None, "reg": 0.0, "reg_kind": "kl"}

    def __init__(self, tasks: list[str], **options) -> None:
        super().__init__(tasks, **options)
        if self.options["reg_kind"] not in ("kl", "l2"):
            raise MtpeftError(f"training.weighting_options.reg_kind must be kl or l2, got {self.options['reg_kind']!r}")
        self.logits = nn.Parameter(torch.zeros(self.n))

    def _weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0) * self.n

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self._weights()[self.index[task]] * loss

    def regularizer(self) -> torch.Tensor | None:
        reg = self.options["reg"] or 0.0
        if reg == 0.0:
            return None
        if self.options["reg_kind"] == "l2":
            return reg * self.logits.pow(2).sum()
        log_p = torch.log_softmax(self.logits, dim=0)
        return reg * (log_p.exp() * (log_p + math.log(self.n))).sum()  # KL(p || uniform)

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._weights().tolist()))
