"""``famo`` (Liu et al., NeurIPS 2023, "FAMO: Fast Adaptive Multitask Optimization").

Logits xi (start 0), z = softmax(xi). The step minimises sum_i z_i log L_i / c with
c = sum_j z_j / L_j, whose gradient is sum_i (z_i / (c L_i)) grad L_i: every task's log-loss
decreases at the rate z asks for. Then xi moves so that the task whose log-loss fell least gets
more weight: delta_i = log L_i(t) - log L_i(t+1), grad xi = J_softmax^T delta, one Adam step with
``lr`` (0.025) and L2 weight decay ``gamma`` (0.01), as the reference code does.

Two approximations keep it O(1) (no extra forward pass per step):

- the "after" losses L(t+1) are the next step's losses, on the next batches, rather than the
  same batch recomputed after the update;
- c uses the latest loss seen of every other task (the loop back-propagates one task at a time,
  before the other losses of the step exist).

The terms are scaled by the number of tasks so that step 0 equals the plain sum (as the other
weightings). ``weights()`` reports n * z, what FAMO learns; the gradient weight of a task in a
step is n * z_i / (c L_i).
"""

from __future__ import annotations

import math

import torch

from mtpeft.training.weightings.base import LossWeighting, adam_step
from mtpeft.training.weightings.registry import WEIGHTINGS

EPS = 1e-8


@WEIGHTINGS.register("famo")
class Famo(LossWeighting):
    OPTIONS = {"lr": 0.025, "gamma": 0.01}

    def __init__(self, tasks: list[str], **options) -> None:
        super().__init__(tasks, **options)
        self.register_buffer("logits", torch.zeros(self.n))
        self.register_buffer("last_loss", torch.full((self.n,), math.nan))
        self.register_buffer("adam_m", torch.zeros(self.n))
        self.register_buffer("adam_v", torch.zeros(self.n))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))

    def param_groups(self, lr: float) -> list[dict]:
        return []  # xi follows its own rule in after_step

    def _z(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        i = self.index[task]
        z = self._z()
        current = float(loss.detach()) + EPS
        others = torch.where(torch.isnan(self.last_loss), torch.full_like(self.last_loss, current), self.last_loss + EPS)
        others[i] = current
        c = float((z / others).sum())
        return self.n * z[i] / c * torch.log(loss + EPS)

    @torch.no_grad()
    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        delta = torch.zeros(self.n)
        for task, loss in losses.items():
            i = self.index[task]
            now = float(loss) + EPS
            if not math.isnan(float(self.last_loss[i])):
                delta[i] = math.log(float(self.last_loss[i]) + EPS) - math.log(now)
            self.last_loss[i] = float(loss)
        if not delta.any():
            return
        z = self._z()
        grad = z * (delta - (z * delta).sum())  # J_softmax^T delta, J = diag(z) - z z^T
        adam_step(self.logits, grad, self.adam_m, self.adam_v, self.adam_step, self.options["lr"], self.options["gamma"])

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, (self._z() * self.n).tolist()))
