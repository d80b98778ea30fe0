"""Shared helpers of the inference benchmarks: real functions from the data folder, machine facts,
percentiles, and writing JSON + markdown outputs."""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mtpeft.device import cpu_facts

# (file under the data folder, code field, language) of every real function the benchmarks read
SOURCES = [
    ("defect/devign_train.jsonl.gz", "func", "c"),
    ("defect/devign_valid.jsonl.gz", "func", "c"),
    ("defect/devign_test.jsonl.gz", "func", "c"),
    ("clone/bcb_functions.jsonl.gz", "func", "java"),
    ("search/cosqa_corpus.jsonl.gz", "code", "python"),
    ("flaky/flakeflagger_train.jsonl.gz", "full_code", "java"),
    ("flaky/flakeflagger_valid.jsonl.gz", "full_code", "java"),
    ("flaky/flakeflagger_test.jsonl.gz", "full_code", "java"),
    ("search/csn_ruby_train.jsonl.gz", "code", "ruby"),
    ("search/csn_ruby_test.jsonl.gz", "code", "ruby"),
]
QUERY_SOURCES = [("search/cosqa_queries_valid.jsonl.gz", "query"), ("search/csn_ruby_test.jsonl.gz", "query")]


def read_field(path: Path, name: str) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            value = json.loads(line).get(name)
            if isinstance(value, str) and value.strip():
                yield value


def real_functions(data: Path, limit: int | None = None, seed: int = 0, per_source: bool = False) -> list[tuple[str, str, str]]:
    """(code, language, source) of distinct real functions; ``limit`` draws a seeded sample that
    takes an equal share from each data set when ``per_source``."""
    seen: set[str] = set()
    by_source: dict[str, list[tuple[str, str, str]]] = {}
    for file, field, language in SOURCES:
        for code in read_field(data / file, field):
            if code not in seen:
                seen.add(code)
                by_source.setdefault(file.split("/")[1].split("_")[0], []).append((code, language, file))
    rng = random.Random(seed)
    if limit is not None and per_source:
        share = -(-limit // len(by_source))
        picked = [f for items in by_source.values() for f in rng.sample(items, min(share, len(items)))]
        rng.shuffle(picked)
        return picked[:limit]
    everything = [f for items in by_source.values() for f in items]
    rng.shuffle(everything)
    return everything if limit is None else everything[:limit]


def real_queries(data: Path, limit: int, seed: int = 0) -> list[str]:
    queries = [q for file, field in QUERY_SOURCES for q in read_field(data / file, field)]
    random.Random(seed).shuffle(queries)
    return queries[:limit]


def machine() -> dict[str, Any]:
    """CPU model, flags that matter to PyTorch's kernels, core count, torch threads and version."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return cpu_facts() | {
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "mean_ms": round(float(ms.mean()), 2)}


def command_line() -> str:
    """The command as a user would type it again, with the thread settings it ran under."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    return " ".join(env + ["python", shlex.join([sys.argv[0]] + sys.argv[1:])])


def write_outputs(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out_dir / f"{name}.md").write_text(markdown.rstrip() + "\n", encoding="utf-8")
