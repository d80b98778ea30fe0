"""The plain PyTorch multi-task training loop.

Everything it needs comes in through ``Trainer``'s arguments (no module-level state), so it can be
run once per process under torchrun. Each step: the sampler names the task(s), each task gives a
batch and a loss, each weighted term is back-propagated at once (one graph alive at a time), then
clip, AdamW, warm-up schedule. Every ``validate_every`` steps (default: at the end of each epoch)
every validation set is run once; the best mean headline metric is checkpointed.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtpeft.config import TrainingConfig
from mtpeft.evaluation.evaluate import selection_score, validate_sets
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.model.precision import bf16_supported
from mtpeft.tasks.base import EvalContext, Task, TaskData
from mtpeft.training.batching import build_stream
from mtpeft.training.samplers import TaskSampler, build_sampler
from mtpeft.training.weightings import LossWeighting, build_weighting


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_bf16(config: TrainingConfig) -> bool:
    return config.bf16 and bf16_supported()


def count_tokens(batch: Any) -> int:
    """Non-padding tokens in every encoded input of a batch."""
    if isinstance(batch, dict):
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        return sum(count_tokens(v) for v in batch.values())
    return 0


@dataclass
class EpochRecord:
    """One validation (once per epoch by default; every ``validate_every`` steps otherwise)."""

    epoch: int
    step: int
    train_loss: dict[str, float]  # mean training loss per task since the previous validation
    loss_weights: dict[str, float]
    valid: dict[str, dict[str, float]]
    score: float
    best: bool
    examples_seen: dict[str, int] = field(default_factory=dict)  # training examples per task so far
    weights: list[dict[str, float]] = field(default_factory=list)  # loss weights after each step since the previous validation


@dataclass
class TrainResult:
    """Where training stands. Everything here is plain data, so it can be saved as JSON."""

    history: list[EpochRecord] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = -1
    best_step: int = -1
    best_valid: dict[str, dict[str, float]] = field(default_factory=dict)  # the best validation's metrics
    steps: int = 0
    tokens: int = 0
    examples_seen: dict[str, int] = field(default_factory=dict)
    epoch: int = 1  # the epoch being trained (1-based)
    step_in_epoch: int = 0  # steps done in that epoch
    interval_loss: dict[str, list[float]] = field(default_factory=dict)  # task -> [sum, n] since the last validation
    epoch_loss: dict[str, list[float]] = field(default_factory=dict)  # task -> [sum, n] in the current epoch
    step_weights: list[dict[str, float]] = field(default_factory=list)  # loss weights per step since the last validation


class Stream:
    """One task's endless batch stream, with a count of the batches drawn (its resumable position)."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches
        self.iterator: Iterator[list[Any]] = iter(batches)
        self.drawn = 0

    def __len__(self) -> int:
        return len(self.batches)

    def next(self) -> list[Any]:
        self.drawn += 1
        return next(self.iterator)


