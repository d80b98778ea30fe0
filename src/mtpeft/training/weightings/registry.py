"""The weighting registry and its builder (options validated against the weighting's OPTIONS)."""

from __future__ import annotations

from typing import Any

from mtpeft.registry import Registry
from mtpeft.training.weightings.base import LossWeighting, validate_options

WEIGHTINGS: Registry = Registry("weighting")


def build_weighting(name: str, tasks: list[str], options: dict[str, Any] | None = None) -> LossWeighting:
    cls = WEIGHTINGS.get(name)
    return cls(tasks, **validate_options(name, cls, options))
