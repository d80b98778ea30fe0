"""The study's cells and running them: each cell is an ordinary run directory trained by the
existing recipe (``mtpeft.recipes.train``), with the same budget for every cell.

Layout: ``STUDY/[BACKBONE/]METHOD/single/TASK``, ``.../multi/WEIGHTING``, ``.../pairs/TASK1+TASK2``.
Each cell holds ``study_cell.json`` (running / done / failed, seconds, error). The grid is
resumable: a cell with ``metrics.json`` and ``ledger.json`` is done and skipped; a cell that was
interrupted (killed, machine stopped) or failed is run again on the next call: resumed from its
``last/`` checkpoint (``mtpeft train --resume``; written when the study sets
``training.save_every_steps`` or ``save_every_minutes``) when it has one and its config is still the
cell's, otherwise started again from scratch. A failed cell is recorded (status + ``error.log``)
and the other cells go on. ``workers`` > 1 trains that many cells at once, each in its own process
with an equal share of the cores.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from mtpeft.config import RunConfig, from_dict, load_yaml, resolve_config, save_config, select_tasks
from mtpeft.errors import MtpeftError
from mtpeft.reporting import format_duration
from mtpeft.runs import write_json
from mtpeft.study.config import BUDGET_KEYS, StudyConfig

STATUS = "study_cell.json"


@dataclass(frozen=True)
class Cell:
    backbone: str
    method: str
    regime: str  # single | multi | pairs
    tasks: tuple[str, ...]
    weighting: str
    path: str  # relative to the study folder

    def run_dir(self, root: Path) -> Path:
        return root / self.path


def _safe(name: str) -> str:
    return name.replace("/", "--").replace(":", "-")


def plan(study: StudyConfig) -> list[Cell]:
    """Every cell of the grid, in the order they run: the cells of the headline comparison first
    (each method's single-task cells, then its multi-task cell with the default weighting), then
    the pairs, then the other loss weightings. A study cut short still has its central table."""
    headline: list[Cell] = []
    pairs: list[Cell] = []
    weightings: list[Cell] = []
    many_backbones = len(study.backbones) > 1
    for backbone, method in itertools.product(study.backbones, study.methods):
        prefix = f"{_safe(backbone)}/{method}" if many_backbones else method
        if "single" in study.regimes:
            headline += [Cell(backbone, method, "single", (t,), study.weighting, f"{prefix}/single/{t}") for t in study.tasks]
        if "multi" in study.regimes and len(study.tasks) > 1:
            names = [study.weighting] + ([w for w in study.weightings if w != study.weighting] if method in study.weighting_methods else [])
            multi = [Cell(backbone, method, "multi", tuple(study.tasks), w, f"{prefix}/multi/{w}") for w in names]
            headline.append(multi[0])
            weightings += multi[1:]
        if "pairs" in study.regimes and method in study.pair_methods and len(study.tasks) > 2:
            pairs += [Cell(backbone, method, "pairs", pair, study.weighting, f"{prefix}/pairs/{'+'.join(pair)}")
                      for pair in itertools.combinations(study.tasks, 2)]
    return headline + pairs + weightings


def cell_overrides(study: StudyConfig, cell: Cell, root: Path, extra: list[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The run-config overrides of one cell: its backbone, method, weighting, the budget, output."""
    overrides: list[tuple[str, Any]] = [("backbone.name", cell.backbone), ("method.name", cell.method)]
    overrides += [(f"method.{k}", v) for k, v in study.methods[cell.method].items()]
    overrides.append(("training.weighting", cell.weighting))
    options = study.weightings.get(cell.weighting, {}) if cell.regime == "multi" else {}
    overrides += [(f"training.weighting_options.{k}", v) for k, v in options.items()]
    overrides += [(BUDGET_KEYS[k], v) for k, v in study.budget.items()]
    overrides += list(study.overrides.items()) + list(extra)
    overrides.append(("output_dir", str(cell.run_dir(root))))
    return overrides


def cell_config(study: StudyConfig, cell: Cell, root: Path, extra: list[tuple[str, Any]] = ()) -> RunConfig:
    data = select_tasks(study.base_data, ",".join(cell.tasks))
    if (data.get("method") or {}).get("name") != cell.method:
        data = data | {"method": {"name": cell.method}}  # the base's options belong to its own method
    if (data.get("training") or {}).get("weighting") != cell.weighting:
        data = data | {"training": {k: v for k, v in (data.get("training") or {}).items() if k != "weighting_options"}}
    return resolve_config(data, cell_overrides(study, cell, root, extra))


def cell_state(run_dir: Path) -> str:
    """done (metrics.json and ledger.json written: the recipe's last outputs), failed, interrupted
    (started, never finished: killed), or pending."""
    if (run_dir / "metrics.json").exists() and (run_dir / "ledger.json").exists():
        return "done"
    status = read_status(run_dir)
    if status.get("state") == "failed":
        return "failed"
    return "interrupted" if run_dir.exists() and any(run_dir.iterdir()) else "pending"


def stale_changes(study: StudyConfig, cell: Cell, extra: list[tuple[str, Any]] = ()) -> list[str]:
    """The keys at which a finished cell's saved config differs from what the study asks of it now
    (empty when it is not finished or still the same): the study config, its base or ``--set``
    changed since the cell ran. Where the data lives (``vars``) does not count (``RESUME_FREE_KEYS``):
    a study folder may move to another machine."""
    from mtpeft.recipes import config_differences

    run_dir = cell.run_dir(study.output_dir)
    if cell_state(run_dir) != "done":
        return []
    try:
        saved = from_dict(load_yaml(run_dir / "config.yaml")).to_dict()
        wanted = cell_config(study, cell, study.output_dir, extra).to_dict()
    except (MtpeftError, FileNotFoundError):
        return []  # a cell that cannot be configured fails when it runs; an old run without config.yaml stays
    return config_differences(saved, wanted)


def refuse_stale(study: StudyConfig, cells: list[Cell], extra: list[tuple[str, Any]] = ()) -> None:
    """Finished cells trained with another config would sit in one report beside the new ones."""
    stale = {c.path: changes for c in cells if (changes := stale_changes(study, c, extra))}
    if stale:
        shown = "; ".join(f"{path} ({', '.join(changes[:3])})" for path, changes in list(stale.items())[:5])
        raise MtpeftError(f"{len(stale)} finished cell(s) of {study.output_dir} were trained with another config: {shown}; "
                          "restore the study config, or pass --rerun-stale to train them again")


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_status(run_dir: Path, **values: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATUS, read_status(run_dir) | values)


def resumable(run_dir: Path, config: RunConfig) -> bool:
    """A ``last/`` checkpoint is there and the run's saved config is still the cell's (a study
    changed between sittings starts the cell again rather than mixing two configs)."""
    from mtpeft.recipes import resume_config
    from mtpeft.training.checkpoint import last_dir

    if last_dir(run_dir) is None:
        return False
    try:
        resume_config(run_dir, config)
    except MtpeftError:
        return False
    return True


def _clear_partial(run_dir: Path) -> None:
    """A cell that cannot resume starts again from scratch: no file of the earlier attempt stays."""
    for path in run_dir.iterdir():
        if path.name in (STATUS, "error.log"):
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_cell(study: StudyConfig, cell: Cell, root: Path, train: Callable[..., Any],
             extra: list[tuple[str, Any]] = (), command: str = "", rerun_stale: bool = False) -> str:
    """``train(config, command, resume=...)`` trains one cell (in this process or another);
    ``rerun_stale`` trains a finished cell again when its config is no longer the study's."""
    run_dir = cell.run_dir(root)
    state = cell_state(run_dir)
    if state == "done" and not (rerun_stale and stale_changes(study, cell, extra)):
        return "skipped"
    try:
        config = cell_config(study, cell, root, extra)
    except MtpeftError as error:  # e.g. options one method does not take: this cell fails, not the grid
        _write_status(run_dir, state="failed", cell=cell.path, error=f"MtpeftError: {error}")
        return "failed"
    resume = state in ("interrupted", "failed") and resumable(run_dir, config)
    if run_dir.exists() and not resume:
        _clear_partial(run_dir)
    attempts = read_status(run_dir).get("attempts", 0) + 1
    _write_status(run_dir, state="running", cell=cell.path, attempts=attempts, previous=state, resumed=resume,
                  started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), error=None)
    start = time.perf_counter()
    try:
        train(config, command, resume=resume)
    except Exception as error:  # noqa: BLE001  (one failed cell must not stop the grid)
        message = str(error) or type(error).__name__
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        _write_status(run_dir, state="failed", error=f"{type(error).__name__}: {message}", seconds=round(time.perf_counter() - start, 1))
        return "failed"
    finally:
        gc.collect()
    _write_status(run_dir, state="done", seconds=round(time.perf_counter() - start, 1))
    return "done"


