"""Numeric precision of the model: native bf16 detection and bf16 storage of frozen weights."""

from __future__ import annotations

import torch
from torch import nn


def bf16_supported() -> bool:
    """bf16 autocast on CPU pays off only where the CPU has native bf16 (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def store_frozen_in_bf16(model: nn.Module) -> int:
    """Keep every frozen floating-point parameter in bf16; returns how many tensors were cast.

    Under bf16 autocast each matmul casts its fp32 weight to bf16 at every call; the frozen
    backbone never changes, so it is cast once here. Trainable parameters (the method, the heads)
    and so their optimizer state stay fp32. Only for models that always run under bf16 autocast.
    """
    cast = 0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.bfloat16:
            parameter.data = parameter.data.to(torch.bfloat16)
            cast += 1
    return cast
