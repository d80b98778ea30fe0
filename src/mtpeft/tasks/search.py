"""Code search: natural-language query -> code. A bi-encoder trained with in-batch InfoNCE.

Evaluation ranks every query against ALL codes of the evaluation set (CodeSearchNet / AdvTest
style: each record is a query with its code) or against a separate corpus (CoSQA style:
``{queries: FILE, corpus: FILE}``, queries carrying ``answer_idx``). The metric is MRR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mtpeft.data import SkipCounter, binary_label, pick_text, read_jsonl, read_records
from mtpeft.data.fields import record_id
from mtpeft.data.jsonl import Record
from mtpeft.errors import DataError, MtpeftError
from mtpeft.evaluation.metrics import mrr, random_ranking_mrr
from mtpeft.tasks.base import Batch, EvalContext, EvalSet, Task, fp32, in_length_order, subsample
from mtpeft.tasks.registry import register_task

QUERY_FIELDS = ("query", "docstring", "doc", "nl", "question")
CODE_FIELDS = ("code", "function", "func", "original_string")


@dataclass(frozen=True)
class Pair:
    id: str
    query: str
    code: str


@dataclass
class Ranking:
    """Queries to rank against a corpus; ``answers[i]`` is the corpus index of query i's code."""

    query_ids: list[str]
    queries: list[str]
    corpus_ids: list[str]
    corpus: list[str]
    answers: list[int]


class SearchHead(nn.Module):
    """Projection h -> 512 followed by L2 normalisation, shared by queries and codes.

    ``init: identity`` (the default) starts from the backbone's own embedding space: the projection
    copies the pooled state into the first h dimensions (zeros elsewhere), so at step 0 the cosine
    similarities, and so the MRR, are the frozen backbone's. A random start (``init: random``) begins
    below the backbone's zero-shot MRR and spends its first steps climbing back.
    """

    def __init__(self, hidden_size: int, dim: int = 512, init: str = "identity") -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, dim)
        if init == "identity":
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(dim, hidden_size))
                self.proj.bias.zero_()
        elif init != "random":
            raise MtpeftError(f"search option init: unknown {init!r}; valid: identity, random")

    @fp32
    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(pooled), dim=-1)


def ranking_from_pairs(pairs: Sequence[Pair]) -> Ranking:
    ids = [p.id for p in pairs]
    return Ranking(ids, [p.query for p in pairs], ids, [p.code for p in pairs], list(range(len(pairs))))


