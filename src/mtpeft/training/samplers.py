"""Task samplers: which task(s) each optimisation step draws a batch from.

``round_robin`` (the study): every step takes one batch of every task; an epoch lasts as many steps
as the largest task has batches, so smaller tasks are resampled. ``proportional``: each step one
task, with probability proportional to its number of batches. ``temperature``: probability
proportional to size ** (1 / T) (T = 1 is proportional, large T approaches uniform).
"""

from __future__ import annotations

import random
from typing import Any, Iterator

from mtpeft.registry import Registry

SAMPLERS: Registry = Registry("sampler")


class TaskSampler:
    """Yields, for each step of one epoch, the list of tasks to draw a batch from."""

    def __init__(self, batches_per_task: dict[str, int], seed: int, temperature: float = 1.0) -> None:
        self.batches = dict(batches_per_task)
        self.rng = random.Random(seed)
        self.temperature = temperature

    def natural_steps(self) -> int:
        raise NotImplementedError

    def epoch(self, steps: int | None = None) -> Iterator[list[str]]:
        raise NotImplementedError

    # the sampler's position is its random generator: an epoch's generator draws one choice per
    # step it yields, so restoring the state after k steps and asking for the remaining steps
    # continues the same sequence
    def state(self) -> dict[str, Any]:
        return {"rng": python_rng_to_json(self.rng.getstate())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.setstate(python_rng_from_json(state["rng"]))


def python_rng_to_json(state: tuple) -> list[Any]:
    """``random.Random.getstate()`` as JSON (version, 625 ints, gauss_next)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(data: list[Any]) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


@SAMPLERS.register("round_robin")
class RoundRobin(TaskSampler):
    def natural_steps(self) -> int:
        return max(self.batches.values())

    def epoch(self, steps: int | None = None) -> Iterator[list[str]]:
        for _ in range(steps or self.natural_steps()):
            yield list(self.batches)


class WeightedSampler(TaskSampler):
    def probabilities(self) -> dict[str, float]:
        power = self.power()
        weights = {task: n ** power for task, n in self.batches.items()}
        total = sum(weights.values())
        return {task: w / total for task, w in weights.items()}

    def power(self) -> float:
        return 1.0

    def natural_steps(self) -> int:
        return sum(self.batches.values())

    def epoch(self, steps: int | None = None) -> Iterator[list[str]]:
        probabilities = self.probabilities()
        tasks, weights = list(probabilities), list(probabilities.values())
        for _ in range(steps or self.natural_steps()):
            yield [self.rng.choices(tasks, weights)[0]]


@SAMPLERS.register("proportional")
class Proportional(WeightedSampler):
    pass


@SAMPLERS.register("temperature")
class Temperature(WeightedSampler):
    def power(self) -> float:
        return 1.0 / self.temperature


def build_sampler(name: str, batches_per_task: dict[str, int], seed: int, temperature: float) -> TaskSampler:
    return SAMPLERS.get(name)(batches_per_task, seed, temperature)
