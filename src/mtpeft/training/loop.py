"""The plain PyTorch multi-task training loop.

Everything it needs comes in through ``Trainer``'s arguments (no module-level state), so it can be
run once per process under torchrun. Each step: the sampler names the task(s), each task gives a
batch and a loss, each weighted term is back-propagated at once (one graph alive at a time), then
clip, AdamW, warm-up schedule. Every ``validate_every`` steps (default: at the end of each epoch)
every validation set is run once; the best mean headline metric is checkpointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from mtpeft.errors import MtpeftError
from mtpeft.evaluation.evaluate import selection_score, validate_sets
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.device import bf16_pays_off
from mtpeft.tasks.base import EvalContext, Task, TaskData, to_device
from mtpeft.training.batching import build_stream
from mtpeft.training.distributed import (SINGLE, Distributed, all_reduce_gradients, all_reduce_sum, broadcast_parameters,
                                         gather_rows, shard, shard_sizes)
from mtpeft.training.resume import (Tensors, load_module, load_optimizer, load_rng, load_trainable, module_state,
                                    optimizer_state, rng_state, trainable_state)
from mtpeft.training.samplers import TaskSampler, build_sampler
from mtpeft.training.stopping import StopSignal
from mtpeft.training.weightings import LossWeighting, build_weighting


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_bf16(config: TrainingConfig, device: torch.device | None = None) -> bool:
    """bf16 autocast where asked for and where it pays off on ``device`` (default: the CPU)."""
    return config.bf16 and bf16_pays_off(device or torch.device("cpu"))


COLLAPSE_SPREAD = 1e-3  # a collapsed model's probabilities vary by ~1e-4 (results/recipe/notes.md)


def collapsed_heads(spreads: dict[str, float]) -> list[str]:
    """The sets whose head answered (almost) one probability for every validation example."""
    return [name for name, spread in spreads.items() if spread < COLLAPSE_SPREAD]


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
    output_spread: dict[str, float] = field(default_factory=dict)  # std of each binary head's validation probabilities


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

    def skip_to(self, drawn: int) -> None:
        """Resume: a fresh stream (same seed) replays its first ``drawn`` batches, which only shuffles
        and cuts lists (nothing is tokenised), and continues from there."""
        while self.drawn < drawn:
            self.next()


@dataclass
class Parts:
    """What one run of ``fit`` trains with (built once; saved and restored by the last checkpoint)."""

    streams: dict[str, Stream]
    sampler: TaskSampler
    optimizer: torch.optim.Optimizer
    schedule: Any


def progress_to_json(state: TrainResult) -> dict[str, Any]:
    return dataclasses.asdict(state)


def progress_from_json(data: dict[str, Any]) -> TrainResult:
    return TrainResult(**(data | {"history": [EpochRecord(**r) for r in data["history"]]}))


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
        save_last: Callable[[Tensors, dict[str, Any]], None] | None = None,
        dist: Distributed = SINGLE,
    ) -> None:
        self.model, self.tasks, self.data, self.config, self.max_len = model, tasks, data, config, max_len
        self.save_best = save_best
        self.eval_ctx = eval_ctx
        self.log_dir = log_dir
        self.phase = phase or (lambda name: contextlib.nullcontext())  # times validation apart from training
        self.tokenizer = model.backbone.tokenizer
        self.device = eval_ctx.device
        self.dist = dist  # torchrun: this process's rank (only rank 0 validates and writes)
        self.bf16 = use_bf16(config, self.device)
        self.weighting = build_weighting(config.weighting, list(tasks), config.weighting_options)
        self.shared = list(model.backbone_parameters())  # what GradNorm measures gradients on (not heads)
        self.writer: SummaryWriter | None = None
        self.save_last = save_last  # writes the resumable "last" checkpoint (None: never)
        self.last_save_time, self.last_save_step = time.monotonic(), -1
        self.parts: Parts | None = None
        self.stop = StopSignal(enabled=False)

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
    def fit(self, resume: tuple[Tensors, dict[str, Any]] | None = None) -> TrainResult:
        """Train from scratch, or from a "last" checkpoint ``(tensors, state)`` of the same config."""
        c = self.config
        seed_everything(c.seed)
        streams = self.build_streams()
        sampler = build_sampler(c.sampler, {n: len(s) for n, s in streams.items()}, c.seed, c.temperature)
        steps_per_epoch = c.steps_per_epoch or sampler.natural_steps()
        total = steps_per_epoch * c.epochs
        optimizer = self.optimizer()
        schedule = get_linear_schedule_with_warmup(optimizer, int(c.warmup * total), total)
        self.parts = Parts(streams, sampler, optimizer, schedule)
        broadcast_parameters([self.model, self.weighting], self.dist)
        state = TrainResult() if resume is None else self.restore(*resume)
        self.last_save_step = state.steps
        purge = state.steps + 1 if resume is not None else None  # drop events logged after the checkpoint
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge) if self.log_dir else None
        # a signal stops training after a step, with last/ written (when there is a last/ to write)
        self.stop = StopSignal(enabled=self.saving() and not self.dist.active)
        try:
            with self.stop:
                while state.epoch <= c.epochs:
                    self.train_epoch(state, steps_per_epoch, total)
            if self.saving() and self.last_save_step != state.steps:
                self.write_last(state)  # the finished state: a crash during test evaluation resumes here
        finally:
            if self.writer:
                self.writer.close()
        return state

    def train_epoch(self, state: TrainResult, steps_per_epoch: int, total: int) -> None:
        c = self.config
        streams, sampler, optimizer, schedule = self.parts.streams, self.parts.sampler, self.parts.optimizer, self.parts.schedule
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
                if self.dist.main:  # validation runs once, on rank 0, while the others wait
                    self.validate(state, epoch)
                self.dist.barrier()
                self.model.train()
            if epoch_done:
                state.epoch, state.step_in_epoch = epoch + 1, 0
            if self.save_due(state):
                self.write_last(state)
            if self.stop.received is not None:
                self.stop_now(state)

    def stop_now(self, state: TrainResult) -> None:
        """Write last/ (unless this step just did) and leave as an interrupted run does."""
        if self.last_save_step != state.steps:
            self.write_last(state)
        tqdm.write(f"stopped by {self.stop.name} after step {state.steps}: last/ is written; "
                   "`mtpeft train --resume RUN_DIR` continues from there")
        raise KeyboardInterrupt

    def train_step(self, state: TrainResult, step_tasks: list[str], streams: dict[str, Stream]) -> dict[str, float]:
        """Forward and backward of every task of one step (gradients accumulate), gradient sync
        across ranks (torchrun), then clipping. Returns each task's loss on the global batch."""
        losses, tokens = {}, 0
        for name in step_tasks:
            examples = streams[name].next()
            state.examples_seen[name] = state.examples_seen.get(name, 0) + len(examples)
            local, share = shard(examples, self.dist)  # one process: the whole batch, share 1
            batch = self.tasks[name].collate(local, self.tokenizer, self.max_len)
            tokens += count_tokens(batch) if share > 0 else 0
            batch = to_device(batch, self.device)
            if self.dist.active:
                sizes = shard_sizes(len(examples), self.dist.world)
                batch["gather"] = lambda rows, sizes=sizes: gather_rows(rows, sizes, self.dist)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.tasks[name].loss(self.model, batch).float()
            # the weighted sum's gradient is the sum of the terms' gradients: back-propagate
            # each task now so only one task's activations are alive at a time. The loss
            # weighting stays on the CPU (a few scalars); the loss comes to it. Under torchrun
            # each rank's term counts by its share of the global batch (the sum over ranks is
            # then the global batch's term).
            (self.weighting.term(name, loss.cpu()) * share).backward()
            self.weighting.observe_gradients(name, self.shared)
            losses[name] = loss.item() * share
        penalty = self.weighting.regularizer()
        if penalty is not None:
            (penalty / self.dist.world).backward()  # once per step, not once per rank
        all_reduce_gradients([*self.model.parameters(), *self.weighting.parameters()], self.dist)
        # the loss weights' own parameters are clipped with the rest (a learned weighting is trained too)
        torch.nn.utils.clip_grad_norm_([*self.model.parameters(), *self.weighting.parameters()], self.config.max_grad_norm)
        return self.global_losses(state, losses, tokens)

    def global_losses(self, state: TrainResult, losses: dict[str, float], tokens: int) -> dict[str, float]:
        """The step's losses and token count summed over the ranks (one process: as they are), so
        logs, loss weightings and history see the global batch on every rank."""
        if self.dist.active:
            names = list(losses)
            totals = all_reduce_sum(torch.tensor([*(losses[n] for n in names), tokens], dtype=torch.float64,
                                                 device=self.device), self.dist).tolist()
            losses, tokens = dict(zip(names, totals[:-1])), int(round(totals[-1]))
        state.tokens += tokens
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
            spreads: dict[str, float] = {}
            metrics = validate_sets(self.model, self.tasks, {n: d.valid for n, d in self.data.items()}, self.eval_ctx, spreads)
            score = selection_score(self.tasks, metrics)
            best = score > state.best_score
            if best:
                state.best_score, state.best_epoch, state.best_step, state.best_valid = score, epoch, state.steps, metrics
                self.save_best(self.weighting, {"epoch": epoch, "step": state.steps, "valid_score": score})
        record = EpochRecord(epoch, state.steps, self.interval_means(state), self.weighting.weights(), metrics, score,
                             best, dict(state.examples_seen), state.step_weights, spreads)
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
            for set_name, spread in record.output_spread.items():
                self.writer.add_scalar(f"valid/{set_name}/output_spread", spread, record.step)
            self.writer.add_scalar("valid/selection_score", record.score, record.step)
        summary = "  ".join(f"{s}: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()) for s, vals in record.valid.items())
        tqdm.write(f"epoch {record.epoch} step {record.step}: valid score {record.score:.4f}"
                   f"{' (best)' if record.best else ''} | {summary}")
        for set_name in collapsed_heads(record.output_spread):
            tqdm.write(f"warning: the {set_name} head gives every validation example the same probability "
                       f"(std {record.output_spread[set_name]:.1e}): the shared representation has collapsed; "
                       "lower training.lr")

    # ---- the resumable "last" checkpoint --------------------------------------------------------
    def saving(self) -> bool:
        return self.save_last is not None and bool(self.config.save_every_steps or self.config.save_every_minutes)

    def save_due(self, state: TrainResult) -> bool:
        c = self.config
        if not self.saving():
            return False
        if c.save_every_steps and state.steps % c.save_every_steps == 0:
            return True
        return bool(c.save_every_minutes) and time.monotonic() - self.last_save_time >= 60.0 * c.save_every_minutes

    def write_last(self, state: TrainResult) -> None:
        with self.phase("save_last"):
            tensors, data = self.snapshot(state)
            self.save_last(tensors, data)
        self.last_save_time, self.last_save_step = time.monotonic(), state.steps

    def snapshot(self, state: TrainResult) -> tuple[Tensors, dict[str, Any]]:
        """Everything the loop needs to continue exactly: weights, loss weighting, optimizer,
        scheduler, the streams' and the sampler's positions, random states, progress and history."""
        parts = self.parts
        optimizer_tensors, optimizer_data = optimizer_state(parts.optimizer)
        rng_tensors, rng_data = rng_state()
        tensors = trainable_state(self.model) | module_state(self.weighting, "weighting.") | optimizer_tensors | rng_tensors
        data = {
            "format": 1,
            "progress": progress_to_json(state),
            "streams": {name: stream.drawn for name, stream in parts.streams.items()},
            "sampler": parts.sampler.state(),
            "optimizer": optimizer_data,
            "scheduler": parts.schedule.state_dict(),
            "rng": rng_data,
            "tasks": {name: task.state() for name, task in self.tasks.items()},
        }
        return tensors, data

    def restore(self, tensors: Tensors, data: dict[str, Any]) -> TrainResult:
        parts = self.parts
        if data.get("format") != 1 or set(data["streams"]) != set(parts.streams):
            raise MtpeftError("the last checkpoint was written for other tasks or by another version; cannot resume")
        load_trainable(self.model, tensors)
        load_module(self.weighting, tensors, "weighting.")
        load_optimizer(parts.optimizer, tensors, data["optimizer"])
        parts.schedule.load_state_dict(data["scheduler"])
        parts.sampler.load_state(data["sampler"])
        for name, drawn in data["streams"].items():
            parts.streams[name].skip_to(drawn)
        for name, task in self.tasks.items():
            task.load_state(data["tasks"].get(name, {}))
        load_rng(tensors, data["rng"])  # last: nothing after this may draw random numbers
        return progress_from_json(data["progress"])
