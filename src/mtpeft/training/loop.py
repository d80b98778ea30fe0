"""The plain PyTorch multi-task training loop.

Everything it needs comes in through ``Trainer``'s arguments (no module-level state), so it can be
run once per process under torchrun later. Each step: the sampler names the task(s), each task
gives a batch and a loss, each weighted term is back-propagated at once (one graph alive at a time),
then clip, AdamW, warm-up schedule.
After each epoch every task is validated; the best mean headline metric is checkpointed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtpeft.config import TrainingConfig
from mtpeft.evaluation.evaluate import calibrate, evaluate_sets, selection_score
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.model.precision import bf16_supported
from mtpeft.tasks.base import EvalContext, Task, TaskData
from mtpeft.training.batching import build_stream
from mtpeft.training.samplers import build_sampler
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
    epoch: int
    step: int
    train_loss: dict[str, float]
    loss_weights: dict[str, float]
    valid: dict[str, dict[str, float]]
    score: float
    best: bool
    examples_seen: dict[str, int] = field(default_factory=dict)  # training examples per task so far
    weights: list[dict[str, float]] = field(default_factory=list)  # loss weights after each step of the epoch


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = -1
    steps: int = 0
    tokens: int = 0
    examples_seen: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self.model, self.tasks, self.data, self.config, self.max_len = model, tasks, data, config, max_len
        self.save_best = save_best
        self.eval_ctx = eval_ctx
        self.log_dir = log_dir
        self.tokenizer = model.backbone.tokenizer
        self.bf16 = use_bf16(config)
        self.weighting = build_weighting(config.weighting, list(tasks), config.weighting_options)
        self.shared = list(model.backbone_parameters())  # what GradNorm measures gradients on (not heads)

    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        groups = [
            {"params": list(self.model.backbone_parameters()), "lr": c.lr, "weight_decay": c.weight_decay},
            {"params": list(self.model.heads.parameters()), "lr": c.head_lr or c.lr, "weight_decay": c.weight_decay},
            *self.weighting.param_groups(c.lr),
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]])

    def fit(self) -> TrainResult:
        c = self.config
        seed_everything(c.seed)
        streams = {}
        for i, (name, task) in enumerate(self.tasks.items()):
            task.prepare(self.data[name].train)
            streams[name] = build_stream(self.data[name].train, c.batch_size, task.text_length, c.seed + i,
                                         c.bucket_window, task.options.get("positive_fraction"))
        sampler = build_sampler(c.sampler, {n: len(s) for n, s in streams.items()}, c.seed, c.temperature)
        iterators = {name: iter(stream) for name, stream in streams.items()}
        steps_per_epoch = c.steps_per_epoch or sampler.natural_steps()
        total = steps_per_epoch * c.epochs
        optimizer = self.optimizer()
        schedule = get_linear_schedule_with_warmup(optimizer, int(c.warmup * total), total)
        writer = SummaryWriter(str(self.log_dir)) if self.log_dir else None
        result = TrainResult()
        ctx = self.eval_ctx
        try:
            for epoch in range(1, c.epochs + 1):
                losses_sum = {name: 0.0 for name in self.tasks}
                losses_n = {name: 0 for name in self.tasks}
                self.model.train()
                step_weights: list[dict[str, float]] = []
                bar = tqdm(sampler.epoch(steps_per_epoch), total=steps_per_epoch, desc=f"epoch {epoch}/{c.epochs}", disable=not c.progress)
                for step_tasks in bar:
                    losses = {}
                    for name in step_tasks:
                        examples = next(iterators[name])
                        result.examples_seen[name] = result.examples_seen.get(name, 0) + len(examples)
                        batch = self.tasks[name].collate(examples, self.tokenizer, self.max_len)
                        result.tokens += count_tokens(batch)
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                            loss = self.tasks[name].loss(self.model, batch).float()
                        # the weighted sum's gradient is the sum of the terms' gradients: back-propagate
                        # each task now so only one task's activations are alive at a time
                        self.weighting.term(name, loss).backward()
                        self.weighting.observe_gradients(name, self.shared)
                        losses[name] = loss.detach()
                    penalty = self.weighting.regularizer()
                    if penalty is not None:
                        penalty.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    self.weighting.after_step(losses)
                    result.steps += 1
                    step_weights.append(self.log_weights(writer, result.steps))
                    for name, value in losses.items():
                        losses_sum[name] += value.item()
                        losses_n[name] += 1
                        if writer:
                            writer.add_scalar(f"train_loss/{name}", value.item(), result.steps)
                    bar.set_postfix({n: f"{v.item():.3f}" for n, v in losses.items()})
                self.weighting.end_epoch({n: losses_sum[n] / losses_n[n] for n in losses_sum if losses_n[n]})
                record = self.validate(epoch, result, losses_sum, losses_n, ctx, writer)
                record.weights = step_weights
                result.history.append(record)
        finally:
            if writer:
                writer.close()
        return result

    def log_weights(self, writer: SummaryWriter | None, step: int) -> dict[str, float]:
        """The loss weights after a step: TensorBoard ``loss_weight/TASK`` and history.json."""
        weights = self.weighting.weights()
        if writer:
            for name, w in weights.items():
                writer.add_scalar(f"loss_weight/{name}", w, step)
        return {"step": step} | {n: round(w, 6) for n, w in weights.items()}

    def validate(self, epoch: int, result: TrainResult, losses_sum: dict, losses_n: dict, ctx: EvalContext, writer: SummaryWriter | None) -> EpochRecord:
        valid_sets = {name: data.valid for name, data in self.data.items()}
        calibrate(self.model, self.tasks, valid_sets, ctx)
        metrics = evaluate_sets(self.model, self.tasks, valid_sets, ctx)
        score = selection_score(self.tasks, metrics)
        best = score > result.best_score
        weights = self.weighting.weights()
        if best:
            result.best_score, result.best_epoch = score, epoch
            self.save_best(self.weighting, {"epoch": epoch, "step": result.steps, "valid_score": score})
        if writer:
            for set_name, values in metrics.items():
                for metric, value in values.items():
                    writer.add_scalar(f"valid/{set_name}/{metric}", value, epoch)
            writer.add_scalar("valid/selection_score", score, epoch)
        train_loss = {n: losses_sum[n] / max(losses_n[n], 1) for n in losses_sum}
        summary = "  ".join(f"{s}: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()) for s, vals in metrics.items())
        tqdm.write(f"epoch {epoch}: valid score {score:.4f}{' (best)' if best else ''} | {summary}")
        return EpochRecord(epoch, result.steps, train_loss, weights, metrics, score, best, dict(result.examples_seen))
