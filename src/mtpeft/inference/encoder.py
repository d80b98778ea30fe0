"""One backbone pass per function feeds every head (defect, flaky, search, clone).

The tasks of a multi-task run share one PEFT module, so the pooled state of a function is the
same for every head that reads it: ``SharedEncoder.run_heads`` encodes each function once, in
length-ordered batches, and applies all heads to the pooled states. Heads whose tasks encode their
texts differently (a task option ``max_len``/``truncation``/``windows``) get one pass per distinct
encoding, so a head always sees its inputs as in training; with the usual shared settings that is
one pass. Pooled states are cached by (encoding, sha256 of the code), so a function seen before
(a re-analysis, a server request repeating code) is not encoded again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mtpeft.errors import MtpeftError
from mtpeft.tasks.base import Task, length_order
from mtpeft.tasks.encoding import Encoding, encode_texts

BINARY_HEADS = ("defect", "flaky")

def trained_languages(task: Task) -> list[str]:
    """The languages a head was trained on: task option ``languages`` (a run trained on other data
    says so in its config), else the task class's ``languages`` (those of the data sets it reads)."""
    value = task.options.get("languages", task.languages)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).lower() for v in value]


def text_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class EmbeddingCache:
    """Pooled states by (encoding, code hash); ``hits``/``misses`` count lookups."""

    rows: dict[tuple[Encoding, str], np.ndarray] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    max_rows: int = 200_000  # ~300 MB at h = 384: enough for a large repository, bounded for a server

    def get(self, encoding: Encoding, key: str) -> np.ndarray | None:
        row = self.rows.get((encoding, key))
        if row is None:
            self.misses += 1
        else:
            self.hits += 1
        return row

    def put(self, encoding: Encoding, key: str, row: np.ndarray) -> None:
        if self.max_rows <= 0:  # caching off (benchmarks time the backbone, not the cache)
            return
        if len(self.rows) >= self.max_rows:
            self.rows.pop(next(iter(self.rows)))  # oldest first (dicts keep insertion order)
        self.rows[(encoding, key)] = row


@dataclass
class HeadOutputs:
    """Every head's answer for N functions (rows in input order)."""

    probabilities: dict[str, np.ndarray]  # defect / flaky: P(positive), shape (N,)
    search: np.ndarray | None  # (N, d) L2-normalised code embeddings
    clone_states: torch.Tensor | None  # (N, h) pooled states read by the clone pair head
    passes: int  # backbone passes over the functions (1 when all tasks share an encoding)


