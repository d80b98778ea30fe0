"""PEFT methods, registered by name (one module each). Importing this package registers them."""

from mtpeft.model.methods.base import Method
from mtpeft.model.methods.registry import METHODS, build_method, register_method
from mtpeft.model.methods import bottleneck, full, ia3, lora, prefix  # noqa: F401  (registration)

__all__ = ["Method", "METHODS", "build_method", "register_method"]
