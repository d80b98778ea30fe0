"""``loss_normalized``: per epoch, w_i proportional to task i's mean training loss in the previous
epoch, normalised to sum to the number of tasks (harder tasks weigh more); uniform in the first
epoch. As the study's published code offers it. No options."""

from __future__ import annotations

import torch

from mtpeft.training.weightings.base import LossWeighting
from mtpeft.training.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("loss_normalized")
class LossNormalized(LossWeighting):
    def __init__(self, tasks: list[str], **options) -> None:
        super().__init__(tasks, **options)
        self.register_buffer("w", torch.ones(self.n))

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.w[self.index[task]] * loss

    @torch.no_grad()
    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        seen = {t: v for t, v in mean_losses.items() if t in self.index and v > 0}
        if len(seen) != self.n:
            return  # a task without training loss this epoch: keep the weights (not guess them)
        means = torch.tensor([seen[t] for t in self.tasks], dtype=self.w.dtype)
        self.w.copy_(means / means.sum() * self.n)

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.tolist()))
