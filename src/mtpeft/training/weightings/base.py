"""The loss-weighting protocol and its hooks into the training loop.

The combined loss is a sum of per-task terms, so the loop back-propagates each task's term as soon
as it is computed and holds one task's graph at a time. A weighting can observe what it needs
through hooks that default to no-ops:

- ``observe_gradients(task, shared)`` right after that task's backward (GradNorm);
- ``regularizer()`` one extra term back-propagated once per step (learned softmax toward uniform);
- ``after_step(losses)`` after the optimizer step, with the step's detached losses (GradNorm, FAMO);
- ``end_epoch(mean_losses)`` once per epoch, before validation (loss-normalised).

Weights updated by their own rule (not by the model's optimizer) live in buffers, with their Adam
moments, so that ``state_dict()`` (saved as safetensors with the heads) holds everything a resumed
run needs.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from mtpeft.errors import MtpeftError


class LossWeighting(nn.Module):
    # option name -> default; a subclass lists what it accepts (validated in ``configure``)
    OPTIONS: dict[str, Any] = {}

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.n = len(self.tasks)
        self.index = {task: i for i, task in enumerate(self.tasks)}
        self.options = dict(self.OPTIONS) | options

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = sum(self.term(task, loss) for task, loss in losses.items())
        penalty = self.regularizer()
        return total if penalty is None else total + penalty

    def weights(self) -> dict[str, float]:
        """The current effective weight of each task (logged every step)."""
        return {task: 1.0 for task in self.tasks}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups for weights learned by back-propagation (own lr when configured)."""
        params = list(self.parameters())
        if not params:
            return []
        return [{"params": params, "lr": self.options.get("lr") or lr, "weight_decay": 0.0}]

    # hooks: no-ops unless a weighting needs them
    def observe_gradients(self, task: str, shared: list[nn.Parameter]) -> None:
        pass

    def regularizer(self) -> torch.Tensor | None:
        return None

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        pass

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        pass


def validate_options(name: str, cls: type[LossWeighting], options: dict[str, Any] | None) -> dict[str, Any]:
    """Unknown keys and non-numbers stop with one clear line (numbers may come from YAML as strings)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        valid = ", ".join(sorted(cls.OPTIONS)) or "none"
        raise MtpeftError(f"unknown option(s) {', '.join(unknown)} for loss weighting {name!r} "
                          f"(training.weighting_options); valid: {valid}")
    checked = {}
    for key, value in options.items():
        default = cls.OPTIONS[key]
        if isinstance(default, str):
            checked[key] = str(value)
            continue
        try:
            number = None if value is None else float(value)
        except (TypeError, ValueError):
            raise MtpeftError(f"training.weighting_options.{key} must be a number, got {value!r}") from None
        if number is not None and (math.isnan(number) or number < 0):
            raise MtpeftError(f"training.weighting_options.{key} must be >= 0, got {value!r}")
        checked[key] = number
    return checked


@torch.no_grad()
def adam_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: torch.Tensor,
              lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """Adam (L2 weight decay added to the gradient, as FAMO's reference code does) on tensors kept
    as module buffers: torch.optim keeps its moments outside the module, where the checkpoint
    (a safetensors file of the weighting's state_dict) would not see them."""
    grad = grad + weight_decay * param
    step += 1
    t = int(step.item())
    m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def grad_snapshot(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
