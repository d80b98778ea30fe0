"""The PEFT method registry: a new method is one new module plus one ``@register_method`` line."""

from __future__ import annotations

from typing import Any

from mtpeft.registry import Registry

METHODS: Registry = Registry("method")
register_method = METHODS.register


def build_method(name: str, options: dict[str, Any] | None = None):
    return METHODS.get(name)(options)
