"""A code-search index over a source tree: search-head embeddings of every function.

Layout of an index directory::

    vectors.safetensors   one float32 tensor ``vectors`` (N x d, L2-normalised rows)
    index.json            run, run fingerprint, root, and per row: file, line, end_line, name,
                          language, hash; per file: sha256 of its bytes and its rows

Re-indexing reads the previous index: files whose bytes did not change keep their rows; in a
changed file, a function whose code hash is already in the index keeps its vector, so only new or
edited functions go through the backbone. A different run (fingerprint) rebuilds everything.
Search is exact: one matrix product of the query embedding with all rows, then the top k.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from mtpeft.analysis.extract import DEFAULT_MAX_FILE_BYTES, Function, extract_file, relative_name, source_files
from mtpeft.fileio import atomic_write_bytes, atomic_write_text
from mtpeft.errors import MtpeftError

VECTORS = "vectors.safetensors"
META = "index.json"
FORMAT = 1
ENTRY_FIELDS = ("file", "line", "end_line", "name", "language", "hash")


def run_fingerprint(run_dir: str | Path) -> str:
    """Identifies the trained weights: vectors of another run are not comparable."""
    digest = hashlib.sha256()
    checkpoint = Path(run_dir) / "checkpoint"
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json")):
        digest.update(path.relative_to(checkpoint).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CodeIndex:
    vectors: np.ndarray  # (N, d) float32, L2-normalised
    entries: list[dict[str, Any]]  # ENTRY_FIELDS per row
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> {sha256, rows: [start, count]}
    run: str = ""
    fingerprint: str = ""
    root: str = ""
    _half: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Vectors then metadata, each written to a temporary file and renamed into place."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "run": self.run, "run_fingerprint": self.fingerprint, "root": self.root,
                "dim": int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0,
                "files": self.files, "entries": self.entries}
        atomic_write_bytes(directory / VECTORS, save({"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)}))
        atomic_write_text(directory / META, json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> "CodeIndex":
        directory = Path(directory)
        if not (directory / META).exists() or not (directory / VECTORS).exists():
            raise MtpeftError(f"{directory}: not an index directory (run 'mtpeft index PATH --run RUN --index {directory}')")
        try:
            meta = json.loads((directory / META).read_text(encoding="utf-8"))
            vectors = load_file(str(directory / VECTORS))["vectors"]
        except (ValueError, KeyError, OSError, SafetensorError) as error:
            raise MtpeftError(f"{directory}: damaged index ({error}); rebuild it with 'mtpeft index'") from None
        if meta.get("format") != FORMAT or len(meta["entries"]) != len(vectors):
            raise MtpeftError(f"{directory}: index format or size mismatch; rebuild it with 'mtpeft index'")
        return cls(vectors, meta["entries"], meta["files"], meta["run"], meta["run_fingerprint"], meta.get("root", ""))

    # ---- search -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, prescore: str = "float32") -> list[list[dict[str, Any]]]:
        """Top-k by cosine (rows and queries are L2-normalised): one matrix product over all rows.

        ``prescore="float16"`` scores all rows with a float16 copy of the matrix (half the memory
        traffic, which is what bounds a query over a large index), keeps the best 4k + 32 and
        re-scores those in float32: the scores returned are the float32 ones; a row can be missed
        only if float16 rounding moves it across that much wider cut-off. Runs on torch's
        thread pool (``--threads``), not on a BLAS pool of its own competing for the same cores."""
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        k = max(1, min(k, len(self)))
        with torch.inference_mode():
            query = torch.from_numpy(np.asarray(queries, dtype=np.float32))
            full = torch.from_numpy(self.vectors)
            if prescore == "float16" and len(self) > 4 * k + 32:
                candidates = (query.half() @ self.half_matrix().T).topk(4 * k + 32, dim=1).indices
                exact = torch.einsum("qd,qcd->qc", query, full[candidates])
                values, picked = exact.topk(k, dim=1)
                rows = candidates.gather(1, picked)
            elif prescore in ("float16", "float32"):
                values, rows = (query @ full.T).topk(k, dim=1)
            else:
                raise MtpeftError(f"unknown prescore {prescore!r}; valid: float32, float16")
        return [[{"score": round(float(v), 6), **self.entries[i]} for v, i in zip(vs, rs)]
                for vs, rs in zip(values.tolist(), rows.tolist())]

    def half_matrix(self) -> torch.Tensor:
        """The float16 copy of the vectors used for pre-scoring, made once."""
        if self._half is None or len(self._half) != len(self.vectors):
            self._half = torch.from_numpy(self.vectors).half()
        return self._half


def entry(fn: Function) -> dict[str, Any]:
    return {name: getattr(fn, name) for name in ENTRY_FIELDS}


def embed_functions(encoder: Any, functions: Sequence[Function]) -> np.ndarray:
    out = encoder.run_heads([f.code for f in functions], ["search"]).search
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def build_index(root: Path, encoder: Any, previous: CodeIndex | None = None, max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                progress: bool = False, exclude: Sequence[str] = ()) -> tuple[CodeIndex, dict[str, Any]]:
    """Index every function under ``root``, reusing what ``previous`` already holds."""
    from tqdm.auto import tqdm

    if "search" not in encoder.tasks:
        raise MtpeftError(f"the run {encoder.run_dir} has no search head; train one with the search task")
    root = Path(root)
    if not root.exists():
        raise MtpeftError(f"{root}: no such file or directory")
    started = time.perf_counter()
    fingerprint = run_fingerprint(encoder.run_dir) if encoder.run_dir else ""
    if previous is not None and previous.fingerprint != fingerprint:
        previous = None  # another model: nothing is reusable
    known: dict[str, np.ndarray] = {}
    if previous is not None:
        known = {e["hash"]: previous.vectors[i] for i, e in enumerate(previous.entries)}
    blocks: list[tuple[str, dict[str, Any], list[dict[str, Any]], list[np.ndarray | None], list[Function]]] = []
    skipped, unchanged, changed = [], 0, 0
    for path in tqdm(source_files(root, exclude), desc="files", unit="file", disable=not progress):
        name = relative_name(path, root)
        digest = file_digest(path)
        old = previous.files.get(name) if previous is not None else None
        if old is not None and old["sha256"] == digest:
            start, count = old["rows"]
            blocks.append((name, old, previous.entries[start : start + count], list(previous.vectors[start : start + count]), []))
            unchanged += 1
            continue
        functions, problem = extract_file(path, root, max_bytes)
        if problem is not None:
            skipped.append({"file": problem.file, "reason": problem.reason})
        changed += 1
        vectors = [known.get(f.hash) for f in functions]
        blocks.append((name, {"sha256": digest}, [entry(f) for f in functions], vectors, functions))
    # every function not found in the previous index goes through the backbone, in one batch run
    todo = [(b, i) for b, block in enumerate(blocks) for i, v in enumerate(block[3]) if v is None]
    fresh = embed_functions(encoder, [blocks[b][4][i] for b, i in todo]) if todo else None
    for n, (b, i) in enumerate(todo):
        blocks[b][3][i] = fresh[n]
    entries, rows, files = [], [], {}
    for name, info, block_entries, vectors, _ in blocks:
        files[name] = {"sha256": info["sha256"], "rows": [len(entries), len(block_entries)]}
        entries.extend(block_entries)
        rows.extend(vectors)
    dim = encoder.model.heads["search"].proj.out_features
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    index = CodeIndex(matrix, entries, files, encoder.run_dir or "", fingerprint, root.name)
    removed = len(set(previous.files) - set(files)) if previous is not None else 0
    stats = {"files": len(files), "files_unchanged": unchanged, "files_changed": changed, "files_removed": removed,
             "functions": len(entries), "functions_embedded": len(todo), "skipped": skipped,
             "seconds": round(time.perf_counter() - started, 2)}
    return index, stats


def load_or_none(directory: Path) -> CodeIndex | None:
    try:
        return CodeIndex.load(directory)
    except MtpeftError:
        return None
