"""The PEFT method protocol: how a method attaches to a backbone, and how it is saved and loaded.

A method never knows which tasks exist. ``apply`` freezes the backbone and adds the method's
trainable parameters; the returned module is called like the backbone
(``model(input_ids=..., attention_mask=...)`` -> ``.last_hidden_state``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from mtpeft.errors import MtpeftError


class Method(ABC):
    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]] = ("encoder", "decoder")  # backbone families it supports
    description: ClassVar[str] = ""
    # the options the method understands; any other is refused (None: the method checks them itself)
    option_names: ClassVar[tuple[str, ...] | None] = ()

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        if self.option_names is not None:
            unknown = sorted(set(self.options) - set(self.option_names))
            if unknown:
                valid = ", ".join(self.option_names) or "none"
                raise MtpeftError(f"method {self.name!r}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")

    def number(self, name: str, default: float, kind: type = float, low: float | None = None, high: float | None = None) -> Any:
        """A numeric option, checked: a clear error instead of a traceback or a silent default."""
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise MtpeftError(f"method {self.name!r}: option {name!r} must be a number, got {value!r}")
        try:
            number = kind(float(value)) if kind is float else kind(value)
        except (TypeError, ValueError):
            raise MtpeftError(f"method {self.name!r}: option {name!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise MtpeftError(f"method {self.name!r}: option {name!r} must be between {low} and {high}, got {value!r}")
        return number

    def check_supported(self, model: nn.Module, family: str) -> None:
        """Fail early, with a message, for a backbone this method cannot handle."""
        if family not in self.families:
            raise MtpeftError(
                f"method {self.name!r} does not support {family}-only backbones such as {model.config.model_type!r}"
            )

    @abstractmethod
    def apply(self, model: nn.Module, family: str) -> nn.Module:
        """Freeze the backbone, attach the method's trainable parameters, return the module to call."""

    @abstractmethod
    def save(self, model: nn.Module, directory: Path) -> None:
        """Write only what the method trained (plus its config) into ``directory``."""

    @abstractmethod
    def load(self, model: nn.Module, family: str, directory: Path) -> nn.Module:
        """Attach the method saved in ``directory`` to a freshly loaded backbone."""


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
