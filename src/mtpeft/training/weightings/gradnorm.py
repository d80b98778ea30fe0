"""``gradnorm`` (Chen et al., ICML 2018, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks").

Weights w (start 1) scale the losses; after every step they move so that the gradient norm of each
weighted term, G_i = ||grad_W w_i L_i|| on the shared trainable parameters W (the backbone's
trainable parameters: the PEFT module, or the whole backbone for full fine-tuning; never the heads),
approaches mean(G) * r_i^alpha, where r_i is task i's loss relative to its first loss, over the mean
of those ratios: a task that trains slower, or whose gradients are small, gets more weight.
The GradNorm loss sum_i |G_i - target_i| (target constant) has the gradient
sign(G_i - target_i) * ||grad_W L_i|| on w_i, applied with Adam (``lr``); then the weights are
clipped positive and renormalised to sum to the number of tasks.

G_i comes from the loop's per-task backward: the accumulated gradients after task i minus those
after the task before. Options: ``alpha`` (asymmetry, 1.5), ``lr`` (0.025). Needs every task in
every step (the round_robin sampler); with one task per step the targets equal the norms and the
weights stay put.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtpeft.training.weightings.base import LossWeighting, adam_step, grad_snapshot
from mtpeft.training.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("gradnorm")
class GradNorm(LossWeighting):
    OPTIONS = {"alpha": 1.5, "lr": 0.025}

    def __init__(self, tasks: list[str], **options) -> None:
        super().__init__(tasks, **options)
        self.register_buffer("w", torch.ones(self.n))
        self.register_buffer("initial_loss", torch.full((self.n,), math.nan))
        self.register_buffer("adam_m", torch.zeros(self.n))
        self.register_buffer("adam_v", torch.zeros(self.n))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))
        self._before: list[torch.Tensor] | None = None  # accumulated grads before the current task
        self._norms: dict[str, float] = {}

    def param_groups(self, lr: float) -> list[dict]:
        return []  # w follows its own rule in after_step, not the model's optimizer

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.w[self.index[task]] * loss

    @torch.no_grad()
    def observe_gradients(self, task: str, shared: list[nn.Parameter]) -> None:
        now = grad_snapshot(shared)
        before = self._before or [torch.zeros_like(g) for g in now]
        squared = sum(float((a - b).float().pow(2).sum()) for a, b in zip(now, before))
        self._norms[task] = math.sqrt(squared)
        self._before = now

    @torch.no_grad()
    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        norms, self._norms, self._before = self._norms, {}, None
        tasks = [t for t in losses if t in norms and t in self.index]
        if len(tasks) < 2:
            return
        idx = torch.tensor([self.index[t] for t in tasks])
        loss = torch.tensor([float(losses[t]) for t in tasks])
        first = self.initial_loss[idx]
        first = torch.where(torch.isnan(first), loss, first)
        self.initial_loss[idx] = first
        weighted_norm = torch.tensor([norms[t] for t in tasks])
        raw_norm = weighted_norm / self.w[idx].clamp_min(1e-8)  # ||grad L_i||
        ratio = loss / first.clamp_min(1e-12)
        target = weighted_norm.mean() * (ratio / ratio.mean()).pow(self.options["alpha"])
        grad = torch.zeros(self.n)
        grad[idx] = torch.sign(weighted_norm - target) * raw_norm
        adam_step(self.w, grad, self.adam_m, self.adam_v, self.adam_step, self.options["lr"])
        self.w.clamp_(min=1e-3)
        self.w.mul_(self.n / self.w.sum())

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.tolist()))
