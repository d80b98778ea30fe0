"""``equal``: the plain sum of the task losses."""

from __future__ import annotations

import torch

from mtpeft.training.weightings.base import LossWeighting
from mtpeft.training.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("equal")
class Equal(LossWeighting):
    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return loss