class SharedEncoder:
    """A loaded run's model, ready to answer every head from one pass per function."""

    def __init__(self, tasks: dict[str, Task], model: Any, max_len: int, batch_size: int = 32,
                 bf16: bool = False, show_progress: bool = False, cache: EmbeddingCache | None = None,
                 run_dir: str | None = None) -> None:
        self.tasks = tasks
        self.model = model.eval()
        self.tokenizer = model.backbone.tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.bf16 = bf16
        self.show_progress = show_progress
        self.cache = cache if cache is not None else EmbeddingCache()
        self.run_dir = run_dir
        self.encoded = 0  # texts that went through the backbone (cache misses), for tests and stats

    @classmethod
    def from_run(cls, run_dir: Path, batch_size: int = 32, show_progress: bool = False) -> "SharedEncoder":
        from mtpeft.recipes import load_run
        from mtpeft.training.loop import use_bf16

        config, tasks, model = load_run(Path(run_dir))
        return cls(tasks, model, config.backbone.max_len, batch_size, use_bf16(config.training), show_progress,
                   run_dir=str(run_dir))

    # ---- facts about the run ------------------------------------------------------------------
    def languages(self) -> dict[str, list[str]]:
        return {name: trained_languages(task) for name, task in self.tasks.items()}

    def thresholds(self) -> dict[str, float]:
        return {name: float(task.threshold) for name, task in self.tasks.items() if hasattr(task, "threshold")}

    @property
    def clone_mode(self) -> str | None:
        """``separate`` (pair head over two pooled states), ``joint`` (pair re-encoded) or None."""
        task = self.tasks.get("clone")
        return None if task is None else getattr(task, "pair_encoding", "joint")

    def code_encoding(self, task_name: str) -> Encoding:
        return self.tasks[task_name].encoding(self.max_len)

    def query_encoding(self) -> Encoding:
        search = self.tasks.get("search")
        if search is None:
            raise MtpeftError("this run has no search head")
        # as the search task encodes its queries in training and evaluation
        return Encoding(min(self.max_len, int(getattr(search, "query_max_len", 64))))

    def encoding_groups(self, heads: Sequence[str]) -> dict[Encoding, list[str]]:
        """The heads that can read the same backbone pass, grouped by how their tasks encode code."""
        groups: dict[Encoding, list[str]] = {}
        for name in heads:
            groups.setdefault(self.code_encoding(name), []).append(name)
        return groups

    # ---- the backbone pass ----------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def pooled(self, texts: Sequence[str], encoding: Encoding, desc: str = "functions") -> torch.Tensor:
        """Pooled states (N, h) of ``texts``; cached texts skip the backbone."""
        keys = [text_hash(t) for t in texts]
        rows: list[np.ndarray | None] = [self.cache.get(encoding, k) for k in keys]
        todo = [i for i, row in enumerate(rows) if row is None]
        # one pass per distinct text: a function that appears twice is encoded once
        first: dict[str, int] = {}
        distinct = [i for i in todo if first.setdefault(keys[i], i) == i]
        order = length_order([texts[i] for i in distinct])
        bar = tqdm(total=len(distinct), desc=desc, unit="fn", leave=False, disable=not self.show_progress or not distinct)
        for start in range(0, len(order), self.batch_size):
            batch = [distinct[j] for j in order[start : start + self.batch_size]]
            with self.autocast():
                states = self.model.encode(encode_texts([texts[i] for i in batch], self.tokenizer, encoding)).float()
            for i, state in zip(batch, states.numpy()):
                rows[i] = state
                self.cache.put(encoding, keys[i], state)
            self.encoded += len(batch)
            bar.update(len(batch))
        bar.close()
        for i in todo:
            if rows[i] is None:
                rows[i] = rows[first[keys[i]]]
        if not rows:
            return torch.zeros((0, self.model.backbone.hidden_size))
        return torch.from_numpy(np.stack(rows))

    # ---- heads ----------------------------------------------------------------------------------
    @torch.no_grad()
    def run_heads(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> HeadOutputs:
        """Every requested head's answer for every text, from one backbone pass per encoding group."""
        heads = [h for h in (heads or list(self.tasks)) if h in self.tasks]
        probabilities: dict[str, np.ndarray] = {}
        search, clone_states = None, None
        groups = self.encoding_groups(heads)
        for encoding, names in groups.items():
            pooled = self.pooled(texts, encoding)
            for name in names:
                head = self.model.heads[name]
                if name == "search":
                    search = head(pooled).float().numpy()
                elif name == "clone":
                    clone_states = pooled
                else:
                    probabilities[name] = torch.sigmoid(head(pooled).float()).double().numpy()
        return HeadOutputs(probabilities, search, clone_states, len(groups))

    @torch.no_grad()
    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """L2-normalised search embeddings of natural-language queries (the query length limit)."""
        pooled = self.pooled(queries, self.query_encoding(), desc="queries")
        return self.model.heads["search"](pooled).float().numpy()

    @torch.no_grad()
    def clone_probabilities(self, pairs: Sequence[tuple[int, int]], texts: Sequence[str],
                            states: torch.Tensor | None) -> np.ndarray:
        """P(clone) for index pairs into ``texts``: the pair head over the two pooled states, or,
        for a run trained with ``pair_encoding: joint``, a joint pass over each shortlisted pair."""
        if not pairs:
            return np.zeros(0)
        head = self.model.heads["clone"]
        left = [a for a, _ in pairs]
        right = [b for _, b in pairs]
        if self.clone_mode == "separate":
            if states is None:
                states = self.pooled(texts, self.code_encoding("clone"))
            logits = head(states[left], states[right]).float()
            return torch.sigmoid(logits).double().numpy()
        probs = np.zeros(len(pairs))
        order = length_order([texts[a] + texts[b] for a, b in pairs])
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[left[i]] for i in index], [texts[right[i]] for i in index], truncation=True,
                                 max_length=self.code_encoding("clone").max_len, padding=True, return_tensors="pt")
            with self.autocast():
                pooled = self.model.encode({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
                probs[index] = torch.sigmoid(head(pooled.float()).float()).double().numpy()
            self.encoded += len(index)
        return probs
