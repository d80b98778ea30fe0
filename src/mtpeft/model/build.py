"""Assemble a MultiTaskModel from a run config: backbone -> PEFT method -> one head per task."""

from __future__ import annotations

from pathlib import Path

from mtpeft.config import RunConfig
from mtpeft.model.backbone import load_backbone
from mtpeft.model.methods import build_method
from mtpeft.model.methods.base import Method
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.tasks.base import Task


def build_model(config: RunConfig, tasks: dict[str, Task], adapter_dir: Path | None = None) -> tuple[MultiTaskModel, Method]:
    """A fresh model; with ``adapter_dir`` the saved method is attached instead of a new one."""
    backbone = load_backbone(config.backbone.name, config.backbone.pooling)
    method = build_method(config.method.name, config.method.options)
    if adapter_dir is None:
        backbone.model = method.apply(backbone.model, backbone.family)
    else:
        backbone.model = method.load(backbone.model, backbone.family, adapter_dir)
    heads = {name: task.make_head(backbone.hidden_size) for name, task in tasks.items()}
    return MultiTaskModel(backbone, heads), method
