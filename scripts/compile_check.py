"""Does ``training.compile`` train what eager training trains, for every PEFT method? Each method
trains a tiny random BERT on tiny data for a few steps, eagerly and compiled (dropout masks drawn
from eager's generator), and the trained weights (method and heads) are compared.

    python scripts/compile_check.py --out results/perf/compile/methods.json

A couple of minutes on 2 cores (most of it compiling). The test suite checks LoRA alone
(``test_training_with_a_compiled_encoder_matches_eager_training``); this covers the study's methods.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch._inductor.config as inductor
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny data and config of the test suite

from conftest import tiny_config, tiny_task_files  # noqa: E402

from mtpeft.config import resolve_config  # noqa: E402
from mtpeft.recipes import train  # noqa: E402

METHODS = ["lora", "serial_adapter", "parallel_adapter", "prefix", "full"]


def trained_weights(run_dir: Path) -> dict:
    """Every tensor of the run's best checkpoint, keyed by file and name."""
    return {f"{path.relative_to(run_dir)}:{key}": value
            for path in sorted((run_dir / "checkpoint").rglob("*.safetensors")) for key, value in load_file(str(path)).items()}


def compare(method: str, root: Path, files: dict, steps: int) -> dict:
    seconds, weights = {}, {}
    for compiled in (False, True):
        run_dir = root / f"{method}-{'compiled' if compiled else 'eager'}"
        config = tiny_config(files, run_dir, bf16=False, compile=compiled, epochs=1, steps_per_epoch=steps)
        config["method"] = {"name": method}
        start = time.perf_counter()
        train(resolve_config(config))
        seconds[compiled] = round(time.perf_counter() - start, 1)
        weights[compiled] = trained_weights(run_dir)
    eager, fast = weights[False], weights[True]
    same_names = eager.keys() == fast.keys()
    return {"method": method, "same_parameter_names": same_names, "tensors": len(eager),
            "max_abs_difference": max((eager[k] - fast[k]).abs().max().item() for k in eager) if same_names else None,
            "max_abs_weight": max(v.abs().max().item() for v in eager.values()),
            "eager_seconds": seconds[False], "compiled_seconds": seconds[True]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf" / "compile" / "methods.json")
    args = parser.parse_args()
    inductor.fallback_random = True  # inductor's own dropout generator would make the runs incomparable
    with tempfile.TemporaryDirectory() as tmp:
        files = tiny_task_files(Path(tmp) / "data")
        rows = [compare(m, Path(tmp), files, args.steps) for m in args.methods.split(",")]
    result = {"rows": rows, "command": "python scripts/compile_check.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['method']:<17} max |eager - compiled| {row['max_abs_difference']:.2e} over {row['tensors']} tensors "
              f"(largest weight {row['max_abs_weight']:.2f}); {row['eager_seconds']} s eager, {row['compiled_seconds']} s compiled")


if __name__ == "__main__":
    main()
