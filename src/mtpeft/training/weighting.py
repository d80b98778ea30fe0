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
    """The combined loss is a sum of per-task terms, so the loop can back-propagate each task's
    term as soon as it is computed and hold one task's graph at a time, not all of them."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.index = {task: i for i, task in enumerate(self.tasks)}

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.term(task, loss) for task, loss in losses.items())

    def weights(self) -> dict[str, float]:
        """The current effective weight of each task (logged)."""
        return {task: 1.0 for task in self.tasks}


@WEIGHTINGS.register("equal")
class Equal(LossWeighting):
    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return loss


@WEIGHTINGS.register("learned_softmax")
class LearnedSoftmax(LossWeighting):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__(tasks)
        self.logits = nn.Parameter(torch.zeros(len(tasks)))

    def _softmax(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0) * len(self.tasks)

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self._softmax()[self.index[task]] * loss

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._softmax().tolist()))


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        log_var = self.log_vars[self.index[task]]
        return torch.exp(-log_var) * loss + log_var

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return {task: torch.exp(-s).item() for task, s in zip(self.tasks, self.log_vars)}


def build_weighting(name: str, tasks: list[str]) -> LossWeighting:
    return WEIGHTINGS.get(name)(tasks)
