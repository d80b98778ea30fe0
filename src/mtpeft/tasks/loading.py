"""Turn a task's data config into training examples and evaluation sets, within the budgets."""

from __future__ import annotations

import random
from typing import Any

from mtpeft.config import TaskConfig, TrainingConfig
from mtpeft.data.jsonl import SkipCounter
from mtpeft.errors import MtpeftError
from mtpeft.tasks.base import Task, TaskData, subsample


def hold_out(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Split training examples into (train, valid) for a task that ships no validation split."""
    if not 0 < fraction < 1:
        raise MtpeftError(f"valid_fraction must be between 0 and 1, got {fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = max(1, int(len(examples) * fraction))
    valid = sorted(order[:cut])
    train = sorted(order[cut:])
    return [examples[i] for i in train], [examples[i] for i in valid]


def extra_splits(value: Any) -> dict[str, Any]:
    """An extra set is a test set, unless given as ``{valid: ..., test: ...}``."""
    if isinstance(value, dict) and value and set(value) <= {"valid", "test"}:
        return value
    return {"test": value}


def load_task_data(task: Task, spec: TaskConfig, training: TrainingConfig, skips: SkipCounter, with_train: bool = True) -> TaskData:
    """Read the splits of one task; ``with_train=False`` (evaluation only) skips the training file
    unless the validation split has to be held out of it.

    Caps and the hold-out use ``data_seed``, not the training seed: runs with other seeds see the
    same examples. Each task caps its own sets (``Task.cap``): binary tasks keep their class balance,
    search caps the queries and ranks against the whole corpus."""
    seed, cap = training.data_seed, training.max_eval_per_task
    valid_cap = training.max_valid_per_task if training.max_valid_per_task is not None else cap
    data = TaskData()
    needs_train = with_train or spec.valid is None or task.carves_valid
    if needs_train:
        if spec.train is None:
            raise MtpeftError(f"task {task.name}: no 'train' data given")
        train = task.read_train(spec.train, skips)
        train, carved = task.carve_valid(train, seed)
        data.valid += [task.cap(s, valid_cap, seed, "valid") for s in carved]
        if spec.valid is None:
            train, held = hold_out(train, spec.valid_fraction, seed)
            data.valid.append(task.cap(task.evalset_from_examples(task.name, held), valid_cap, seed, "valid"))
        data.train = subsample(train, training.max_train_per_task, seed) if with_train else []
        if with_train and not data.train:
            # an empty stream would make the batch iterator loop forever looking for a batch
            raise MtpeftError(f"task {task.name}: no training examples left after holding out validation "
                              f"from {spec.train}; give more data or a 'valid' split")
    if spec.valid is not None:
        data.valid.append(task.cap(task.read_eval(task.name, spec.valid, skips, None, seed), valid_cap, seed, "valid"))
    if spec.test is not None:
        data.test.append(task.cap(task.read_eval(task.name, spec.test, skips, None, seed), cap, seed, "test"))
    for name, value in spec.extra.items():
        for split, source in extra_splits(value).items():
            limit = valid_cap if split == "valid" else cap
            evalset = task.read_eval(f"{task.name}/{name}", source, skips, None, seed)
            getattr(data, split).append(task.cap(evalset, limit, seed, split))
    return data


def describe(task: Task, data: TaskData) -> dict[str, Any]:
    """Sizes, for logs and the ledger (each task says what the size of one of its sets is)."""
    return {
        "train": len(data.train),
        "valid": {s.name: task.size(s) for s in data.valid},
        "test": {s.name: task.size(s) for s in data.test},
    }
