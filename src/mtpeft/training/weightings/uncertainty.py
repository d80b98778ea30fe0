"""``uncertainty`` (Kendall et al. 2018, homoscedastic): sum_i exp(-s_i) * L_i + s_i, s_i = log sigma_i^2
learned with the model. Option ``lr``: the learning rate of s (default: the training lr)."""

from __future__ import annotations

import torch
from torch import nn

from mtpeft.training.weightings.base import LossWeighting
from mtpeft.training.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    OPTIONS = {"lr": None}

    def __init__(self, tasks: list[str], **options) -> None:
        super().__init__(tasks, **options)
        self.log_vars = nn.Parameter(torch.zeros(self.n))

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        log_var = self.log_vars[self.index[task]]
        return torch.exp(-log_var) * loss + log_var

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return {task: torch.exp(-s).item() for task, s in zip(self.tasks, self.log_vars)}
