"""The task registry: a new task is one new module plus one ``@register_task`` line."""

from __future__ import annotations

from typing import Any

from mtpeft.registry import Registry

TASKS: Registry = Registry("task")
register_task = TASKS.register


def build_task(name: str, options: dict[str, Any] | None = None):
    return TASKS.get(name)(options)
