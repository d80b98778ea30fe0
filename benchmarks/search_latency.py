"""Search latency over an index of real functions, query encoding included, at 1 and 2 threads.

1. Indexing: real functions from the data folder (Devign, BigCloneBench, CoSQA corpus,
   FlakeFlagger, CodeSearchNet-Ruby) are embedded with the run's search head, in chunks, until all
   are done or the time budget is spent (the index is kept in --index-dir and resumed on a rerun).
2. Latency: for each index size, real queries (CoSQA, CodeSearchNet docstrings) are answered one at
   a time: encode the query (cache off) + exact top-k by one matrix product. Sizes beyond the real
   functions embedded are made by tiling the real vectors (the cost of exact search depends on the
   number of rows, not on their values); such rows are marked ``tiled`` in the output.

    nice -n 10 python benchmarks/search_latency.py --data ../../shared/data --run runs/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, percentiles, real_functions, real_queries, write_outputs  # noqa: E402

from mtpeft.inference.encoder import EmbeddingCache, SharedEncoder  # noqa: E402
from mtpeft.serving.index import CodeIndex, run_fingerprint  # noqa: E402


def extend_index(encoder: SharedEncoder, functions: list, index_dir: Path, budget_s: float, chunk: int) -> tuple[CodeIndex, dict]:
    """Embed functions not yet in the saved index until the budget is spent; returns the index and timing."""
    try:
        index = CodeIndex.load(index_dir)
    except Exception:
        index = CodeIndex(np.zeros((0, 0), dtype=np.float32), [], {}, str(encoder.run_dir), run_fingerprint(encoder.run_dir), "data")
    start_rows = len(index)
    started = time.perf_counter()
    vectors = [index.vectors] if len(index) else []
    done = len(index)
    while done < len(functions) and time.perf_counter() - started < budget_s:
        part = functions[done : done + chunk]
        out = encoder.run_heads([code for code, _, _ in part], ["search"]).search
        vectors.append(out)
        index.entries.extend({"file": source, "line": 0, "end_line": 0, "name": f"row{done + i}", "language": language,
                              "hash": ""} for i, (_, language, source) in enumerate(part))
        done += len(part)
        print(f"indexed {done} functions ({time.perf_counter() - started:.0f} s)", flush=True)
        index.vectors = np.concatenate(vectors)
        vectors = [index.vectors]
        index.save(index_dir)  # resumable
    seconds = time.perf_counter() - started
    embedded = len(index) - start_rows
    return index, {"functions_embedded_this_run": embedded, "seconds_this_run": round(seconds, 1),
                   "functions_per_s": round(embedded / seconds, 2) if embedded else None}


def tiled(vectors: np.ndarray, rows: int) -> np.ndarray:
    reps = -(-rows // len(vectors))
    return np.ascontiguousarray(np.tile(vectors, (reps, 1))[:rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--index-dir", type=Path, default=Path("runs/bench-index"), help="kept between runs (git-ignored)")
    parser.add_argument("--budget-min", type=float, default=30.0, help="indexing time budget of this invocation")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--index-threads", type=int, default=2)
    parser.add_argument("--sizes", default="10000,30000,100000,200000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("results/inference"))
    args = parser.parse_args()

    torch.set_num_threads(args.index_threads)
    encoder = SharedEncoder.from_run(args.run, batch_size=args.batch_size)
    encoder.cache = EmbeddingCache(max_rows=0)
    functions = real_functions(args.data)
    index, indexing = extend_index(encoder, functions, args.index_dir, args.budget_min * 60, args.chunk)
    real_rows = len(index)
    queries = real_queries(args.data, args.queries)
    result = {"command": command_line(), "run": str(args.run), "backbone": encoder.model.backbone.model.config.model_type,
              "max_len": encoder.max_len, "query_max_len": encoder.query_encoding().max_len, "bf16_autocast": encoder.bf16,
              "real_functions_available": len(functions), "real_functions_indexed": real_rows,
              "indexing": indexing | {"threads": args.index_threads, "batch_size": args.batch_size},
              "dim": int(index.vectors.shape[1]), "k": args.k, "queries": len(queries), "machine": machine(), "sizes": {}}
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {real_rows})
    for size in sizes:
        vectors = index.vectors[:size] if size <= real_rows else tiled(index.vectors, size)
        sized = CodeIndex(vectors, (index.entries * (-(-size // real_rows)))[:size])
        sized.half_matrix()  # made once when the server loads an index, not per query
        per_threads = {}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            per_threads[threads] = {}
            for prescore in ("float32", "float16"):
                with torch.inference_mode():
                    sized.search(encoder.embed_queries(queries[:3]), args.k, prescore)  # warm-up
                    total, encode_only, search_only = [], [], []
                    for query in queries:
                        t0 = time.perf_counter()
                        q = encoder.embed_queries([query])
                        t1 = time.perf_counter()
                        sized.search(q, args.k, prescore)
                        t2 = time.perf_counter()
                        total.append(t2 - t0)
                        encode_only.append(t1 - t0)
                        search_only.append(t2 - t1)
                per_threads[threads][prescore] = {"total": percentiles(total), "query_encoding": percentiles(encode_only),
                                                  "top_k": percentiles(search_only)}
                print(size, threads, prescore, per_threads[threads][prescore]["total"], flush=True)
        # do float16 pre-scoring and float32 return the same top-k?
        with torch.inference_mode():
            q = encoder.embed_queries(queries)
        exact, fast = sized.search(q, args.k, "float32"), sized.search(q, args.k, "float16")
        # rows can tie (tiled copies, near-equal scores), so compare the k scores, not row ids
        same = np.mean([np.allclose([e["score"] for e in a], [f["score"] for f in b], atol=1e-5) for a, b in zip(exact, fast)])
        result["sizes"][size] = {"tiled": size > real_rows, "by_threads": per_threads,
                                 "float16_same_top_k_as_float32": round(float(same), 4)}
    # measured scaling of the top-k step: a line through (rows, p50) at 1 thread
    rows = np.array(sizes, dtype=float)
    p50 = np.array([result["sizes"][s]["by_threads"][min(per_threads)]["float32"]["top_k"]["p50_ms"] for s in sizes])
    slope, intercept = np.polyfit(rows, p50, 1) if len(rows) > 1 else (0.0, float(p50[0]))
    result["top_k_scaling_1_thread"] = {"ms_per_100k_rows": round(float(slope) * 1e5, 3), "intercept_ms": round(float(intercept), 3)}
    write_outputs(args.out, "search_latency", result, markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    ix = result["indexing"]
    lines = [
        "# Search latency (query encoding included)",
        "",
        f"Command (from the repository root): `{result['command']}`",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared with other jobs; load average at start {m['load_average_at_start']}), "
        f"CPU flags {', '.join(m['cpu_flags'])}; torch {m['torch']}. Run {result['run']} ({result['backbone']}), code max_len "
        f"{result['max_len']}, query max_len {result['query_max_len']}, bf16 autocast {result['bf16_autocast']}; "
        f"{result['dim']}-d vectors, exact top-{result['k']} (one matrix product), {result['queries']} real queries one at a time.",
        "",
        f"Indexed {result['real_functions_indexed']} of {result['real_functions_available']} distinct real functions "
        f"(this invocation: {ix['functions_embedded_this_run']} in {ix['seconds_this_run']} s, {ix['functions_per_s']} functions/s "
        f"at {ix['threads']} threads). Larger sizes tile the real vectors (marked *tiled*).",
        "",
        "Pre-scoring: `float32` = one float32 matrix product over all rows (exact); `float16` = all rows scored with "
        "a float16 copy, the best 4k+32 re-scored in float32 (the default of `mtpeft search`/`serve`). *same top-k* = "
        "share of queries whose float16 top-k scores equal the float32 ones (within 1e-5).",
        "",
        "| index rows | threads | pre-scoring | total p50 / p95 (ms) | query encoding p50 (ms) | top-k p50 / p95 (ms) | same top-k |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, entry in result["sizes"].items():
        for threads, modes in entry["by_threads"].items():
            for prescore, r in modes.items():
                label = f"{int(size):,}" + (" (tiled)" if entry["tiled"] else "")
                same = entry["float16_same_top_k_as_float32"] if prescore == "float16" else ""
                lines.append(f"| {label} | {threads} | {prescore} | {r['total']['p50_ms']} / {r['total']['p95_ms']} | "
                             f"{r['query_encoding']['p50_ms']} | {r['top_k']['p50_ms']} / {r['top_k']['p95_ms']} | {same} |")
    s = result["top_k_scaling_1_thread"]
    lines += ["", f"Float32 top-k step at 1 thread grows by about {s['ms_per_100k_rows']} ms per 100,000 rows (least-squares line "
                  f"through the measured p50s, intercept {s['intercept_ms']} ms)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
