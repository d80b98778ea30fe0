"""Recipe sweeps (issue 8): short runs that differ from the base recipe in one knob each, scored on
validation only, with one table of the results.

    python scripts/recipe_sweep.py configs/recipe_sweep.yaml --data ../shared/data [--only defect/]

Each variant is an ordinary run directory (``OUTPUT/VARIANT``) trained by ``mtpeft train`` in its
own process (the study's ``subprocess_train``: config in ``cell_config.yaml``, log in
``train.log``); a variant whose ``metrics.json`` exists is skipped, and one stopped after writing
its ``last/`` checkpoint (``training.save_every_minutes`` in the sweep's ``set``) resumes, so a sweep
can span sittings. ``--only`` picks variants by substring, so two sweeps can share a machine
(``--threads 1`` each). The table (``recipe.md`` + ``recipe.json``) lists each variant's best
validation metrics (the checkpoint-selection rule of every run), the epoch/step it was reached, the
trivial baseline on the same validation set and the training wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mtpeft.config import load_yaml, resolve_config, save_config, select_tasks
from mtpeft.errors import MtpeftError
from mtpeft.fileio import atomic_write_text
from mtpeft.study.grid import subprocess_train
from mtpeft.training.checkpoint import last_dir


def variant_overrides(sweep: dict[str, Any], spec: dict[str, Any], run_dir: Path, data: str) -> list[tuple[str, Any]]:
    overrides = list((sweep.get("budget") or {}).items()) + list((sweep.get("set") or {}).items())
    overrides += list((spec.get("set") or {}).items())
    return overrides + [("vars.data", data), ("output_dir", str(run_dir)), ("training.progress", False)]


def run_variant(sweep_path: Path, sweep: dict[str, Any], name: str, root: Path, data: str) -> str:
    """Train one variant in its own ``mtpeft train`` process (the study's cell runner)."""
    run_dir = root / name
    if (run_dir / "metrics.json").exists():
        return "skipped"
    # a variant stopped after writing its last/ checkpoint continues (with its own saved config);
    # one stopped before that starts again from an empty folder
    resume = last_dir(run_dir) is not None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    base = load_yaml(sweep_path.parent / sweep["base"])
    spec = sweep["variants"][name] or {}
    config = resolve_config(select_tasks(base, ",".join(spec.get("tasks") or [])), variant_overrides(sweep, spec, run_dir, data))
    try:
        subprocess_train(config, resume=resume)
    except RuntimeError as error:
        return f"failed ({error})"
    return "resumed, done" if resume else "done"


def rescore(run_dir: Path) -> None:
    """Recompute a finished variant's validation metrics and trivial baselines with this code (after
    a change of the metric code); the test sets are not read."""
    from mtpeft.evaluation.trivial import trivial_baselines
    from mtpeft.recipes import load_data, load_run, split_metrics
    from mtpeft.runs import write_json

    config, tasks, model = load_run(run_dir)
    data, _ = load_data(config, tasks, with_train=False)
    write_json(run_dir / "metrics.json", split_metrics(config, tasks, model, data, ("valid",)))
    write_json(run_dir / "trivial_baselines.json", {"valid": trivial_baselines(tasks, {n: d.valid for n, d in data.items()})})


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def standard_error(metric: str, value: float, n: int | None) -> float | None:
    """The binomial standard error of an accuracy (other metrics: none given)."""
    if metric != "accuracy" or not n:
        return None
    return math.sqrt(value * (1 - value) / n)


def variant_rows(root: Path, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        run_dir = root / name
        metrics, ledger, trivial = (_read(run_dir / f) for f in ("metrics.json", "ledger.json", "trivial_baselines.json"))
        report = _read(run_dir / "data_report.json") or {}
        if not metrics:
            rows.append({"variant": name, "state": "not run" if not run_dir.exists() else "unfinished"})
            continue
        for set_name, values in metrics["valid"].items():
            headline = next(iter(values))  # each task lists its headline metric first
            sizes = (report.get("sizes") or {}).get(set_name.split("/")[0], {})
            n = (sizes.get("valid") or {}).get(set_name) if isinstance(sizes.get("valid"), dict) else sizes.get("valid")
            value = values[headline]
            rows.append({"variant": name, "set": set_name, "metric": headline, "value": value, "n": n,
                         "se": standard_error(headline, value, n), "others": {k: v for k, v in values.items() if k != headline},
                         "trivial": ((trivial or {}).get("valid") or {}).get(set_name, {}).get(headline),
                         "best_epoch": ledger.get("best_epoch"), "steps": ledger.get("steps"),
                         "train_seconds": ledger.get("train_seconds"), "tokens_per_second": ledger.get("train_tokens_per_second")})
    return rows


def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | valid set | metric | value | ± SE | n | trivial | other metrics | steps | train s | tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "set" not in r:
            lines.append(f"| {r['variant']} | {r['state']} |  |  |  |  |  |  |  |  |  |")
            continue
        others = ", ".join(f"{k} {_num(v)}" for k, v in r["others"].items() if isinstance(v, (int, float)))
        lines.append(f"| {r['variant']} | {r['set']} | {r['metric']} | {_num(r['value'])} | {_num(r['se'])} | {_num(r['n'])} | "
                     f"{_num(r['trivial'])} | {others} | {_num(r['steps'])} | {_num(r['train_seconds'], 0)} | {_num(r['tokens_per_second'], 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="sweep YAML (configs/recipe_sweep.yaml)")
    parser.add_argument("--data", default="../shared/data", help="root of the full data (${data})")
    parser.add_argument("--only", default="", help="comma-separated substrings: run only the variants that contain one")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--table-only", action="store_true", help="write the table from the finished variants")
    parser.add_argument("--rescore", action="store_true",
                        help="first recompute the finished variants' validation metrics with this code (no training)")
    args = parser.parse_args()
    try:
        sweep = load_yaml(args.sweep)
        root = Path(sweep.get("output_dir", "results/recipe"))
        names = list(sweep.get("variants") or {})
        wanted = [n for n in names if not args.only or any(s and s in n for s in args.only.split(","))]
        for name in wanted if args.rescore else []:
            if (root / name / "metrics.json").exists():
                rescore(root / name)
                print(f"{name}: rescored", flush=True)
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by each variant's process
        for name in [] if args.table_only or args.rescore else wanted:
            print(f"{name}: {run_variant(args.sweep, sweep, name, root, args.data)}", flush=True)
        rows = variant_rows(root, names)
    except MtpeftError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt as stop:  # the variant wrote its last/ (a signal stops it after a step)
        sys.exit(f"interrupted: {stop or 'a variant was stopped'}; run the same command again to resume")
    command = "python scripts/recipe_sweep.py " + " ".join(sys.argv[1:])
    atomic_write_text(root / "recipe.json", json.dumps(rows, indent=1) + "\n")
    notes = root / "notes.md"
    atomic_write_text(root / "recipe.md", f"# Recipe sweeps (validation only)\n\nCommand: `{command}`\n\n" + table(rows)
                      + (f"\n{notes.read_text(encoding='utf-8')}" if notes.exists() else ""))
    print(table(rows))


if __name__ == "__main__":
    main()
