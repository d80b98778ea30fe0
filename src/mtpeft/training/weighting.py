"""Loss weighting: how the per-task losses of a step become one loss.

``equal``: the plain sum. ``learned_softmax`` (the study): sum_i softmax(w)_i * L_i * n_tasks, with
w learnable (the factor n_tasks makes step 0 equal the plain sum). ``uncertainty`` (Kendall et al.
2018, homoscedastic): sum_i exp(-s_i) * L_i + s_i with s_i = log sigma_i^2 learnable.
"""

from __future__ import annotations

import torch
from torch import nn

from mtpeft.registry import Registry

WEIGHTINGS: Registry = Registry("weighting")


class LossWeighting(nn.Module):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """The current effective weight of each task (logged)."""
        return {task: 1.0 for task in self.tasks}


@WEIGHTINGS.register("equal")
class Equal(LossWeighting):
    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(losses.values())


@WEIGHTINGS.register("learned_softmax")
class LearnedSoftmax(LossWeighting):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__(tasks)
        self.logits = nn.Parameter(torch.zeros(len(tasks)))

    def _softmax(self) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self.logits, dim=0) * len(self.tasks)
        return dict(zip(self.tasks, probs))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self._softmax()
        return sum(weights[task] * loss for task, loss in losses.items())

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return {task: w.item() for task, w in self._softmax().items()}


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        index = {task: i for i, task in enumerate(self.tasks)}
        return sum(torch.exp(-self.log_vars[index[t]]) * loss + self.log_vars[index[t]] for t, loss in losses.items())

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return {task: torch.exp(-s).item() for task, s in zip(self.tasks, self.log_vars)}


def build_weighting(name: str, tasks: list[str]) -> LossWeighting:
    return WEIGHTINGS.get(name)(tasks)
