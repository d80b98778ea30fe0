"""One shared-module pass answering all four tasks vs four single-task adapters, one after another.

Both sides run the same code (``SharedEncoder.run_heads``) over the same real functions: the
shared model (one PEFT module + four heads) encodes each function once and applies every head;
each single-task model (its own adapter of the same shape + one head) encodes every function
again. The single-task adapters are freshly initialised, not trained: an adapter's trained values
do not change how long a pass takes. The embedding cache is off, so every pass is a real backbone
pass. Also: batch throughput of the shared pass, and p50/p95 latency for one function.

    nice -n 10 python benchmarks/shared_pass.py --data ../../shared/data --run runs/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, percentiles, real_functions, write_outputs  # noqa: E402

from mtpeft.inference.encoder import EmbeddingCache, SharedEncoder  # noqa: E402
from mtpeft.model.build import build_model  # noqa: E402
from mtpeft.recipes import load_run  # noqa: E402
from mtpeft.training.loop import use_bf16  # noqa: E402

TASKS = ("defect", "clone", "search", "flaky")


def encoder_for(tasks, model, config, batch_size: int) -> SharedEncoder:
    return SharedEncoder(tasks, model, config.backbone.max_len, batch_size, use_bf16(config.training),
                         cache=EmbeddingCache(max_rows=0))


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--run", type=Path, required=True, help="a run with the four heads (its config sets the backbone and max_len)")
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all functions; the best of each side is kept")
    parser.add_argument("--block", type=int, default=100, help="functions per interleaved block")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--batch-functions", type=int, default=256, help="functions per batch-size measurement")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("results/inference"))
    args = parser.parse_args()

    config, tasks, shared_model = load_run(args.run)
    missing = [t for t in TASKS if t not in tasks]
    if missing:
        raise SystemExit(f"the run lacks heads {missing}")
    functions = real_functions(args.data, args.functions, per_source=True)
    codes = [code for code, _, _ in functions]
    singles = {}
    for name in TASKS:
        model, _ = build_model(config, {name: tasks[name]})  # a fresh single-task adapter of the same shape
        singles[name] = encoder_for({name: tasks[name]}, model.eval(), config, args.batch_size)
    shared = encoder_for(tasks, shared_model, config, args.batch_size)

    result = {"command": command_line(), "run": str(args.run), "backbone": config.backbone.name,
              "method": config.method.name, "max_len": config.backbone.max_len, "bf16_autocast": shared.bf16,
              "functions": len(codes), "languages": {l: sum(f[1] == l for f in functions) for l in sorted({f[1] for f in functions})},
              "batch_size": args.batch_size, "block": args.block, "repeats": args.repeats, "machine": machine(), "by_threads": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            shared.run_heads(codes[:16])  # warm-up (allocator, kernels)
            for encoder in singles.values():
                encoder.run_heads(codes[:16])
            shared_times, single_times = [], []
            for _ in range(args.repeats):
                # interleaved in blocks (order alternating), so both sides see the same load of a shared machine
                shared_total = single_total = 0.0
                for b, start in enumerate(range(0, len(codes), args.block)):
                    block = codes[start : start + args.block]
                    one = lambda: timed(lambda: shared.run_heads(block))  # noqa: E731
                    four = lambda: sum(timed(lambda e=e, n=n: e.run_heads(block, [n])) for n, e in singles.items())  # noqa: E731
                    if b % 2 == 0:
                        shared_total += one()
                        single_total += four()
                    else:
                        single_total += four()
                        shared_total += one()
                shared_times.append(shared_total)
                single_times.append(single_total)
            # batch throughput of the shared pass
            subset = codes[: args.batch_functions]
            batches = {}
            for size in [int(b) for b in args.batch_sizes.split(",")]:
                shared.batch_size = size
                seconds = timed(lambda: shared.run_heads(subset))
                batches[size] = {"functions_per_s": round(len(subset) / seconds, 2), "seconds": round(seconds, 2)}
            shared.batch_size = args.batch_size
            # latency of one function: every head's answer (shared) vs four single-task passes
            sample = codes[: args.latency_samples]
            one_shared = [timed(lambda c=c: shared.run_heads([c])) for c in sample]
            one_four = [sum(timed(lambda c=c, e=e, n=n: e.run_heads([c], [n])) for n, e in singles.items()) for c in sample]
        best_shared, best_single = min(shared_times), min(single_times)
        result["by_threads"][threads] = {
            "shared_seconds": [round(t, 2) for t in shared_times],
            "four_adapters_seconds": [round(t, 2) for t in single_times],
            "shared_functions_per_s": round(len(codes) / best_shared, 2),
            "four_adapters_functions_per_s": round(len(codes) / best_single, 2),
            "speedup": round(best_single / best_shared, 2),
            "batch_throughput": batches,
            "latency_one_function_shared": percentiles(one_shared),
            "latency_one_function_four_adapters": percentiles(one_four),
        }
        print(threads, result["by_threads"][threads], flush=True)
    write_outputs(args.out, "shared_pass", result, markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# One shared pass for four tasks vs four single-task adapters",
        "",
        f"Command (from the repository root): `{result['command']}`",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared with other jobs; load average at start {m['load_average_at_start']}), "
        f"CPU flags {', '.join(m['cpu_flags'])}; torch {m['torch']}. Backbone {result['backbone']} + {result['method']}, "
        f"max_len {result['max_len']}, batch {result['batch_size']}, bf16 autocast {result['bf16_autocast']}.",
        f"{result['functions']} real functions ({', '.join(f'{k} {v}' for k, v in result['languages'].items())}) from the "
        "data folder (Devign, BigCloneBench, CoSQA, FlakeFlagger, CodeSearchNet-Ruby), the same for both sides; embedding cache off.",
        "The shared side is the trained run; the four single-task adapters are freshly initialised adapters of the same shape "
        f"(LoRA values do not change the cost of a pass). Sides interleaved in blocks of {result['block']} functions (order "
        "alternating per block) so both see the same machine load; best of the rounds per side.",
        "",
        "| threads | shared pass (fn/s) | four adapters (fn/s) | speed-up | one function, shared p50 / p95 (ms) | one function, four adapters p50 / p95 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for threads, r in result["by_threads"].items():
        a, b = r["latency_one_function_shared"], r["latency_one_function_four_adapters"]
        lines.append(f"| {threads} | {r['shared_functions_per_s']} | {r['four_adapters_functions_per_s']} | **{r['speedup']}×** | "
                     f"{a['p50_ms']} / {a['p95_ms']} | {b['p50_ms']} / {b['p95_ms']} |")
    lines += ["", "Batch throughput of the shared pass (functions/s):", "",
              "| threads | " + " | ".join(f"batch {b}" for b in next(iter(result["by_threads"].values()))["batch_throughput"]) + " |",
              "|---|" + "---|" * len(next(iter(result["by_threads"].values()))["batch_throughput"])]
    for threads, r in result["by_threads"].items():
        lines.append(f"| {threads} | " + " | ".join(str(v["functions_per_s"]) for v in r["batch_throughput"].values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
