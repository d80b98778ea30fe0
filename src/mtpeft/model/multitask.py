"""MultiTaskModel: one backbone (PEFT method applied) shared by one head per task."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from mtpeft.model.backbone import Backbone
from mtpeft.tasks.encoding import combine_windows


class MultiTaskModel(nn.Module):
    """``encode`` returns pooled states once, so several heads can read the same pass."""

    def __init__(self, backbone: Backbone, heads: dict[str, nn.Module], window_pool: str = "mean") -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.window_pool = window_pool

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One pooled state per text; a text cut into windows (``owner``) gets its windows combined."""
        pooled = self.backbone(inputs["input_ids"], inputs["attention_mask"]).float()
        if "owner" in inputs:
            pooled = combine_windows(pooled, inputs["owner"], self.window_pool)
        return pooled

    def backbone_parameters(self) -> Iterable[nn.Parameter]:
        return (p for p in self.backbone.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, int]:
        """Total / trainable parameters of the backbone (with the method) and of the heads."""
        backbone_total = sum(p.numel() for p in self.backbone.parameters())
        backbone_trainable = sum(p.numel() for p in self.backbone.parameters() if p.requires_grad)
        heads = sum(p.numel() for p in self.heads.parameters())
        return {
            "backbone_total": backbone_total,
            "method_trainable": backbone_trainable,
            "heads": heads,
            "total": backbone_total + heads,
            "trainable": backbone_trainable + heads,
        }
