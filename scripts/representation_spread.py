"""Has a run's shared representation collapsed? How spread its pooled states and a binary head's
probabilities are on validation examples, beside the same backbone with the PEFT module switched off.

    python scripts/representation_spread.py results/recipe/defect/head-256 results/recipe/defect/long-lr1e-3 \
        --task defect --data ../shared/data --valid 300 --out results/recipe/spread.json

A collapsed model maps every function to (almost) one vector: a mean pairwise cosine near 1 and a
head that answers one probability. Training warns on the second during validation
(``training/loop.py``); this script measures both on a finished run's best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch

from mtpeft.errors import MtpeftError
from mtpeft.evaluation.evaluate import output_spread
from mtpeft.recipes import eval_context, load_data, load_run
from mtpeft.tasks.base import pooled_states, stratified_subsample


def spread(states: torch.Tensor) -> dict[str, float]:
    """Mean pairwise cosine of the rows, mean per-dimension standard deviation, mean norm."""
    x = states.double().numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    n = len(x)
    cosines = unit @ unit.T
    return {"mean_pairwise_cosine": round(float((cosines.sum() - n) / (n * n - n)), 5),
            "dimension_std": round(float(x.std(axis=0).mean()), 5),
            "mean_norm": round(float(np.linalg.norm(x, axis=1).mean()), 4)}


def adapter_off(model: torch.nn.Module) -> ContextManager[Any] | None:
    """peft's ``disable_adapter`` context (the frozen backbone), or None for other methods."""
    peft_model = next((m for m in model.modules() if hasattr(m, "disable_adapter")), None)
    return None if peft_model is None else peft_model.disable_adapter()


def measure(run_dir: Path, task_name: str, data_root: str, limit: int) -> dict[str, Any]:
    config, tasks, model = load_run(run_dir, data_root, device="cpu")
    if task_name not in tasks:
        raise MtpeftError(f"{run_dir}: the run has no {task_name} head")
    task = tasks[task_name]
    data, _ = load_data(config, {task_name: task}, with_train=False)
    valid = stratified_subsample(data[task_name].valid[0].data, limit, 0, lambda e: e.label)
    texts = [e.text for e in valid]
    ctx = eval_context(config, model.backbone.tokenizer)
    encoding = task.encoding(config.backbone.max_len)
    model.eval()
    with torch.no_grad():
        tuned = pooled_states(model, texts, ctx, encoding, "tuned").float()
        probabilities = torch.sigmoid(model.heads[task_name](tuned)).reshape(-1).numpy()
        off = adapter_off(model)
        frozen = None
        if off is not None:
            with off:
                frozen = pooled_states(model, texts, ctx, encoding, "frozen").float()
    return {"run": str(run_dir), "task": task_name, "examples": len(texts), "trained": spread(tuned),
            "frozen_backbone": None if frozen is None else spread(frozen),
            "probabilities": {"min": round(float(probabilities.min()), 4), "max": round(float(probabilities.max()), 4),
                              "std": round(output_spread(probabilities), 5)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--task", default="defect", help="a binary task the runs trained (defect, flaky)")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--valid", type=int, default=300, help="validation examples (label-stratified sample)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    results = []
    for run in args.runs:
        try:
            results.append(measure(run, args.task, args.data, args.valid))
        except MtpeftError as error:
            sys.exit(f"error: {error}")
        print(json.dumps(results[-1]))
    if args.out:
        command = "python scripts/representation_spread.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps({"command": command, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
