"""Atomic checkpoints: written under a temporary name, then swapped in by rename.

An interrupted save leaves the previous checkpoint intact (``checkpoint/`` or, during the swap's
two renames, ``.checkpoint.old/``, which loading falls back to). Weights are safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.fileio import fsync_dir, fsync_tree
from mtpeft.model.methods.base import Method

CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
HEADS = "heads.safetensors"
STATE = "state.json"


def save_checkpoint(run_dir: Path, model: Any, method: Method, extra_modules: dict[str, nn.Module], state: dict[str, Any]) -> Path:
    """Save the method's weights (its own format), the heads (+ loss weights) and the JSON state."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.tmp-", dir=run_dir))
    try:
        method.save(model.backbone.model, tmp / ADAPTER)
        portable_base_model(tmp / ADAPTER, getattr(model.backbone, "name", None))
        tensors = {f"heads.{k}": v.detach().contiguous() for k, v in model.heads.state_dict().items()}
        for name, module in extra_modules.items():
            tensors |= {f"{name}.{k}": v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / HEADS))
        (tmp / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        fsync_tree(tmp)
        final, old = run_dir / CHECKPOINT, run_dir / ".checkpoint.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(run_dir)  # the renames themselves reach the disk
        shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def portable_base_model(adapter_dir: Path, backbone_name: str | None) -> None:
    """peft records the folder the backbone was loaded from (a site-packages or cache path of the
    training machine); record the configured backbone name instead, which resolves anywhere."""
    config_file = adapter_dir / "adapter_config.json"
    if backbone_name is None or not config_file.exists():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    machine_path = config.get("base_model_name_or_path")
    if machine_path is None:
        return
    config["base_model_name_or_path"] = backbone_name
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = adapter_dir / "README.md"  # peft's model card names the same folder
    if machine_path and card.exists():
        card.write_text(card.read_text(encoding="utf-8").replace(machine_path, backbone_name), encoding="utf-8")


def checkpoint_dir(run_dir: Path) -> Path:
    for candidate in (run_dir / CHECKPOINT, run_dir / ".checkpoint.old"):
        if (candidate / STATE).exists():
            return candidate
    raise MtpeftError(f"{run_dir}: no checkpoint found (is this a run directory of 'mtpeft train'?)")


def load_heads(directory: Path, model: Any, extra_modules: dict[str, nn.Module] | None = None) -> None:
    tensors = load_file(str(directory / HEADS))
    heads = {k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")}
    model.heads.load_state_dict(heads, strict=True)
    for name, module in (extra_modules or {}).items():
        module.load_state_dict({k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}, strict=True)


def load_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE).read_text(encoding="utf-8"))


# ---- the "last" checkpoint: everything a killed run needs to continue (mtpeft train --resume) ----
LAST = "last"
LAST_TENSORS = "state.safetensors"
LAST_STATE = "state.json"


def save_last(run_dir: Path, tensors: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write ``last/`` atomically, as ``save_checkpoint`` writes ``checkpoint/``: a temporary folder
    (tensors in safetensors, the rest in JSON; no pickle), fsync, then two renames."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".last.tmp-", dir=run_dir))
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / LAST_TENSORS))
        (tmp / LAST_STATE).write_text(json.dumps(state), encoding="utf-8")
        fsync_tree(tmp)
        final, old = run_dir / LAST, run_dir / ".last.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(run_dir)
        shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def last_dir(run_dir: Path) -> Path | None:
    """The last checkpoint (or, if a save was cut between its two renames, the previous one)."""
    for candidate in (run_dir / LAST, run_dir / ".last.old"):
        if (candidate / LAST_STATE).exists() and (candidate / LAST_TENSORS).exists():
            return candidate
    return None


def load_last(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, state) of the last checkpoint of a run."""
    directory = last_dir(run_dir)
    if directory is None:
        raise MtpeftError(f"{run_dir}: no resumable checkpoint ({LAST}/ is missing; set training.save_every_steps "
                          "or training.save_every_minutes to write one)")
    return load_file(str(directory / LAST_TENSORS)), json.loads((directory / LAST_STATE).read_text(encoding="utf-8"))


def last_progress(run_dir: Path) -> dict[str, Any]:
    """The training progress in a run's last checkpoint (steps, examples_seen per task, ...),
    without loading its tensors; {} when it has none or the state cannot be read."""
    directory = last_dir(run_dir)
    if directory is None:
        return {}
    try:
        return json.loads((directory / LAST_STATE).read_text(encoding="utf-8")).get("progress", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}


def remove_last(run_dir: Path) -> None:
    for name in (LAST, ".last.old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
