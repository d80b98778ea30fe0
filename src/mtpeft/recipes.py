"""Thin recipes over the components: train, evaluate a run directory, predict with a run.

Run directory layout::

    config.yaml        the resolved configuration        metrics.json  valid + test metrics
    checkpoint/        adapter/ (method's own format), heads.safetensors, state.json
    ledger.json        parameters, adapter bytes, wall seconds, peak RSS, tokens, tokens/s
    history.json       per-epoch validation           tb/          TensorBoard events
    README.md          model card                      data_report.json  skipped records, sizes
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError

from mtpeft.config import RunConfig, from_dict, load_yaml, save_config
from mtpeft.data.jsonl import SkipCounter
from mtpeft.tasks.loading import describe, load_task_data
from mtpeft.device import resolve_device
from mtpeft.errors import MtpeftError
from mtpeft.fileio import atomic_write_text
from mtpeft.evaluation.evaluate import evaluate_sets
from mtpeft.evaluation.trivial import trivial_baselines
from mtpeft.model.build import build_model
from mtpeft.model.multitask import MultiTaskModel
from mtpeft.plots import learning_curve, loss_weights_plot
from mtpeft.runs import Ledger, directory_bytes, model_card, write_json
from mtpeft.tasks import EvalContext, Task, TaskData, build_task
from mtpeft.training.checkpoint import (ADAPTER, HEADS, checkpoint_dir, load_heads, load_last, load_state, remove_last,
                                       save_checkpoint, save_last)
from mtpeft.training import distributed
from mtpeft.training.loop import Trainer, seed_everything, use_bf16
from mtpeft.training.weightings import build_weighting


def build_tasks(config: RunConfig) -> dict[str, Task]:
    if not config.tasks:
        raise MtpeftError("no tasks configured")
    return {name: build_task(name, spec.options) for name, spec in config.tasks.items()}


def load_data(config: RunConfig, tasks: dict[str, Task], with_train: bool) -> tuple[dict[str, TaskData], SkipCounter]:
    skips = SkipCounter(enabled=config.training.skip_bad_records)
    data = {name: load_task_data(task, config.tasks[name], config.training, skips, with_train) for name, task in tasks.items()}
    if skips.total:
        print(f"skipped {skips.total} malformed record(s): {skips.counts}", file=sys.stderr)
    return data, skips


def eval_context(config: RunConfig, tokenizer: Any) -> EvalContext:
    t = config.training
    device = resolve_device(t.device)
    # progress bars only on a terminal: never in logs, CI output or redirected files
    return EvalContext(tokenizer, config.backbone.max_len, t.eval_batch_size, use_bf16(t, device),
                       t.progress and sys.stderr.isatty(), device)


def mark_legacy_joint_clone(config: RunConfig, ckpt: Path) -> None:
    """Runs saved before ``pair_encoding`` existed encoded clone pairs jointly, with a one-input
    head (``heads.clone.net.*``); their config does not say so, and the new default is separate."""
    spec = config.tasks.get("clone")
    if spec is None or "pair_encoding" in spec.options:
        return
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / HEADS), framework="pt") as handle:
            legacy = any(key.startswith("heads.clone.net.") for key in handle.keys())
    except (SafetensorError, OSError):
        return  # a damaged heads file: loading the heads reports it
    if legacy:
        spec.options["pair_encoding"] = "joint"


def run_config(run_dir: Path, ckpt: Path, data_root: str | None = None) -> RunConfig:
    """The configuration the checkpoint was trained with: the copy saved inside the checkpoint
    (atomically with the weights); config.yaml beside it only for runs that predate that copy."""
    state = load_state(ckpt)
    if isinstance(state.get("config"), dict):
        return from_dict(state["config"], data_root)
    if not (run_dir / "config.yaml").exists():
        raise MtpeftError(f"{run_dir}: not a run directory (no config.yaml)")
    return from_dict(load_yaml(run_dir / "config.yaml"), data_root)


def load_run(run_dir: Path, data_root: str | None = None, device: str | None = None) -> tuple[RunConfig, dict[str, Task], MultiTaskModel]:
    """Rebuild a trained model from its run directory (backbone reloaded, method + heads attached).

    ``data_root`` replaces the ``${data}`` folder the run was trained with (a copied run folder);
    ``device`` (default auto) is where the model runs here, whatever the run was trained on."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MtpeftError(f"{run_dir}: not a run directory")
    ckpt = checkpoint_dir(run_dir)
    try:
        config = run_config(run_dir, ckpt, data_root)
    except (ValueError, OSError) as exc:  # a damaged state.json
        raise MtpeftError(f"{run_dir}: damaged checkpoint ({ckpt.name}/state.json: {exc})") from None
    mark_legacy_joint_clone(config, ckpt)
    config.training.device = device or "auto"
    target = resolve_device(config.training.device)
    tasks = build_tasks(config)
    if not (ckpt / ADAPTER).is_dir():
        raise MtpeftError(f"{run_dir}: damaged checkpoint ({ckpt.name}/{ADAPTER}/ is missing)")
    try:
        model, _ = build_model(config, tasks, adapter_dir=ckpt / ADAPTER)
        load_heads(ckpt, model, {"loss_weighting": build_weighting(config.training.weighting, list(tasks), config.training.weighting_options)})
    except MtpeftError:
        raise
    except (SafetensorError, ValueError, RuntimeError, OSError, KeyError) as exc:
        # a truncated file, a missing adapter, heads of other tasks or shapes: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MtpeftError(f"{run_dir}: damaged checkpoint or one that does not match its config ({first})") from None
    state = load_state(ckpt)
    for name, task in tasks.items():
        task.load_state(state.get("tasks", {}).get(name, {}))
    model.to(target)
    model.eval()
    return config, tasks, model


