"""Data readers: JSON Lines (optionally gzipped) -> typed examples, with file:line errors."""

from mtpeft.data.jsonl import Record, SkipCounter, read_jsonl, read_records
from mtpeft.data.fields import binary_label, pick_text

__all__ = ["Record", "SkipCounter", "read_jsonl", "read_records", "binary_label", "pick_text"]
