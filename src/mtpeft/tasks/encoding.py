"""Texts -> token tensors: truncation (head, head+tail) or several windows per text.

A function longer than ``max_len`` can be cut into up to ``windows`` pieces, each wrapped in the
tokenizer's own special tokens; the batch then carries ``owner`` (which text each row belongs to)
and ``MultiTaskModel.encode`` combines the rows' pooled states into one vector per text. Every head
still reads one pooled state per text, so a function's windows are one backbone pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import torch

from mtpeft.errors import MtpeftError

TRUNCATIONS = ("head", "head_tail")


@dataclass(frozen=True)
class Encoding:
    """How a task turns its texts into backbone inputs (task options ``truncation``, ``windows``)."""

    max_len: int
    truncation: str = "head"
    windows: int = 1
    pad_multiple: int | None = None

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATIONS:
            raise MtpeftError(f"unknown truncation {self.truncation!r}; valid: {', '.join(TRUNCATIONS)}")
        if not isinstance(self.windows, int) or self.windows < 1:
            raise MtpeftError(f"windows must be a positive integer, got {self.windows!r}")
        if self.max_len < 8:
            raise MtpeftError(f"max_len must be at least 8, got {self.max_len}")


@lru_cache(maxsize=16)
def _special_wrap(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids a tokenizer puts before and after a text's own ids ([CLS] .. [SEP], <s> .., ...)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start]), tuple(full[start + len(plain) :])
    return (), ()


def special_wrap(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        return _special_wrap(tokenizer)
    except TypeError:  # an unhashable tokenizer: no caching
        return _special_wrap.__wrapped__(tokenizer)


def _pieces(ids: list[int], room: int, encoding: Encoding) -> list[list[int]]:
    """The token pieces of one text: head (+tail) truncation, or up to ``windows`` windows."""
    if encoding.windows > 1:
        pieces = [ids[i : i + room] for i in range(0, max(len(ids), 1), room)]
        return pieces[: encoding.windows]
    if len(ids) <= room or encoding.truncation == "head":
        return [ids[:room]]
    head = room // 2
    return [ids[:head] + ids[len(ids) - (room - head) :]]


def _pad(rows: list[list[int]], pad_id: int, multiple: int | None) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def encode_texts(texts: Sequence[str], tokenizer: Any, encoding: Encoding) -> dict[str, torch.Tensor]:
    """Token tensors for ``texts``; with windows, ``owner[i]`` is the text of row i."""
    texts = list(texts)
    if encoding.windows == 1 and encoding.truncation == "head":
        # the common case: the tokenizer's own (fast) truncation and padding
        enc = tokenizer(texts, truncation=True, max_length=encoding.max_len, padding=True,
                        pad_to_multiple_of=encoding.pad_multiple, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    prefix, suffix = special_wrap(tokenizer)
    room = encoding.max_len - len(prefix) - len(suffix)
    rows, owner = [], []
    for index, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        for piece in _pieces(list(ids), room, encoding):
            rows.append([*prefix, *piece, *suffix])
            owner.append(index)
    batch = _pad(rows, tokenizer.pad_token_id or 0, encoding.pad_multiple)
    if encoding.windows > 1:
        batch["owner"] = torch.tensor(owner, dtype=torch.long)
    return batch


def combine_windows(pooled: torch.Tensor, owner: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """One vector per text from the pooled states of its windows (rows of one text are adjacent)."""
    texts = int(owner.max()) + 1 if len(owner) else 0
    index = owner.unsqueeze(-1).expand_as(pooled)
    out = torch.zeros((texts, pooled.shape[-1]), dtype=pooled.dtype, device=pooled.device)
    if how == "max":
        return out.scatter_reduce(0, index, pooled, reduce="amax", include_self=False)
    if how == "mean":
        return out.scatter_reduce(0, index, pooled, reduce="mean", include_self=False)
    raise MtpeftError(f"unknown window pooling {how!r}; valid: mean, max")
