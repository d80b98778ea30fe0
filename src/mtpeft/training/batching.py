"""Training batch streams that cycle forever (smaller tasks resample).

``BucketedBatches`` (default): length-bucketed, dynamically padded batches. ``BalancedBatches``: a
fixed share of each batch is drawn from the rare positive class (task option ``positive_fraction``),
so a task with 3.7% positives (FlakeFlagger) shows its positives many times per epoch instead of
about one per two batches.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Sequence

from mtpeft.errors import MtpeftError


class BucketedBatches:
    """Shuffle, sort windows of ``window`` batches by length, cut batches, shuffle the batches.

    Similar lengths share a batch so padding (and so CPU time) stays small, while the order of
    batches stays random. Each pass over the data reshuffles; iteration never ends.
    """

    def __init__(self, examples: Sequence[Any], batch_size: int, length: Callable[[Any], int], seed: int, window: int = 50) -> None:
        if not examples or batch_size < 1:
            # iterating would never yield a batch (and never end)
            raise MtpeftError(f"cannot cut batches of {batch_size} from {len(examples)} training examples")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.length = length
        self.window = max(1, window)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def one_pass(self) -> list[list[Any]]:
        order = list(range(len(self.examples)))
        self.rng.shuffle(order)
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: self.length(self.examples[i]))
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        self.rng.shuffle(batches)
        return [[self.examples[i] for i in batch] for batch in batches]

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            yield from self.one_pass()


class BalancedBatches:
    """Batches with ``round(batch_size * fraction)`` positives; each class cycles through its own
    reshuffled pool, and each batch is sorted by length (less padding inside the batch)."""

    def __init__(self, examples: Sequence[Any], batch_size: int, length: Callable[[Any], int], seed: int,
                 fraction: float, label: Callable[[Any], int]) -> None:
        if not 0 < fraction < 1:
            raise MtpeftError(f"positive_fraction must be between 0 and 1, got {fraction}")
        self.examples = list(examples)
        self.positives = [e for e in self.examples if label(e) == 1]
        self.negatives = [e for e in self.examples if label(e) != 1]
        if not self.positives or not self.negatives:
            raise MtpeftError("positive_fraction needs both classes in the training set")
        self.batch_size = batch_size
        self.length = length
        self.per_batch = min(batch_size - 1, max(1, round(batch_size * fraction)))
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def _cycle(self, pool: list[Any]) -> Iterator[Any]:
        while True:
            order = list(pool)
            self.rng.shuffle(order)
            yield from order

    def __iter__(self) -> Iterator[list[Any]]:
        positives, negatives = self._cycle(self.positives), self._cycle(self.negatives)
        while True:
            batch = [next(positives) for _ in range(self.per_batch)]
            batch += [next(negatives) for _ in range(self.batch_size - self.per_batch)]
            yield sorted(batch, key=self.length)


def build_stream(examples: Sequence[Any], batch_size: int, length: Callable[[Any], int], seed: int, window: int,
                 positive_fraction: float | None = None, label: Callable[[Any], int] | None = None) -> Any:
    """The batch stream of one task: balanced when the task asks for a positive share."""
    if positive_fraction:
        return BalancedBatches(examples, batch_size, length, seed, float(positive_fraction), label or (lambda e: e.label))
    return BucketedBatches(examples, batch_size, length, seed, window)
