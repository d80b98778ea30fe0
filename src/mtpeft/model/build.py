"""Assemble a MultiTaskModel from a run config: backbone -> PEFT method -> one head per task."""

from __future__ import annotations

from pathlib import Path

from mtpeft.config import RunConfig
from mtpeft.model.backbone import load_backbone
from mtpeft.model.methods import build_method
from mtpeft.model.methods.base import Method
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.model.precision import bf16_supported, store_frozen_in_bf16
from mtpeft.tasks.base import Task


def build_model(config: RunConfig, tasks: dict[str, Task], adapter_dir: Path | None = None) -> tuple[MultiTaskModel, Method]:
    """A fresh model; with ``adapter_dir`` the saved method is attached instead of a new one."""
    b = config.backbone
    backbone = load_backbone(b.name, b.pooling, b.attention_dropout, b.hidden_dropout)
    method = build_method(config.method.name, config.method.options)
    if adapter_dir is None:
        backbone.model = method.apply(backbone.model, backbone.family)
    else:
        backbone.model = method.load(backbone.model, backbone.family, adapter_dir)
    if b.frozen_bf16 and config.training.bf16 and bf16_supported():
        backbone.always_bf16 = store_frozen_in_bf16(backbone.model) > 0
    heads = {name: task.make_head(backbone.hidden_size) for name, task in tasks.items()}
    return MultiTaskModel(backbone, heads, b.window_pool), method
