"""Where a training step's time goes: torch.profiler over a few steps of train_throughput's variants.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --data ../shared/data \
        --only "mtpeft defect, fp32;mtpeft defect, full fine-tuning, fp32" --out results/perf/lora_vs_full

Writes profile.md: per variant, the operators with the most self CPU time over ``--steps`` steps
(after one warm-up step), as torch.profiler prints them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput  # noqa: E402
from common import command_line, machine  # noqa: E402

VARIANTS = {"mtpeft defect, fp32": (train_throughput.FP32, "the recipe's LoRA", False)} | train_throughput.LORA_VS_FULL


def profile_table(step, steps: int, rows: int) -> str:
    step()  # warm-up (and compilation, for compiled variants)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default=";".join(VARIANTS), help="semicolon-separated variant names")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--budget", type=int, default=64, help="training examples loaded per task")
    args = parser.parse_args()
    train_throughput.DEVICE = torch.device("cpu")
    torch.manual_seed(0)
    facts = machine()
    lines = [f"# Training-step profile ({facts['cpu']}, {facts['torch_threads']} thread(s))", "", f"Command: `{command_line()}`", ""]
    for name in (n.strip() for n in args.only.split(";")):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {'; '.join(VARIANTS)}")
        overrides, note, compiled = VARIANTS[name]
        variant = train_throughput.mtpeft_variant(name, args.data, ["defect"], overrides, args.budget, note, compiled=compiled)
        table = profile_table(variant.step, args.steps, args.rows)
        lines += [f"## {name}: {args.steps} steps", "", "```", table, "```", ""]
        print(f"profiled: {name}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
