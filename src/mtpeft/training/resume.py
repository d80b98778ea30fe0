"""What a "last" checkpoint holds, split into tensors (safetensors) and plain data (JSON); no pickle.

Each ``*_state`` function returns ``(tensors, data)`` under a key prefix, and the matching
``load_*`` puts them back. Together they cover the trainable weights (the method's and the heads'),
the loss weighting, the optimizer, the scheduler and the torch / numpy / python random states;
the loop adds its own position (epoch, step, streams, sampler, best score, history).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.training.samplers import python_rng_from_json, python_rng_to_json

Tensors = dict[str, torch.Tensor]


def trainable_state(model: nn.Module, prefix: str = "model.") -> Tensors:
    """Every trainable parameter by name: the method's weights and the heads, whatever the method."""
    return {prefix + name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, tensors: Tensors, prefix: str = "model.") -> None:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    saved = {k[len(prefix):] for k in tensors if k.startswith(prefix)}
    if saved != set(params):
        missing, extra = sorted(set(params) - saved)[:3], sorted(saved - set(params))[:3]
        raise MtpeftError(f"the last checkpoint does not fit this model (missing {missing}, unexpected {extra}); "
                          "was the config changed?")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[prefix + name])


def module_state(module: nn.Module, prefix: str) -> Tensors:
    return {prefix + k: v.detach().cpu() for k, v in module.state_dict().items()}


def load_module(module: nn.Module, tensors: Tensors, prefix: str) -> None:
    module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str = "optimizer.") -> tuple[Tensors, dict[str, Any]]:
    """AdamW's per-parameter tensors (step, moments) go to safetensors; the param groups (lr,
    betas, ...) and any non-tensor entries stay in JSON."""
    saved = optimizer.state_dict()
    tensors: Tensors = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entries in saved["state"].items():
        plain[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value.detach().cpu()
            else:
                plain[str(index)][key] = value
    return tensors, {"param_groups": saved["param_groups"], "plain": plain}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: Tensors, data: dict[str, Any], prefix: str = "optimizer.") -> None:
    state: dict[int, dict[str, Any]] = {int(i): dict(entries) for i, entries in data["plain"].items()}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": data["param_groups"]})


def rng_state(prefix: str = "rng.") -> tuple[Tensors, dict[str, Any]]:
    """torch (CPU and every CUDA device), numpy and python global random states (dropout, ...)."""
    tensors = {prefix + "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    data = {"python": python_rng_to_json(random.getstate()),
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, data


def load_rng(tensors: Tensors, data: dict[str, Any], prefix: str = "rng.") -> None:
    torch.set_rng_state(tensors[prefix + "torch"])
    cuda = sorted((k for k in tensors if k.startswith(prefix + "cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    random.setstate(python_rng_from_json(data["python"]))
    kind, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
