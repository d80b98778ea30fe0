"""The mtpeft model cache (converted GGUF files, tiny test models), shared by backbone and tiny.

Its own module so that ``backbone`` (which resolves names) and ``tiny`` (which builds models) both
import it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtpeft.fileio import atomic_directory

__all__ = ["atomic_directory", "cache_dir"]


def cache_dir() -> Path:
    """Where converted / generated models are kept (``MTPEFT_CACHE`` overrides)."""
    return Path(os.environ.get("MTPEFT_CACHE", Path.home() / ".cache" / "mtpeft"))