# what ``train`` writes into a run directory: --overwrite removes only these
RUN_OUTPUTS = ("config.yaml", "command.txt", "checkpoint", ".checkpoint.old", "data_report.json", "history.json",
               "metrics.json", "trivial_baselines.json", "ledger.json", "README.md", "learning_curve.png", "loss_weights.png",
               "tb", "last", ".last.old")


def prepare_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse to train into a folder that holds another run's outputs, unless asked: a second run
    there would mix its config and outputs with the first run's weights. (Other files, such as a
    study's status file, may be there.)"""
    if run_dir.exists() and not run_dir.is_dir():
        raise MtpeftError(f"--output {run_dir}: exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not previous or resume:
        return
    if not overwrite:
        raise MtpeftError(f"--output {run_dir}: the folder is not empty (it holds {', '.join(previous[:3])}); "
                          "choose another folder, or give --overwrite to replace the run in it")
    for name in previous:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for stale in run_dir.glob(".checkpoint.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def split_metrics(config: RunConfig, tasks: dict[str, Task], model: MultiTaskModel, data: dict[str, TaskData],
                  splits: Sequence[str] = ("valid", "test")) -> dict[str, Any]:
    """The metrics of each split asked for (valid, test), with the checkpoint's thresholds."""
    ctx = eval_context(config, model.backbone.tokenizer)
    metrics = {split: evaluate_sets(model, tasks, {n: getattr(d, split) for n, d in data.items()}, ctx) for split in splits}
    return with_decisions(metrics, tasks)


def with_decisions(metrics: dict[str, Any], tasks: dict[str, Task]) -> dict[str, Any]:
    """Metrics plus how each task's decision threshold was set: a threshold tuned on the validation
    set flatters that set's own scores, so the metrics say so beside them."""
    decisions = {name: note for name, task in tasks.items() if (note := task.decision_note())}
    return metrics | ({"decisions": decisions} if decisions else {})


def ledger_for(last: tuple[Any, dict[str, Any]] | None) -> Ledger:
    """The cost ledger of a sitting: the earlier sittings' totals travel in last/. A checkpoint older
    than that carries none, so the tokens trained up to it stay untimed for the rest of the run."""
    if last is None:
        return Ledger()
    earlier = last[1].get("ledger")
    if earlier is None:
        return Ledger(untimed_tokens=last[1]["progress"]["tokens"])
    return Ledger(earlier=earlier, untimed_tokens=earlier.get("untimed_tokens", 0))


def train(config: RunConfig, command: str = "", overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train, keep the best checkpoint, reload it from disk and evaluate the test sets.

    ``resume``: continue the run in ``config.output_dir`` from its last/ checkpoint (the caller
    passes the run's own saved config; see ``resume_config``)."""
    run_dir = Path(config.output_dir)
    # under torchrun: join the process group; only rank 0 touches the run directory
    info, device = distributed.setup(resolve_device(config.training.device))  # a missing GPU fails at once
    if info.main:
        prepare_run_dir(run_dir, overwrite, resume)
    info.barrier()
    last = load_last(run_dir) if resume else None
    ledger = ledger_for(last)
    seed_everything(config.training.seed)
    tasks = build_tasks(config)
    # a wrong weighting or option stops now, not after the data and the model have loaded
    build_weighting(config.training.weighting, list(tasks), config.training.weighting_options)
    with ledger.phase("load_data"):
        data, skips = load_data(config, tasks, with_train=True)
    sizes = {name: describe(tasks[name], d) for name, d in data.items()}
    with ledger.phase("load_model"):
        model, method = build_model(config, tasks)
        model.to(device)
        if config.training.compile:
            model.backbone.compile_encoder()
    # written once data and model have loaded: a run that fails early leaves the folder as it was
    if info.main:
        write_run_inputs(run_dir, config, command, resume, {"sizes": sizes} | skips.report())
    ledger.record_parameters(model.parameter_counts())

    def save_best(weighting: torch.nn.Module, state: dict[str, Any]) -> None:
        # the config travels inside the checkpoint: the weights are always read with their own config
        state = state | {"tasks": {name: task.state() for name, task in tasks.items()}, "config": config.to_dict()}
        save_checkpoint(run_dir, model, method, {"loss_weighting": weighting}, state)

    ctx = eval_context(config, model.backbone.tokenizer)
    trainer = Trainer(model, tasks, data, config.training, config.backbone.max_len, save_best, ctx,
                      run_dir / "tb" if info.main else None, phase=ledger.phase,
                      save_last=(lambda tensors, state: save_last(run_dir, tensors, state | {"ledger": ledger.carry()}))
                      if info.main else None,
                      dist=info)
    with ledger.phase("train_and_validate"):
        result = trainer.fit(resume=last)
    del last
    distributed.teardown(info)
    if not info.main:
        return {"rank": info.rank}  # rank 0 evaluates and writes the outputs
    history = [dataclasses.asdict(r) for r in result.history]
    write_json(run_dir / "history.json", history)
    headline = {s.name: tasks[n].metric for n, d in data.items() for s in d.valid}
    learning_curve(history, headline, run_dir / "learning_curve.png", f"{config.method.name} on {', '.join(tasks)}")
    loss_weights_plot(history, run_dir / "loss_weights.png", f"{config.training.weighting} loss weights ({config.method.name})")
    # validation is not run again: its numbers are those of the best validation during training
    # (the checkpoint holds that model and the thresholds tuned then, so `mtpeft evaluate`
    # reproduces them); only the test sets are new
    metrics = {"valid": result.best_valid}
    scored = "test" if config.training.evaluate_test else "valid"
    if config.training.evaluate_test:
        # evaluate exactly what `mtpeft evaluate` will see: the checkpoint as written to disk
        with ledger.phase("reload"):
            del model, trainer
            config_loaded, tasks, model = load_run(run_dir, device=config.training.device)
        with ledger.phase("evaluate_test"):
            ctx = eval_context(config_loaded, model.backbone.tokenizer)
            metrics["test"] = evaluate_sets(model, tasks, {n: d.test for n, d in data.items()}, ctx)
    metrics = with_decisions(metrics, tasks)
    write_json(run_dir / "metrics.json", metrics)
    # what the metrics must beat: majority class, all-positive, random ranking (same sets)
    trivial = trivial_baselines(tasks, {n: getattr(d, scored) for n, d in data.items()})
    write_json(run_dir / "trivial_baselines.json", {scored: trivial})
    # training alone: the loop's wall time less its validations and checkpoint writes, over every
    # sitting whose time was recorded (and the tokens of those sittings)
    seconds = ledger.seconds()
    train_seconds = seconds["train_and_validate"] - seconds.get("validate", 0.0) - seconds.get("save_last", 0.0)
    timed_tokens = result.tokens - ledger.untimed_tokens
    ledger.values |= {
        "backbone": config.backbone.name,
        "method": config.method.name,
        "tasks": list(tasks),
        "bf16": use_bf16(config.training, device),
        "device": str(device),
        "world_size": info.world,
        "epochs": config.training.epochs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "best_valid_score": result.best_score,
        "adapter_bytes": directory_bytes(checkpoint_dir(run_dir) / ADAPTER),
        "heads_bytes": (checkpoint_dir(run_dir) / "heads.safetensors").stat().st_size,
        "train_tokens": result.tokens,
        "train_seconds": round(train_seconds, 3),
        "train_tokens_per_second": round(timed_tokens / max(train_seconds, 1e-9), 1),
        "resumed": resume,
        # False: resumed from a checkpoint that predates the carried ledger, so the seconds, the
        # tokens per second and the peak RSS are those of the sittings since
        "whole_run_timed": ledger.untimed_tokens == 0,
        "validation_seconds": seconds.get("validate", 0.0),
        "validations": len(result.history),
        "skipped_records": skips.total,
    }
    ledger_dict = ledger.to_dict()
    write_json(run_dir / "ledger.json", ledger_dict)
    atomic_write_text(run_dir / "README.md", model_card(config.to_dict(), metrics, ledger_dict, sizes))
    if not config.training.keep_last:
        remove_last(run_dir)  # finished: nothing left to resume
    return {"metrics": metrics, "ledger": ledger_dict, "run_dir": str(run_dir),
            "trivial": trivial}


def evaluate_run(run_dir: Path, output: Path | None = None, data_root: str | None = None, device: str | None = None,
                 splits: Sequence[str] = ("valid", "test")) -> dict[str, Any]:
    """Reload a run and recompute the metrics of ``splits`` (written to ``output`` if given);
    ``data_root`` is where ``${data}`` is on this machine."""
    config, tasks, model = load_run(run_dir, data_root, device)
    data, _ = load_data(config, tasks, with_train=False)
    metrics = split_metrics(config, tasks, model, data, splits)
    if output:
        write_json(Path(output), metrics)
    return metrics


PREDICT_FORMATS = ("codexglue", "jsonl")


def predict(run_dir: Path, task_names: list[str], input_path: Path, options: dict[str, Any], fmt: str | None = None,
            top_k: int = 100, progress: bool = False, skip_bad_records: bool = False,
            device: str | None = None) -> tuple[list[str], SkipCounter]:
    """Prediction lines of one or more tasks for one input file, over one model load.

    ``fmt`` codexglue: each task's CodeXGLUE prediction format (one task per call); jsonl: one JSON
    object per prediction with its task, id(s), probability or scores and decision (the default
    for several tasks). ``options`` are the command's own files (functions, corpus): a run's
    training files are never used in their place. The inputs are read before the model is loaded,
    so bad input fails at once."""
    run_dir = Path(run_dir)
    fmt = fmt or ("codexglue" if len(task_names) == 1 else "jsonl")
    if fmt not in PREDICT_FORMATS:
        raise MtpeftError(f"unknown prediction format {fmt!r}; valid: {', '.join(PREDICT_FORMATS)}")
    if fmt == "codexglue" and len(task_names) > 1:
        raise MtpeftError("a CodeXGLUE prediction file holds one task: predict one task per call, or use --format jsonl")
    if top_k < 1:
        raise MtpeftError(f"--top-k must be at least 1, got {top_k}")
    config = run_config(run_dir, checkpoint_dir(run_dir)) if run_dir.is_dir() else None
    if config is None:
        raise MtpeftError(f"{run_dir}: not a run directory")
    unknown = [name for name in task_names if name not in config.tasks]
    if unknown or not task_names:
        raise MtpeftError(f"the run at {run_dir} has no {', '.join(map(repr, unknown)) or 'task'} head; its tasks: {', '.join(config.tasks)}")
    readers = build_tasks(config)
    skips = SkipCounter(enabled=skip_bad_records or config.training.skip_bad_records)
    inputs = {name: readers[name].read_predict(Path(input_path), skips, options) for name in task_names}
    config, tasks, model = load_run(run_dir, device=device)
    ctx = dataclasses.replace(eval_context(config, model.backbone.tokenizer), show_progress=progress)
    lines = []
    for name in task_names:
        rows = tasks[name].predict_rows(model, inputs[name], ctx, top_k)
        if fmt == "codexglue":
            lines += [tasks[name].codexglue_line(row) for row in rows]
        else:
            lines += [json.dumps({"task": name} | row) for row in rows]
    return lines, skips


def write_run_inputs(run_dir: Path, config: RunConfig, command: str, resume: bool, data_report: dict[str, Any]) -> None:
    """config.yaml (a resumed run keeps its own), command.txt (a resumed run's lines add up), data_report.json."""
    if not resume:
        save_config(config, run_dir / "config.yaml")
    if command:
        previous = (run_dir / "command.txt").read_text(encoding="utf-8") if resume and (run_dir / "command.txt").exists() else ""
        atomic_write_text(run_dir / "command.txt", previous + command + "\n")
    write_json(run_dir / "data_report.json", data_report)


# config keys that may differ when a run is resumed, since they do not change what is computed: where
# the run and its data live (``vars``: a run folder may move to another machine), device and progress
RESUME_FREE_KEYS = {("training", "progress"), ("training", "device"), ("output_dir",), ("vars",)}


def resume_config(run_dir: Path, requested: RunConfig | None = None) -> RunConfig:
    """The run's own saved config, for ``mtpeft train --resume``; a ``requested`` config (when the
    command line also gave --config / --set) must equal it, or the resume is refused."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise MtpeftError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    saved = from_dict(load_yaml(run_dir / "config.yaml"))
    if requested is not None:
        changed = config_differences(saved.to_dict(), requested.to_dict())
        if changed:
            raise MtpeftError(f"--resume {run_dir}: the config differs from the run's saved config.yaml at "
                              f"{', '.join(changed[:5])}; resume with the saved config (drop --config/--set) or start a new run")
        # the run's own ${data} paths, found under the root asked for now
        saved = from_dict(saved.to_dict() | {"vars": requested.to_dict()["vars"]})
        saved.training.progress = requested.training.progress
        saved.training.device = requested.training.device
    saved.output_dir = str(run_dir)  # the directory may have moved since
    return saved


def config_differences(saved: dict[str, Any], requested: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ (keys in RESUME_FREE_KEYS excepted)."""
    if path in RESUME_FREE_KEYS:
        return []
    if isinstance(saved, dict) and isinstance(requested, dict):
        out: list[str] = []
        for key in list(saved) + [k for k in requested if k not in saved]:
            out += config_differences(saved.get(key), requested.get(key), path + (str(key),))
        return out
    return [] if saved == requested else [f"{'.'.join(path)} ({saved!r} -> {requested!r})"]
