"""MultiTaskModel: one backbone (PEFT method applied) shared by one head per task."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from mtpeft.model.backbone import Backbone


class MultiTaskModel(nn.Module):
    """``encode`` returns pooled states once, so several heads can read the same pass."""

    def __init__(self, backbone: Backbone, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(inputs["input_ids"], inputs["attention_mask"]).float()

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
