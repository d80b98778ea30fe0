"""Which device a command runs on: ``--device auto|cpu|cuda|cuda:N`` (auto = CUDA when present),
and whether bf16 autocast pays off there (native bf16 on the CPU, or a GPU that supports it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from mtpeft.errors import MtpeftError

DEVICES = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str | None = "auto") -> torch.device:
    """The torch device a name stands for; a CUDA device that is not there is one clear error."""
    name = str(name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise MtpeftError(f"unknown device {name!r}; valid: {DEVICES}")
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise MtpeftError(f"--device {name}: CUDA is not available ({why}); use --device cpu or --device auto")
        if index and int(index) >= torch.cuda.device_count():
            raise MtpeftError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device(name)
    raise MtpeftError(f"unknown device {name!r}; valid: {DEVICES}")


def bf16_pays_off(device: torch.device) -> bool:
    """bf16 autocast: on CUDA where the GPU supports it, on the CPU only with native bf16
    (AVX-512 BF16 / AMX; elsewhere it is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from mtpeft.model.precision import bf16_supported

    return bf16_supported()


# the CPU flags that decide PyTorch's kernels (fp32 FMA, AVX-512, native bf16 via AVX512-BF16 / AMX)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def cpu_facts() -> dict[str, Any]:
    """The CPU model and its kernel-relevant flags (Linux ``/proc/cpuinfo``; the platform's name
    elsewhere): sittings draw different CPUs, so every ledger and benchmark states its own."""
    model, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": [f for f in KERNEL_FLAGS if f in flags], "cores": os.cpu_count()}


def cpu_label(facts: dict[str, Any]) -> str:
    """One line for tables: ``Intel(R) Xeon(R) Processor (amx_bf16, avx512_bf16)``; the flags shown
    are those that set the bf16 path (AVX2 only when neither is there)."""
    shown = [f for f in ("amx_bf16", "avx512_bf16") if f in facts.get("cpu_flags", [])] or \
        [f for f in ("avx512f", "avx2") if f in facts.get("cpu_flags", [])][:1]
    return f"{facts.get('cpu') or '?'} ({', '.join(shown) or 'no AVX2'})"
