"""Field access shared by the task readers: the usual CodeXGLUE / Hugging Face names, checked."""

from __future__ import annotations

from typing import Any, Sequence

from mtpeft.data.jsonl import Record


def pick_field(record: Record, names: Sequence[str]) -> tuple[str, Any]:
    """Return (name, value) of the first of ``names`` present in the record."""
    for name in names:
        if name in record.data and record.data[name] is not None:
            return name, record.data[name]
    raise record.error(f"missing field: expected one of {', '.join(names)}")


def pick_text(record: Record, names: Sequence[str]) -> str:
    """A non-empty string field (code or query)."""
    name, value = pick_field(record, names)
    if not isinstance(value, str):
        raise record.error(f"field {name!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise record.error(f"field {name!r} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800" escapes decode to lone surrogates no tokenizer takes
        raise record.error(f"field {name!r} is not valid Unicode (a lone surrogate escape)") from None
    return value


def binary_label(record: Record, names: Sequence[str]) -> int:
    """A 0/1 label; also accepts true/false and the strings "0"/"1"."""
    name, value = pick_field(record, names)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in {"0", "1", "true", "false"}:
        return int(value.strip().lower() in {"1", "true"})
    raise record.error(f"label {name!r} must be 0 or 1, got {value!r}")


def record_id(record: Record, names: Sequence[str] = ("idx", "id", "url")) -> str:
    """A stable identifier for predictions; falls back to the line number."""
    for name in names:
        if name in record.data and record.data[name] is not None:
            return str(record.data[name])
    return f"line{record.line}"
