"""Shared machinery of the binary tasks (defect, clone, flaky): MLP head, BCE loss, thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from mtpeft.data import SkipCounter, binary_label, pick_text, read_records
from mtpeft.data.fields import record_id
from mtpeft.data.jsonl import Record
from mtpeft.errors import DataError, MtpeftError
from mtpeft.evaluation.metrics import accuracy, best_threshold, binary_f1
from mtpeft.tasks.base import Batch, EvalContext, EvalSet, Task, fp32, in_length_order, stratified_subsample
from mtpeft.tasks.encoding import encode_texts


@dataclass(frozen=True)
class Example:
    """A single code snippet (``text_b`` is None) or a pair encoded jointly, with a 0/1 label."""

    id: str
    text: str
    label: int | None
    text_b: str | None = None


class MLPHead(nn.Module):
    """The study's classification head: in -> width (default in/2) -> ReLU -> dropout -> 1 logit."""

    def __init__(self, in_size: int, dropout: float = 0.1, width: int | None = None) -> None:
        super().__init__()
        width = width or in_size // 2
        self.net = nn.Sequential(nn.Linear(in_size, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1))

    @fp32
    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(-1)


PREDICT_CODE_FIELDS = ("code", "func", "function", "full_code")


def is_number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def class_weights(evalset: EvalSet, labels: np.ndarray) -> np.ndarray | None:
    """Per-example weights that restore the class shares a validation cap changed (None: as read),
    so metrics and thresholds on a capped set estimate those of the whole set."""
    if not evalset.class_weights:
        return None
    return np.array([evalset.class_weights.get(int(y), 1.0) for y in labels], dtype=np.float64)