def in_process_train(config: RunConfig, command: str = "", resume: bool = False) -> Any:
    """Train one cell in this process (tests, notebooks)."""
    from mtpeft.recipes import resume_config, train

    if resume:
        return train(resume_config(Path(config.output_dir), config), command, resume=True)
    return train(config, command)


# the cell processes alive now, so that stopping the grid can stop each of them once
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
INTERRUPTED_EXIT = 130  # what 'mtpeft train' returns when a signal stopped it (after writing last/)


def subprocess_train(config: RunConfig, command: str = "", resume: bool = False, threads: int | None = None) -> None:
    """Train one cell in its own ``mtpeft train`` process: its ledger's peak RSS is its own (not the
    grid's high-water mark), and its memory is returned when it ends. Output: ``CELL/train.log``
    (appended to when the cell resumes). ``threads`` sets the process's torch/OpenMP threads.

    The process runs in its own session, so a Ctrl-C meant for the study reaches the study alone,
    which passes it on exactly once (``interrupt_cells``): a second signal would stop the cell at
    once, without writing ``last/``. A cell stopped that way raises KeyboardInterrupt here."""
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cell_yaml = run_dir / "cell_config.yaml"
    if resume:
        args = ["train", "--resume", str(run_dir)]  # the run's own saved config (checked equal to the cell's)
    else:
        save_config(config, cell_yaml)
        args = ["train", "--config", str(cell_yaml)]
    log_path = run_dir / "train.log"
    env = os.environ | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
    with open(log_path, "a" if resume else "w", encoding="utf-8") as log:
        with _RUNNING_LOCK:  # (an interrupt cannot fall between the start and the registration)
            process = subprocess.Popen([sys.executable, "-m", "mtpeft", *args], stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
            _RUNNING.add(process)
        try:
            rc = process.wait()
        except KeyboardInterrupt:  # waited on in the main thread (a sweep script): pass the interrupt on
            stop_gracefully(process)
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(process)
    if rc == INTERRUPTED_EXIT:
        raise KeyboardInterrupt(f"{run_dir} was interrupted")
    if rc != 0:
        lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        raise RuntimeError(f"'mtpeft train' exited with {rc}: {lines[-1] if lines else 'no output'} (see {log_path})")


def stop_gracefully(process: subprocess.Popen) -> None:
    """SIGINT once (the cell finishes its step and writes ``last/``) and wait for it; a second
    interrupt while waiting passes a second SIGINT on, which stops it at once."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        raise


def interrupt_cells() -> int:
    """Ask every running cell process to stop after its current step (it writes ``last/`` first).
    Returns how many were asked."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        process.send_signal(signal.SIGINT)
    return len(running)


def threads_per_worker(workers: int) -> int | None:
    """Each of ``workers`` concurrent cells gets an equal share of this process's cores; None (the
    process's own setting) for one worker, or where the user has set OMP_NUM_THREADS."""
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def run_grid(study: StudyConfig, train: Callable[..., Any] | None = None,
             extra: list[tuple[str, Any]] = (), command: str = "", only: str | None = None,
             log: Callable[[str], None] = print, workers: int = 1, rerun_stale: bool = False) -> dict[str, str]:
    """Run every cell not done yet; returns cell path -> done / skipped / failed, in plan order.
    ``train`` defaults to one ``mtpeft train`` process per cell (tests pass the in-process recipe,
    which must keep ``workers`` at 1: torch's random state is global). ``workers`` cells train at
    once, started in plan order.

    Interrupted (Ctrl-C, or SIGTERM through the CLI), the grid starts no new cell, asks the running
    ones to stop after their current step and waits for them; a second interrupt stops them at
    once. The interrupted cells resume from their ``last/`` on the next call.

    Finished cells whose config is no longer the study's (``stale_changes``) stop the grid before
    it trains anything, unless ``rerun_stale``: then they are trained again from scratch."""
    workers = max(1, workers)
    train = train or partial(subprocess_train, threads=threads_per_worker(workers))
    root = study.output_dir
    root.mkdir(parents=True, exist_ok=True)
    every = plan(study)
    cells = [c for c in every if not only or only in c.path]
    if not rerun_stale:
        refuse_stale(study, cells, extra)
    write_json(root / "study.json", study_summary(study, every))
    if command:
        (root / "command.txt").write_text(command + "\n", encoding="utf-8")
    outcome: dict[str, str] = {}
    lock = threading.Lock()  # study.json and the log are shared by the workers

    def run_one(i: int, cell: Cell) -> None:
        with lock:
            log(f"[{i}/{len(cells)}] {cell.path}: {cell_state(cell.run_dir(root))}")
        state = run_cell(study, cell, root, train, extra, command, rerun_stale)
        with lock:
            outcome[cell.path] = state
            summary = study_summary(study, every)  # (reads every cell's state once)
            if state == "failed":
                log(f"[{i}/{len(cells)}] {cell.path}: FAILED: {read_status(cell.run_dir(root)).get('error')}")
            elif state == "done":  # a long unattended grid: how far it is, from its log alone
                finished = sum(c["state"] == "done" for c in summary["cells"])
                seconds = read_status(cell.run_dir(root)).get("seconds", 0)
                log(f"[{i}/{len(cells)}] {cell.path}: done in {format_duration(seconds)}; {finished} of {len(every)} cells finished")
            write_json(root / "study.json", summary)

    queue = list(enumerate(cells, 1))
    running: set[Future] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    running.add(pool.submit(run_one, *queue.pop(0)))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # a cell's KeyboardInterrupt (or the grid's own error) stops the grid
        except BaseException:
            if interrupt_cells():
                log("stopping: the running cells finish their current step and write last/ (interrupt again to stop them at once)")
            try:
                wait(running)
            except KeyboardInterrupt:
                interrupt_cells()
            raise
    return {cell.path: outcome[cell.path] for cell in cells}


def study_summary(study: StudyConfig, cells: list[Cell]) -> dict[str, Any]:
    """study.json: what the report needs to read the folder back (no absolute machine paths)."""
    root = study.output_dir
    return {
        "tasks": study.tasks,
        "backbones": study.backbones,
        "methods": list(study.methods),
        "weighting": study.weighting,
        "weightings": list(study.weightings),
        "budget": study.budget,
        "base": study.base.name,
        "cells": [{"path": c.path, "backbone": c.backbone, "method": c.method, "regime": c.regime,
                   "tasks": list(c.tasks), "weighting": c.weighting, "state": cell_state(c.run_dir(root))} for c in cells],
    }


def failed_cells(outcome: dict[str, str]) -> list[str]:
    return [path for path, state in outcome.items() if state == "failed"]


def raise_if_failed(root: Path, outcome: dict[str, str]) -> None:
    failed = failed_cells(outcome)
    if failed:
        raise MtpeftError(f"{len(failed)} of {len(outcome)} cell(s) failed (see study_cell.json and error.log in each): "
                          + ", ".join(failed) + f"; run the study again to retry them ({root})")
