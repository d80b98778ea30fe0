"""Base for methods that the ``peft`` library owns: its config, its save format, its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.model.methods.base import Method


class PeftLibraryMethod(Method):
    """Subclasses build a ``peft`` config from the options; peft does the rest."""

    def peft_config(self, model: nn.Module, family: str) -> PeftConfig:
        raise NotImplementedError

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        self.check_supported(model, family)
        try:
            return get_peft_model(model, self.peft_config(model, family))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise MtpeftError(f"method {self.name!r} cannot be applied to {model.config.model_type!r}: {exc}") from None

    def save(self, model: nn.Module, directory: Path) -> None:
        # adapter_config.json + adapter_model.safetensors, loadable by peft itself
        model.save_pretrained(str(directory), safe_serialization=True)

    def load(self, model: nn.Module, family: str, directory: Path) -> nn.Module:
        self.check_supported(model, family)
        return PeftModel.from_pretrained(model, str(directory), is_trainable=False)


def target_option(options: dict[str, Any]) -> list[str] | str | None:
    """``target`` as a list of module names; ``all-linear`` (peft's: every linear layer of the
    backbone); None lets peft pick its default for the architecture."""
    target = options.get("target")
    if target in (None, "auto"):
        return None
    if target == "all-linear":
        return target
    if isinstance(target, str):
        return [t.strip() for t in target.split(",") if t.strip()]
    if isinstance(target, list):
        return [str(t) for t in target]
    raise MtpeftError(f"method option 'target' must be a list of module names, got {target!r}")