class BinaryTask(Task):
    """A task whose examples carry a 0/1 label and whose head outputs one logit.

    Options: ``threshold`` (a number, or "tune" = the threshold that maximises the task's headline
    metric on validation),
    ``pos_weight`` (a number, or "auto" = negatives/positives of the training set, for imbalance),
    ``dropout``.
    """

    default_threshold: Any = 0.5
    default_pos_weight: Any = None
    option_names = ("threshold", "pos_weight", "dropout")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.threshold_option = self.options.get("threshold", self.default_threshold)
        if self.threshold_option != "tune" and not is_number(self.threshold_option, 0.0, 1.0):
            raise MtpeftError(f"task {self.name!r}: option threshold must be a probability in [0, 1] or 'tune', "
                              f"got {self.threshold_option!r}")
        self.threshold = 0.5 if self.threshold_option == "tune" else float(self.threshold_option)
        self.pos_weight_option = self.options.get("pos_weight", self.default_pos_weight)
        self.pos_weight: float | None = None
        if self.pos_weight_option not in (None, "auto"):
            if not is_number(self.pos_weight_option, 0.0, float("inf")) or float(self.pos_weight_option) == 0:
                raise MtpeftError(f"task {self.name!r}: option pos_weight must be a positive number, 'auto' or null, "
                                  f"got {self.pos_weight_option!r}")
            self.pos_weight = float(self.pos_weight_option)
        if not is_number(self.options.get("dropout", 0.1), 0.0, 0.99):
            raise MtpeftError(f"task {self.name!r}: option dropout must be in [0, 1), got {self.options['dropout']!r}")

    text_fields: tuple[str, ...] = ("code",)
    label_fields: tuple[str, ...] = ("label",)

    # ---- data -------------------------------------------------------------------------------
    def label_of(self, record: Record, require_label: bool) -> int | None:
        """The 0/1 label; for prediction inputs it may be absent."""
        if require_label or any(name in record.data for name in self.label_fields):
            return binary_label(record, self.label_fields)
        return None

    def parse(self, record: Record, require_label: bool = True) -> Example:
        # prediction inputs (no label required) may carry the code under any usual name, so one file
        # serves several heads (--task defect,flaky); training data must use the configured field
        fields = self.text_fields if require_label else tuple(dict.fromkeys((*self.text_fields, *PREDICT_CODE_FIELDS)))
        return Example(record_id(record), pick_text(record, fields), self.label_of(record, require_label))

    def record_parser(self, skips: SkipCounter, require_label: bool, options: dict[str, Any]) -> Callable[[Record], Example]:
        """How one record of a file becomes an example (clone: with its functions table)."""
        return lambda record: self.parse(record, require_label)

    def read_examples(self, source: Any, skips: SkipCounter, require_label: bool = True,
                      options: dict[str, Any] | None = None) -> list[Example]:
        """``options`` replace the task's own (prediction inputs come with their own files)."""
        if not isinstance(source, (str, Path)):
            raise MtpeftError(f"task {self.name}: a split must be a file path, got {source!r}")
        parse = self.record_parser(skips, require_label, self.options if options is None else options)
        examples = list(read_records(source, skips, parse))
        if not examples:
            raise DataError(source, None, f"no usable {self.name} examples")
        return examples

    def read_train(self, source: Any, skips: SkipCounter) -> list[Example]:
        return self.read_examples(source, skips)

    def read_eval(self, name: str, source: Any, skips: SkipCounter, limit: int | None, seed: int) -> EvalSet:
        return self.cap(EvalSet(name, self.read_examples(source, skips)), limit, seed, "test")

    def cap(self, evalset: EvalSet, limit: int | None, seed: int, split: str) -> EvalSet:
        """Label-stratified caps. A validation cap gives the rarer class up to half of the cap, or all
        of it (FlakeFlagger's 3.7% would leave a threshold tuned on ~10 positives; BigCloneBench's
        23% negatives on ~35), and records per class the weight that restores its real share for
        threshold tuning; a test cap keeps the set's class shares exactly."""
        examples = evalset.data
        if limit is None or limit >= len(examples):
            return evalset
        positives = sum(e.label == 1 for e in examples)
        rarer = 1 if positives <= len(examples) - positives else 0
        kept = stratified_subsample(examples, limit, seed, lambda e: e.label, favour=rarer if split == "valid" else None)
        weights = None
        if split == "valid":
            weights = {c: sum(e.label == c for e in examples) / max(1, sum(e.label == c for e in kept)) for c in (0, 1)}
        return EvalSet(evalset.name, kept, weights)

    def read_predict(self, path: Path, skips: SkipCounter, options: dict[str, Any]) -> list[Example]:
        return self.read_examples(path, skips, require_label=False, options=options)

    def text_length(self, example: Example) -> int:
        return len(example.text) + len(example.text_b or "")

    def prepare(self, train: Sequence[Example]) -> None:
        if self.pos_weight_option == "auto":
            positives = sum(e.label for e in train)
            negatives = len(train) - positives
            self.pos_weight = negatives / max(positives, 1)

    # ---- model ------------------------------------------------------------------------------
    def make_head(self, hidden_size: int) -> nn.Module:
        return MLPHead(hidden_size, float(self.options.get("dropout", 0.1)))

    def collate(self, examples: Sequence[Example], tokenizer: Any, max_len: int) -> Batch:
        batch: Batch = {"inputs": encode_texts([e.text for e in examples], tokenizer, self.encoding(max_len))}
        return self.with_labels(batch, examples)

    @staticmethod
    def with_labels(batch: Batch, examples: Sequence[Example]) -> Batch:
        if all(e.label is not None for e in examples):
            batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.float32)
        return batch

    def logits(self, model: Any, batch: Batch) -> torch.Tensor:
        return model.heads[self.name](model.encode(batch["inputs"])).float()

    def loss(self, model: Any, batch: Batch) -> torch.Tensor:
        logits = self.logits(model, batch)
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"], pos_weight=weight)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, model: Any, examples: Sequence[Example], ctx: EvalContext, desc: str) -> np.ndarray:
        """P(label = 1) for every example, in the examples' order."""
        def run(index: list[int]) -> torch.Tensor:
            return torch.sigmoid(self.logits(model, ctx.to(self.collate([examples[i] for i in index], ctx.tokenizer, ctx.max_len))))

        texts = [e.text + (e.text_b or "") for e in examples]
        return in_length_order(model, texts, ctx, run, desc).reshape(-1).double().numpy()

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return (probs >= self.threshold).astype(int)

    def score(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        raise NotImplementedError

    def outputs(self, model: Any, evalset: EvalSet, ctx: EvalContext) -> np.ndarray:
        return self.probabilities(model, evalset.data, ctx, f"eval {evalset.name}")

    def tune_from(self, evalset: EvalSet, outputs: np.ndarray) -> None:
        if self.threshold_option == "tune":
            # the threshold that maximises this task's headline metric on validation data
            labels = np.array([e.label for e in evalset.data])
            self.threshold = best_threshold(labels, outputs, self.metric, class_weights(evalset, labels))

    def trivial_metrics(self, evalset: EvalSet) -> dict[str, float]:
        """Always the majority class (accuracy) and always the positive class (F1 and the rest)."""
        labels = np.array([e.label for e in evalset.data])
        weights = class_weights(evalset, labels)
        majority = int(np.average(labels, weights=weights) >= 0.5) if len(labels) else 0
        return (accuracy(labels, np.full(len(labels), majority), weights)
                | binary_f1(labels, np.ones(len(labels), dtype=int), weights))

    def score_from(self, evalset: EvalSet, outputs: np.ndarray) -> dict[str, float]:
        labels = np.array([e.label for e in evalset.data])
        return self.score(labels, self.decide(outputs), class_weights(evalset, labels))

    def decision_note(self) -> dict[str, Any]:
        if self.threshold_option != "tune":
            return {"threshold": self.threshold, "threshold_tuned_on": None}
        # tuned and scored on the same validation set: its valid scores are optimistic, test's are not
        return {"threshold": self.threshold, "threshold_tuned_on": "valid"}

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pos_weight": self.pos_weight}

    def load_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state.get("threshold", self.threshold))
        self.pos_weight = state.get("pos_weight", self.pos_weight)

    # ---- inference --------------------------------------------------------------------------
    def predict_rows(self, model: Any, inputs: list[Example], ctx: EvalContext, top_k: int = 100) -> list[dict[str, Any]]:
        probs = self.probabilities(model, inputs, ctx, f"predict {self.name}")
        return [self.row(e, p, d) for e, p, d in zip(inputs, probs, self.decide(probs))]

    def row(self, example: Example, probability: float, decision: int) -> dict[str, Any]:
        return {"idx": example.id, "probability": round(float(probability), 6), "prediction": int(decision)}

    def codexglue_line(self, row: dict[str, Any]) -> str:
        """CodeXGLUE defect format: ``idx<TAB>prediction``."""
        return f"{row['idx']}\t{row['prediction']}"

    def predict_help(self) -> str:
        fields = "/".join(dict.fromkeys((*self.text_fields, *PREDICT_CODE_FIELDS)))
        return (f"{self.description}. Input: one JSON object per line with the code in {fields} (an idx is "
                f"kept as the id). codexglue: 'idx<TAB>0|1'; jsonl: idx, probability, prediction (threshold "
                f"{'tuned on validation' if self.threshold_option == 'tune' else self.threshold_option}).")
