"""Wall-time estimates for ``mtpeft study --dry-run``, from the ledgers of earlier runs or a probe.

A rough, stated model (not a promise): for a cell of n tasks,

    seconds = train_examples * s_train + eval_examples * s_eval + fixed

- train_examples = n * epochs * (steps_per_epoch * batch_size, or max_train_per_task rounded up to
  whole batches): round-robin shows every task the same number of examples;
- s_train = train_and_validate seconds / training examples of the reference run (so its
  per-epoch validation is folded in);
- eval_examples = n * max_eval_per_task * k, k the sets evaluated after training per task (2,
  valid and test, in older ledgers' ``evaluate`` phase; 1, test only, in ``evaluate_test``: the
  valid numbers now come from training); s_eval = that phase's seconds / the examples it
  evaluated (data_report.json);
- an interrupted cell resumes from its last checkpoint: the examples it trained are subtracted;
- fixed = load_data + load_model + reload seconds of the reference run, plus the start-up of the
  cell's own ``mtpeft train`` process (imports, plots, baselines: outside the ledger's phases),
  timed once per dry run by starting ``python -c "import mtpeft.recipes"``.

A step's cost depends on the sequence length and the threads as much as on the method, so a
reference run matches a cell exactly only on (backbone, method, max_len, torch threads). Failing
that, in this order (each marked approximate, with what differs): another method of the same
backbone at the same max_len and threads; the same method at another max_len or thread count; any
run of the same backbone. The newest run wins within a tier. ``--probe-steps N`` trains the
multi-task cell of each (backbone, method) without an exact match for N steps on a capped
evaluation and uses its ledger instead.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from mtpeft.reporting import format_duration
from mtpeft.study.config import StudyConfig
from mtpeft.study.costs import whole_run_timed
from mtpeft.study.grid import Cell, cell_config, plan
from mtpeft.training.checkpoint import last_progress


@dataclass
class Rate:
    s_train: float  # seconds per training example (validation included)
    s_eval: float  # seconds per evaluated example
    fixed: float  # seconds of loading and reloading
    source: str  # the run it came from
    exact: bool = True  # same backbone, method, max_len and threads as the cell
    eval_splits: int = 2  # sets per task evaluated after training: valid + test, or test only
    backbone: str = ""
    method: str = ""
    max_len: int | None = None
    threads: int | None = None  # torch threads of the run (None: not in its ledger)


def _eval_examples(sizes: dict[str, Any], splits: tuple[str, ...] = ("valid", "test")) -> int:
    return sum(sum(v.values()) if isinstance(v, dict) else 0 for s in sizes.values() for k, v in s.items() if k in splits)


def rate_from_run(run_dir: Path) -> Rate | None:
    """The rate of one finished run directory, or None if it lacks what is needed."""
    try:
        ledger = json.loads((run_dir / "ledger.json").read_text(encoding="utf-8"))
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, yaml.YAMLError):
        return None
    if not whole_run_timed(ledger):
        return None  # its seconds cover only the last sitting, its examples the whole run
    wall = ledger.get("wall_seconds", {})
    examples = _trained_examples(run_dir, ledger, config)
    if not examples or "train_and_validate" not in wall:
        return None
    try:
        sizes = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8")).get("sizes", {})
    except (FileNotFoundError, json.JSONDecodeError):
        sizes = {}
    # newer runs evaluate only the test sets after training ("evaluate_test"); older ones both splits
    after = "evaluate_test" if "evaluate_test" in wall else "evaluate"
    evaluated = _eval_examples(sizes, ("test",) if after == "evaluate_test" else ("valid", "test"))
    rate = Rate(
        s_train=wall["train_and_validate"] / examples,
        s_eval=wall.get(after, 0.0) / evaluated if evaluated else 0.0,
        fixed=sum(wall.get(k, 0.0) for k in ("load_data", "load_model", "reload")),
        source=str(run_dir),
        eval_splits=1 if after == "evaluate_test" else 2,
        backbone=str(config["backbone"]["name"]),
        method=str(config["method"]["name"]),
        max_len=_int_or_none(config["backbone"].get("max_len")),
        threads=_int_or_none(ledger.get("torch_threads")),
    )
    return rate


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _trained_examples(run_dir: Path, ledger: dict[str, Any], config: dict[str, Any]) -> int:
    try:
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
        seen = history[-1].get("examples_seen", {}) if history else {}
        if seen:
            return int(sum(seen.values()))
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    return int(ledger.get("steps", 0)) * int(config.get("training", {}).get("batch_size", 16)) * len(ledger.get("tasks", []))


def collect_rates(folders: list[Path]) -> list[Rate]:
    """The rates of every finished run under the folders (ledger.json + config.yaml), oldest first."""
    runs = sorted({p.parent for folder in folders if folder.exists() for p in folder.rglob("ledger.json")},
                  key=lambda p: (p / "ledger.json").stat().st_mtime)
    return [rate for rate in map(rate_from_run, runs) if rate]


def train_examples(study: StudyConfig, n_tasks: int) -> int | None:
    b = study.budget
    base = study.base_data.get("training") or {}
    epochs = int(b.get("epochs") or base.get("epochs") or 3)
    batch = int(b.get("batch_size") or base.get("batch_size") or 16)
    if b.get("steps_per_epoch"):
        per_task = int(b["steps_per_epoch"]) * batch
    elif b.get("max_train_per_task"):
        per_task = math.ceil(int(b["max_train_per_task"]) / batch) * batch
    else:
        return None  # the whole training sets: sizes unknown without reading the data
    return n_tasks * epochs * per_task


def find_rate(rates: list[Rate], backbone: str, method: str, max_len: int | None = None,
              threads: int | None = None) -> Rate | None:
    """The reference rate for a cell: the newest run of the best tier (see the module's docstring).
    Anything short of an exact match comes back with ``exact=False``."""
    same_backbone = [r for r in rates if r.backbone == backbone]
    same_setting = [r for r in same_backbone if (r.max_len, r.threads) == (max_len, threads)]
    tiers = ([r for r in same_setting if r.method == method], same_setting,
             [r for r in same_backbone if r.method == method], same_backbone)
    for tier, candidates in enumerate(tiers):
        if candidates:
            return candidates[-1] if tier == 0 else replace(candidates[-1], exact=False)
    return None


def rate_difference(rate: Rate, method: str, max_len: int | None, threads: int | None) -> str:
    """What of the reference run differs from the cell, e.g. "lora, max_len 128, 2 threads"."""
    parts = [rate.method] if rate.method != method else []
    parts += [f"max_len {rate.max_len}"] if rate.max_len != max_len else []
    parts += [f"{rate.threads} thread{'s' if rate.threads != 1 else ''}"] if rate.threads != threads else []
    return ", ".join(parts)


def cell_max_len(study: StudyConfig) -> int | None:
    """The max_len every cell trains at: the study's budget, else the base config's."""
    value = study.budget.get("max_len") or (study.base_data.get("backbone") or {}).get("max_len")
    return _int_or_none(value)


def estimate_cell(study: StudyConfig, cell: Cell, rate: Rate | None, startup: float = 0.0,
                  trained: int = 0) -> float | None:
    """Seconds left for a cell; ``trained``: examples it trained before it was interrupted."""
    examples = train_examples(study, len(cell.tasks))
    if rate is None or examples is None:
        return None
    examples = max(0, examples - trained)
    cap = study.budget.get("max_eval_per_task") or 0
    return examples * rate.s_train + len(cell.tasks) * rate.eval_splits * cap * rate.s_eval + rate.fixed + startup


def startup_seconds() -> float:
    """Seconds a fresh Python process takes to import the training recipe (torch, transformers)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mtpeft.recipes"], check=False, capture_output=True)
    return time.perf_counter() - start


def probe_rates(study: StudyConfig, steps: int, train: Callable | None = None,
                missing: set[tuple[str, str]] | None = None, threads: int | None = None) -> list[Rate]:
    """Train each (backbone, method)'s multi-task cell for ``steps`` steps in a temporary folder,
    on ``threads`` torch threads (the cells'), so that the probe matches them exactly."""
    import torch

    if train is None:
        from mtpeft.recipes import train
    rates: list[Rate] = []
    cells = {(c.backbone, c.method): c for c in plan(study) if c.regime == "multi" and c.weighting == study.weighting}
    before = torch.get_num_threads()
    for key, cell in cells.items():
        if missing is not None and key not in missing:
            continue
        with tempfile.TemporaryDirectory(prefix="mtpeft-probe-") as tmp:
            extra = [("training.steps_per_epoch", steps), ("training.epochs", 1), ("training.max_valid_per_task", 16),
                     ("training.max_eval_per_task", 16), ("training.progress", False)]
            torch.set_num_threads(threads or before)
            try:
                train(cell_config(study, cell, Path(tmp), extra))
            finally:
                torch.set_num_threads(before)
            found = rate_from_run(cell.run_dir(Path(tmp)))
            if found:
                rates.append(replace(found, source=f"probe of {steps} steps"))
    return rates


def dry_run(study: StudyConfig, ledger_folders: list[Path], probe_steps: int = 0, train: Callable | None = None,
            startup: float | None = None, extra: list[tuple[str, Any]] = (),
            threads: int | None = None, workers: int = 1) -> tuple[str, float | None]:
    """The cells, their state and estimated wall time, as a text table, and the total.
    ``startup``: seconds per cell process (None: time one). ``threads``: the torch threads each
    cell will train on (None: this process's); ``workers``: cells trained at once. A finished
    cell whose config is no longer the study's (``extra``: the --set overrides) shows as ``stale``."""
    import torch

    from mtpeft.study.grid import cell_state, stale_changes

    startup = startup_seconds() if startup is None else startup
    threads = threads or torch.get_num_threads()
    max_len = cell_max_len(study)
    cells = plan(study)
    rates = collect_rates(ledger_folders)
    if probe_steps:
        wanted = {(c.backbone, c.method) for c in cells
                  if not (rate := find_rate(rates, c.backbone, c.method, max_len, threads)) or not rate.exact}
        rates += probe_rates(study, probe_steps, train, wanted, threads)
    lines = [f"{'cell':<44} {'state':<12} {'tasks':>5} {'estimate':>10}  from", "-" * 96]
    total, unknown, states = 0.0, 0, []
    for cell in cells:
        state = cell_state(cell.run_dir(study.output_dir))
        if stale_changes(study, cell, extra):
            state = "stale"  # trained again only with --rerun-stale; estimated as if it were
        states.append(state)
        rate = find_rate(rates, cell.backbone, cell.method, max_len, threads)
        trained = sum(last_progress(cell.run_dir(study.output_dir)).get("examples_seen", {}).values()) if state == "interrupted" else 0
        seconds = estimate_cell(study, cell, rate, startup, trained)
        if state == "done":
            shown = "done"
        elif seconds is None:
            shown, unknown = "?", unknown + 1
        else:
            total += seconds
            shown = format_duration(seconds) + ("" if rate.exact else "~")
        source = "no ledger (use --probe-steps N)"
        if rate:
            differs = rate_difference(rate, cell.method, max_len, threads)
            source = rate.source + (f" ({differs})" if differs else "")
        lines.append(f"{cell.path:<44} {state:<12} {len(cell.tasks):>5} {shown:>10}  {source}")
    todo, stale = sum(1 for s in states if s not in ("done", "stale")), states.count("stale")
    lines.append(f"{len(cells)} cells, {todo} to run" + (f", {stale} stale (--rerun-stale)" if stale else "")
                 + f"; estimated {format_duration(total)} for those with an estimate"
                 + (f" (about {format_duration(total / workers)} of wall time on {workers} workers)" if workers > 1 else "")
                 + (f"; {unknown} without one" if unknown else "") + f" (each includes {startup:.0f} s of process start-up)"
                 + f"; cells train at max_len {max_len} on {threads} torch thread{'s' if threads != 1 else ''}"
                 + "  (~: from a run that differs as shown in brackets)")
    return "\n".join(lines), (None if unknown else total)
