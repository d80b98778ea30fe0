"""The Task protocol: everything that is specific to one code-analysis task lives behind it.

A task never knows which backbone or PEFT method is used; it only calls ``model.encode`` (pooled
states) and its own head ``model.heads[task.name]``.
"""

from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from mtpeft.data import SkipCounter
from mtpeft.errors import MtpeftError
from mtpeft.tasks.encoding import Encoding, encode_texts

if TYPE_CHECKING:  # pragma: no cover
    from mtpeft.model.multitask import MultiTaskModel

Batch = dict[str, Any]


@dataclass
class EvalContext:
    """How to run the model at evaluation time (shared by all tasks)."""

    tokenizer: Any
    max_len: int
    batch_size: int = 64
    bf16: bool = False
    show_progress: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to(self, batch: Any) -> Any:
        return to_device(batch, self.device)


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of a (nested) batch on ``device``; non-blocking, so a copy to a GPU overlaps
    with the host's work (the CPU is a no-op)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True) if batch.device != device else batch
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass
class EvalSet:
    """One evaluation set of a task: ``name`` is the task name or ``task/set`` for extra sets."""

    name: str
    data: Any
    # label -> weight that undoes a cap's change of the class balance (None: as read); a validation
    # cap that keeps every positive weighs its negatives up when a threshold is tuned on it
    class_weights: dict[int, float] | None = None


@dataclass
class TaskData:
    train: list[Any] = field(default_factory=list)
    valid: list[EvalSet] = field(default_factory=list)
    test: list[EvalSet] = field(default_factory=list)