@register_task("search")
class SearchTask(Task):
    name = "search"
    metric = "mrr"
    description = "code search (CodeSearchNet/AdvTest, CoSQA): query -> code; MRR over the whole set"
    languages = ("ruby", "python")
    option_names = ("scale", "query_max_len", "dim", "init")
    prompt_placeholders = ("query", "code")

    @property
    def scale(self) -> float:
        return float(self.options.get("scale", 20.0))

    @property
    def query_max_len(self) -> int:
        return int(self.options.get("query_max_len", 64))

    # ---- data -------------------------------------------------------------------------------
    def parse_pair(self, record: Record) -> Pair | None:
        """A (query, code) pair; a pair labelled 0 (CoSQA's non-matching pairs) is no positive."""
        if "label" in record.data and binary_label(record, ("label",)) == 0:
            return None
        return Pair(record_id(record), pick_text(record, QUERY_FIELDS), pick_text(record, CODE_FIELDS))

    def read_pairs(self, source: Any, skips: SkipCounter) -> list[Pair]:
        if not isinstance(source, (str, Path)):
            raise MtpeftError(f"task {self.name}: expected a file path or {{queries: FILE, corpus: FILE}}, got {source!r}")
        pairs = list(read_records(source, skips, self.parse_pair))
        if not pairs:
            raise DataError(source, None, "no usable query/code pairs")
        return pairs

    def read_train(self, source: Any, skips: SkipCounter) -> list[Pair]:
        return self.read_pairs(source, skips)

    def read_corpus_ranking(self, queries: Any, corpus: Any, skips: SkipCounter, require_answer: bool = True) -> Ranking:
        def code_entry(record: Record) -> tuple[str, str]:
            if record.data.get("idx") is None:
                raise record.error("missing field: idx")
            return str(record.data["idx"]), pick_text(record, CODE_FIELDS)

        entries = list(read_records(corpus, skips, code_entry))
        if not entries:
            raise DataError(corpus, None, "no usable corpus entries (idx and code)")
        position = {idx: i for i, (idx, _) in enumerate(entries)}

        def query_entry(record: Record) -> tuple[str, str, int]:
            text = pick_text(record, QUERY_FIELDS)
            answer = record.data.get("answer_idx", record.data.get("answer"))
            if answer is None and require_answer:
                raise record.error("missing field: answer_idx (the corpus idx of the matching code)")
            if answer is not None and str(answer) not in position:
                raise record.error(f"answer_idx {answer!r} is not an idx of the corpus {corpus}")
            return record_id(record), text, position[str(answer)] if answer is not None else -1

        rows = list(read_records(queries, skips, query_entry))
        if not rows:
            raise DataError(queries, None, "no usable queries")
        return Ranking([r[0] for r in rows], [r[1] for r in rows], [e[0] for e in entries], [e[1] for e in entries],
                       [r[2] for r in rows])

    def read_eval(self, name: str, source: Any, skips: SkipCounter, limit: int | None, seed: int) -> EvalSet:
        if isinstance(source, dict):
            if set(source) != {"queries", "corpus"}:
                raise MtpeftError(f"search set {name}: expected {{queries: FILE, corpus: FILE}}, got keys {sorted(source)}")
            evalset = EvalSet(name, self.read_corpus_ranking(source["queries"], source["corpus"], skips))
        else:
            evalset = EvalSet(name, ranking_from_pairs(self.read_pairs(source, skips)))
        return self.cap(evalset, limit, seed, "test")

    def cap(self, evalset: EvalSet, limit: int | None, seed: int, split: str) -> EvalSet:
        """A budget caps the queries; every query is still ranked against the whole corpus (all the
        set's codes), so MRR keeps its meaning: a capped corpus would make ranking easier."""
        ranking = evalset.data
        keep = subsample(range(len(ranking.queries)), limit, seed)
        return EvalSet(evalset.name, Ranking([ranking.query_ids[i] for i in keep], [ranking.queries[i] for i in keep],
                                             ranking.corpus_ids, ranking.corpus, [ranking.answers[i] for i in keep]))

    def size(self, evalset: EvalSet) -> int:
        return len(evalset.data.queries)

    def evalset_from_examples(self, name: str, examples: Sequence[Pair]) -> EvalSet:
        return EvalSet(name, ranking_from_pairs(examples))

    def text_length(self, example: Pair) -> int:
        return len(example.code)

    # ---- model ------------------------------------------------------------------------------
    def make_head(self, hidden_size: int) -> nn.Module:
        return SearchHead(hidden_size, int(self.options.get("dim", 512)), str(self.options.get("init", "identity")))

    def tokenize(self, texts: Sequence[str], tokenizer: Any, max_len: int) -> dict[str, torch.Tensor]:
        enc = tokenizer(list(texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def collate(self, examples: Sequence[Pair], tokenizer: Any, max_len: int) -> Batch:
        return {
            "query": self.tokenize([e.query for e in examples], tokenizer, min(max_len, self.query_max_len)),
            "code": self.tokenize([e.code for e in examples], tokenizer, max_len),
        }

    def embed_batch(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.heads[self.name](model.encode(inputs))

    def loss(self, model: Any, batch: Batch) -> torch.Tensor:
        queries = self.embed_batch(model, batch["query"])
        codes = self.embed_batch(model, batch["code"])
        offset = 0
        if batch.get("gather") is not None:
            # data-parallel training: every rank's codes are negatives of these queries, as in one
            # process; ``offset`` is where this rank's own codes sit among them
            codes, offset = batch["gather"](codes)
        return self.info_nce(queries, codes, offset)

    def info_nce(self, queries: torch.Tensor, codes: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """In-batch InfoNCE: query i's code is column offset + i (clamped: a rank with an empty
        shard runs one placeholder query whose loss counts 0)."""
        logits = self.similarities(queries, codes)
        labels = (offset + torch.arange(len(logits), device=logits.device)).clamp(max=max(len(codes) - 1, 0))
        return nn.functional.cross_entropy(logits, labels)

    @fp32
    def similarities(self, queries: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities in fp32 (scaled by 20, bf16 would round them by ~0.08)."""
        return self.scale * queries @ codes.T

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, model: Any, texts: Sequence[str], ctx: EvalContext, max_len: int, desc: str) -> np.ndarray:
        def run(index: list[int]) -> torch.Tensor:
            return self.embed_batch(model, ctx.to(self.tokenize([texts[i] for i in index], ctx.tokenizer, max_len)))

        return in_length_order(model, texts, ctx, run, desc).numpy()

    def scores(self, model: Any, ranking: Ranking, ctx: EvalContext, desc: str) -> np.ndarray:
        queries, codes = self.embeddings(model, ranking, ctx, desc)
        return queries @ codes.T

    def embeddings(self, model: Any, ranking: Ranking, ctx: EvalContext, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """(query vectors, corpus vectors), each row L2-normalised."""
        queries = self.embed(model, ranking.queries, ctx, min(ctx.max_len, self.query_max_len), f"{desc} queries")
        codes = self.embed(model, ranking.corpus, ctx, ctx.max_len, f"{desc} codes")
        return queries, codes

    def outputs(self, model: Any, evalset: EvalSet, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
        return self.embeddings(model, evalset.data, ctx, f"eval {evalset.name}")

    def trivial_metrics(self, evalset: EvalSet) -> dict[str, float]:
        """A uniformly random ranking of the set's corpus."""
        return {"mrr": random_ranking_mrr(len(evalset.data.corpus))}

    def score_from(self, evalset: EvalSet, outputs: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        queries, codes = outputs
        return mrr(queries @ codes.T, evalset.data.answers)

    # ---- inference --------------------------------------------------------------------------
    def read_predict(self, path: Path, skips: SkipCounter, options: dict[str, Any]) -> Ranking:
        if options.get("corpus"):
            return self.read_corpus_ranking(path, options["corpus"], skips, require_answer=False)
        first = next(read_jsonl(path, skips), None)
        if first is not None and not any(first.data.get(f) is not None for f in CODE_FIELDS):
            raise MtpeftError(f"{path}: search ranks queries against code, and these records carry no code "
                              f"({'/'.join(CODE_FIELDS)}): give --corpus FILE (JSON Lines of idx and code) to rank against")
        return ranking_from_pairs(self.read_pairs(path, skips))

    def predict_rows(self, model: Any, inputs: Ranking, ctx: EvalContext, top_k: int = 100) -> list[dict[str, Any]]:
        scores = self.scores(model, inputs, ctx, "predict search")
        top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return [{"url": qid, "answers": [inputs.corpus_ids[j] for j in row], "scores": [round(float(s[j]), 6) for j in row]}
                for qid, row, s in zip(inputs.query_ids, top, scores)]

    def codexglue_line(self, row: dict[str, Any]) -> str:
        """AdvTest format: ``{"url": query id, "answers": [the top-k code ids, best first]}``."""
        return json.dumps({"url": row["url"], "answers": row["answers"]})

    def predict_help(self) -> str:
        return (f"{self.description}. Input: queries (query/docstring/nl) with their code (code/function), ranked "
                "against all the file's codes; or queries only, with --corpus FILE (idx, code) to rank against. "
                "codexglue: one {url, answers: [top-k code ids]} per line; jsonl: the same plus scores.")
