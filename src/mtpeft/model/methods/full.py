"""Full fine-tuning: every backbone weight trains (the study's reference point)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from mtpeft.model.methods.base import Method
from mtpeft.model.methods.registry import register_method

WEIGHTS = "model.safetensors"


@register_method("full")
class FullFineTuning(Method):
    name = "full"
    description = "full fine-tuning: all backbone weights train"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        self.check_supported(model, family)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def save(self, model: nn.Module, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_model(model, str(directory / WEIGHTS))  # handles tied weights
        model.config.save_pretrained(directory)

    def load(self, model: nn.Module, family: str, directory: Path) -> nn.Module:
        load_model(model, str(directory / WEIGHTS))
        return self.apply(model, family)
