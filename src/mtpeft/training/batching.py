"""Length-bucketed, dynamically padded training batches that cycle forever (smaller tasks resample)."""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Sequence


class BucketedBatches:
    """Shuffle, sort windows of ``window`` batches by length, cut batches, shuffle the batches.

    Similar lengths share a batch so padding (and so CPU time) stays small, while the order of
    batches stays random. Each pass over the data reshuffles; iteration never ends.
    """

    def __init__(self, examples: Sequence[Any], batch_size: int, length: Callable[[Any], int], seed: int, window: int = 50) -> None:
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