def subsample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """A seeded random subset (order kept), so budgets are repeatable."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def stratified_subsample(items: Sequence[Any], limit: int | None, seed: int, label: Callable[[Any], Any],
                         favour: Any = None) -> list[Any]:
    """A seeded subset (order kept) in which each class keeps its share (largest remainder), so a
    rare class is not left to chance. The class ``favour`` (a rare one) gets at least half of
    ``limit`` when it has that many, and all of itself otherwise."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(label(item), []).append(i)
    quota = {}
    if favour in groups:
        proportional = round(limit * len(groups[favour]) / len(items))
        quota[favour] = min(len(groups[favour]), max(proportional, limit // 2))
    rest = limit - sum(quota.values())
    others = {k: len(v) for k, v in groups.items() if k not in quota}
    total = sum(others.values())
    shares = {k: rest * n / total for k, n in others.items()} if total else {}
    counts = {k: int(share) for k, share in shares.items()}
    by_remainder = sorted(shares, key=lambda k: (counts[k] - shares[k], str(k)))
    for k in by_remainder[: rest - sum(counts.values())]:
        counts[k] += 1
    quota |= counts
    rng = random.Random(seed)
    keep = sorted(i for k in sorted(groups, key=str) for i in rng.sample(groups[k], quota.get(k, 0)))
    return [items[i] for i in keep]


def fp32(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a head (or a similarity) in float32 even under bf16 autocast: the heads are small and
    their logits and cosine similarities are what the losses and thresholds read, where bf16's
    8-bit mantissa would round them (a 0.004 step near 1.0)."""
    @functools.wraps(forward)
    def wrapper(self: Any, *tensors: torch.Tensor) -> torch.Tensor:
        with torch.autocast(tensors[0].device.type, enabled=False):
            return forward(self, *(t.float() for t in tensors))

    return wrapper


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices sorted by text length: evaluation batches then pad little (and stay deterministic)."""
    return sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))


@torch.no_grad()
def in_length_order(model: "MultiTaskModel", texts: Sequence[str], ctx: EvalContext, run: Callable[[list[int]], torch.Tensor],
                    desc: str) -> torch.Tensor:
    """The one inference loop: ``run`` maps a batch (indices into ``texts``, similar lengths, so
    little padding) to one row per index; the rows come back in ``texts`` order, as float32."""
    order = length_order(texts)
    out: torch.Tensor | None = None
    model.eval()
    for start in tqdm(range(0, len(order), ctx.batch_size), desc=desc, leave=False, disable=not ctx.show_progress):
        index = order[start : start + ctx.batch_size]
        with ctx.autocast():
            rows = run(index).float().cpu()
        if out is None:
            out = torch.zeros((len(texts), *rows.shape[1:]))
        out[index] = rows
    return out if out is not None else torch.zeros((0, 0))


def pooled_states(model: "MultiTaskModel", texts: Sequence[str], ctx: EvalContext, encoding: Encoding, desc: str) -> torch.Tensor:
    """The pooled backbone state of every text (rows in ``texts`` order)."""
    return in_length_order(model, texts, ctx, lambda index: model.encode(
        ctx.to(encode_texts([texts[i] for i in index], ctx.tokenizer, encoding))), desc)


class Task(ABC):
    """One code-analysis task: reading, batching, head, loss, evaluation and prediction files."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the headline metric used for checkpoint selection
    higher_is_better: ClassVar[bool] = True  # the headline metric's direction (an error rate: False)
    # the ``{placeholders}`` a prompting-baseline template of this task must contain (none: the
    # prompting baseline does not know how to ask this task)
    prompt_placeholders: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # the programming languages of the task's data sets: inference marks other languages out of
    # domain (task option ``languages`` overrides it for a run trained on other data)
    languages: ClassVar[tuple[str, ...]] = ()

    # the options this class adds (a subclass lists only its own; ``known_options`` gathers them)
    option_names: ClassVar[tuple[str, ...]] = ("max_len", "truncation", "windows", "pad_multiple", "languages",
                                               "positive_fraction")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.known_options()))
        if unknown:
            raise MtpeftError(f"task {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                              f"valid options: {', '.join(self.known_options())}")

    @classmethod
    def known_options(cls) -> list[str]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names += [n for n in vars(klass).get("option_names", ()) if n not in names]
        return names

    # ---- data -------------------------------------------------------------------------------
    @abstractmethod
    def read_train(self, source: Any, skips: SkipCounter) -> list[Any]:
        """Training examples from a split description (usually a path)."""

    @abstractmethod
    def read_eval(self, name: str, source: Any, skips: SkipCounter, limit: int | None, seed: int) -> EvalSet:
        """An evaluation set from a split description (a path, or a dict of paths)."""

    def cap(self, evalset: EvalSet, limit: int | None, seed: int, split: str) -> EvalSet:
        """At most ``limit`` examples of an evaluation set of ``split`` (valid or test), seeded."""
        return EvalSet(evalset.name, subsample(evalset.data, limit, seed))

    def size(self, evalset: EvalSet) -> int:
        """The size of an evaluation set as reported (examples; queries for search)."""
        return len(evalset.data)

    def evalset_from_examples(self, name: str, examples: Sequence[Any]) -> EvalSet:
        """An evaluation set made of (held-out) training examples, for tasks without a valid split."""
        return EvalSet(name, list(examples))

    def encoding(self, max_len: int) -> Encoding:
        """How this task's texts become tokens: options ``max_len`` (overrides the backbone's),
        ``truncation`` (head | head_tail), ``windows`` (pieces per long text) and ``pad_multiple``."""
        return Encoding(
            max_len=int(self.options.get("max_len") or max_len),
            truncation=str(self.options.get("truncation", "head")),
            windows=int(self.options.get("windows", 1)),
            pad_multiple=self.options.get("pad_multiple"),
        )

    def text_length(self, example: Any) -> int:
        """A cheap length proxy used to bucket training batches."""
        return len(getattr(example, "text", ""))

    # ---- model ------------------------------------------------------------------------------
    @abstractmethod
    def make_head(self, hidden_size: int) -> nn.Module: ...

    @abstractmethod
    def collate(self, examples: Sequence[Any], tokenizer: Any, max_len: int) -> Batch: ...

    @abstractmethod
    def loss(self, model: "MultiTaskModel", batch: Batch) -> torch.Tensor: ...

    carves_valid: bool = False  # True when carve_valid cuts validation sets out of the training data

    def carve_valid(self, train: list[Any], seed: int) -> tuple[list[Any], list[EvalSet]]:
        """Extra validation sets cut out of the training data (default: none, train unchanged)."""
        return train, []

    def prepare(self, train: Sequence[Any]) -> None:
        """Look at the training set once before training (e.g. class balance); default: nothing."""

    # ---- evaluation -------------------------------------------------------------------------
    # One forward pass per evaluation set: ``outputs`` runs the model once (probabilities,
    # embeddings) and both ``tune_from`` (validation only) and ``score_from`` read its result.
    @abstractmethod
    def outputs(self, model: "MultiTaskModel", evalset: EvalSet, ctx: EvalContext) -> Any:
        """The model's raw outputs on an evaluation set (no decision taken yet)."""

    def tune_from(self, evalset: EvalSet, outputs: Any) -> None:
        """Fit decision parameters (e.g. a threshold) on the outputs of a VALIDATION set; default: nothing."""

    @abstractmethod
    def score_from(self, evalset: EvalSet, outputs: Any) -> dict[str, float]:
        """The metrics of an evaluation set from its outputs, with the current decision parameters."""

    def evaluate(self, model: "MultiTaskModel", evalset: EvalSet, ctx: EvalContext) -> dict[str, float]:
        return self.score_from(evalset, self.outputs(model, evalset, ctx))

    def trivial_metrics(self, evalset: EvalSet) -> dict[str, float]:
        """The metrics of a trivial predictor on this set (what a model must beat); default: none."""
        return {}

    def calibrate(self, model: "MultiTaskModel", evalset: EvalSet, ctx: EvalContext) -> None:
        """Fit decision parameters on VALIDATION data (one pass of its own; validation shares it)."""
        self.tune_from(evalset, self.outputs(model, evalset, ctx))

    def decision_note(self) -> dict[str, Any]:
        """How the decision parameters were set, recorded beside the metrics; default: none."""
        return {}

    def state(self) -> dict[str, Any]:
        """Decision parameters saved with a checkpoint (e.g. the threshold chosen on validation)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    # ---- inference --------------------------------------------------------------------------
    @abstractmethod
    def read_predict(self, path: Path, skips: SkipCounter, options: dict[str, Any]) -> Any:
        """Inputs for ``mtpeft predict`` (labels not required); ``options`` are the command's files
        (``functions``, ``corpus``), never the training run's."""

    @abstractmethod
    def predict_rows(self, model: "MultiTaskModel", inputs: Any, ctx: EvalContext, top_k: int = 100) -> list[dict[str, Any]]:
        """One JSON-ready prediction per input (ids, probabilities or scores, and the decision)."""

    @abstractmethod
    def codexglue_line(self, row: dict[str, Any]) -> str:
        """A prediction row as a line of the task's CodeXGLUE prediction file."""

    def predict_help(self) -> str:
        """What ``mtpeft predict --help`` says about this task's inputs and outputs."""
        return self.description