class Trainer:
    def __init__(
        self,
        model: MultiTaskModel,
        tasks: dict[str, Task],
        data: dict[str, TaskData],
        config: TrainingConfig,
        max_len: int,
        save_best: Callable[[LossWeighting, dict[str, Any]], None],
        eval_ctx: EvalContext,
        log_dir: Path | None = None,
        phase: Callable[[str], ContextManager[Any]] | None = None,
    ) -> None:
        self.model, self.tasks, self.data, self.config, self.max_len = model, tasks, data, config, max_len
        self.save_best = save_best
        self.eval_ctx = eval_ctx
        self.log_dir = log_dir
        self.phase = phase or (lambda name: contextlib.nullcontext())  # times validation apart from training
        self.tokenizer = model.backbone.tokenizer
        self.bf16 = use_bf16(config)
        self.weighting = build_weighting(config.weighting, list(tasks), config.weighting_options)
        self.shared = list(model.backbone_parameters())  # what GradNorm measures gradients on (not heads)
        self.writer: SummaryWriter | None = None

    # ---- set-up -------------------------------------------------------------------------------
    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        groups = [
            {"params": list(self.model.backbone_parameters()), "lr": c.lr, "weight_decay": c.weight_decay},
            {"params": list(self.model.heads.parameters()), "lr": c.head_lr or c.lr, "weight_decay": c.weight_decay},
            *self.weighting.param_groups(c.lr),
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]])

    def build_streams(self) -> dict[str, Stream]:
        c = self.config
        streams = {}
        for i, (name, task) in enumerate(self.tasks.items()):
            task.prepare(self.data[name].train)  # e.g. pos_weight from the whole training set
            streams[name] = Stream(build_stream(self.data[name].train, c.batch_size, task.text_length, c.seed + i,
                                                c.bucket_window, task.options.get("positive_fraction")))
        return streams

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        c = self.config
        seed_everything(c.seed)
        streams = self.build_streams()
        sampler = build_sampler(c.sampler, {n: len(s) for n, s in streams.items()}, c.seed, c.temperature)
        steps_per_epoch = c.steps_per_epoch or sampler.natural_steps()
        total = steps_per_epoch * c.epochs
        optimizer = self.optimizer()
        schedule = get_linear_schedule_with_warmup(optimizer, int(c.warmup * total), total)
        state = TrainResult()
        self.writer = SummaryWriter(str(self.log_dir)) if self.log_dir else None
        try:
            while state.epoch <= c.epochs:
                self.train_epoch(state, sampler, streams, optimizer, schedule, steps_per_epoch, total)
        finally:
            if self.writer:
                self.writer.close()
        return state

    def train_epoch(self, state: TrainResult, sampler: TaskSampler, streams: dict[str, Stream],
                    optimizer: torch.optim.Optimizer, schedule: Any, steps_per_epoch: int, total: int) -> None:
        c = self.config
        epoch = state.epoch
        self.model.train()
        remaining = steps_per_epoch - state.step_in_epoch
        bar = tqdm(sampler.epoch(remaining), total=remaining, desc=f"epoch {epoch}/{c.epochs}", disable=not c.progress)
        for step_tasks in bar:
            losses = self.train_step(state, step_tasks, streams)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            self.weighting.after_step(losses)
            state.steps += 1
            state.step_in_epoch += 1
            self.log_losses(state, losses)
            bar.set_postfix({n: f"{v:.3f}" for n, v in losses.items()})
            epoch_done = state.step_in_epoch == steps_per_epoch
            if epoch_done:
                self.weighting.end_epoch({n: total_ / count for n, (total_, count) in state.epoch_loss.items() if count})
                state.epoch_loss = {}
            if self.validation_due(state, epoch_done, total):
                self.validate(state, epoch)
                self.model.train()
            if epoch_done:
                state.epoch, state.step_in_epoch = epoch + 1, 0

    def train_step(self, state: TrainResult, step_tasks: list[str], streams: dict[str, Stream]) -> dict[str, float]:
        """Forward and backward of every task of one step (gradients accumulate), then clipping."""
        losses = {}
        for name in step_tasks:
            examples = streams[name].next()
            state.examples_seen[name] = state.examples_seen.get(name, 0) + len(examples)
            batch = self.tasks[name].collate(examples, self.tokenizer, self.max_len)
            state.tokens += count_tokens(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.tasks[name].loss(self.model, batch).float()
            # the weighted sum's gradient is the sum of the terms' gradients: back-propagate
            # each task now so only one task's activations are alive at a time
            self.weighting.term(name, loss).backward()
            self.weighting.observe_gradients(name, self.shared)
            losses[name] = loss.item()
        penalty = self.weighting.regularizer()
        if penalty is not None:
            penalty.backward()
        # the loss weights' own parameters are clipped with the rest (a learned weighting is trained too)
        torch.nn.utils.clip_grad_norm_([*self.model.parameters(), *self.weighting.parameters()], self.config.max_grad_norm)
        return losses

    def log_losses(self, state: TrainResult, losses: dict[str, float]) -> None:
        """Running loss means (per validation interval and per epoch) and the step's loss weights:
        TensorBoard ``train_loss/TASK``, ``loss_weight/TASK`` and history.json."""
        for name, value in losses.items():
            for running in (state.interval_loss.setdefault(name, [0.0, 0]), state.epoch_loss.setdefault(name, [0.0, 0])):
                running[0] += value
                running[1] += 1
            if self.writer:
                self.writer.add_scalar(f"train_loss/{name}", value, state.steps)
        weights = self.weighting.weights()
        if self.writer:
            for name, w in weights.items():
                self.writer.add_scalar(f"loss_weight/{name}", w, state.steps)
        state.step_weights.append({"step": state.steps} | {n: round(w, 6) for n, w in weights.items()})

    def validation_due(self, state: TrainResult, epoch_done: bool, total: int) -> bool:
        every = self.config.validate_every
        if not every:
            return epoch_done
        return state.steps % every == 0 or state.steps == total  # the final model is always validated

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, state: TrainResult, epoch: int) -> EpochRecord:
        """One forward pass per validation set; the best mean headline metric is checkpointed."""
        with self.phase("validate"):
            metrics = validate_sets(self.model, self.tasks, {n: d.valid for n, d in self.data.items()}, self.eval_ctx)
            score = selection_score(self.tasks, metrics)
            best = score > state.best_score
            if best:
                state.best_score, state.best_epoch, state.best_step, state.best_valid = score, epoch, state.steps, metrics
                self.save_best(self.weighting, {"epoch": epoch, "step": state.steps, "valid_score": score})
        record = EpochRecord(epoch, state.steps, self.interval_means(state), self.weighting.weights(), metrics, score,
                             best, dict(state.examples_seen), state.step_weights)
        state.history.append(record)
        state.interval_loss, state.step_weights = {}, []
        self.log_validation(record)
        return record

    def interval_means(self, state: TrainResult) -> dict[str, float]:
        running = state.interval_loss
        return {n: running[n][0] / max(running[n][1], 1) if n in running else 0.0 for n in self.tasks}

    def log_validation(self, record: EpochRecord) -> None:
        if self.writer:
            for set_name, values in record.valid.items():
                for metric, value in values.items():
                    self.writer.add_scalar(f"valid/{set_name}/{metric}", value, record.step)
            self.writer.add_scalar("valid/selection_score", record.score, record.step)
        summary = "  ".join(f"{s}: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()) for s, vals in record.valid.items())
        tqdm.write(f"epoch {record.epoch} step {record.step}: valid score {record.score:.4f}"
                   f"{' (best)' if record.best else ''} | {summary}")
