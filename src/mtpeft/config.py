"""Run configuration: dataclasses, YAML load/save, ``${var}`` paths and ``key=value`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mtpeft.errors import MtpeftError
from mtpeft.fileio import atomic_write_text

SPLITS = ("train", "valid", "test")


@dataclass
class BackboneConfig:
    name: str = "default"
    pooling: str = "mean"
    max_len: int = 256
    attention_dropout: float | None = 0.0  # None keeps the model's (see model/backbone.set_dropout)
    hidden_dropout: float | None = None  # None keeps the model's
    frozen_bf16: bool = False  # store frozen weights in bf16 once (with bf16 autocast; pair it with pad_multiple: results/perf)
    window_pool: str = "mean"  # how the windows of a long text are combined (task option windows)


@dataclass
class MethodConfig:
    name: str = "lora"
    options: dict[str, Any] = field(default_factory=dict)  # e.g. r, alpha, dropout, target


@dataclass
class TaskConfig:
    """Where a task's data is, plus task options (threshold, pos_weight, text_field, functions ...).

    ``valid`` may be omitted: ``valid_fraction`` of ``train`` is then held out for validation.
    ``extra`` holds more evaluation sets, reported as ``task/NAME`` (e.g. ``search/cosqa``).
    """

    train: Any = None
    valid: Any = None
    test: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    valid_fraction: float = 0.1


@dataclass
class TrainingConfig:
    sampler: str = "round_robin"  # round_robin | proportional | temperature
    temperature: float = 2.0
    weighting: str = "learned_softmax"  # see `mtpeft list`: equal, learned_softmax, uncertainty, loss_normalized, gradnorm, famo
    weighting_options: dict[str, Any] = field(default_factory=dict)  # e.g. {lr: 0.01, reg: 0.1} (per weighting)
    epochs: int = 3
    steps_per_epoch: int | None = None  # None: the sampler's natural epoch
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1.0e-4
    head_lr: float | None = None  # None: same as lr
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_grad_norm: float = 1.0
    bf16: bool = True
    # torch.compile(dynamic=True) of the encoder: 1.20x on the four-task CPU step (results/perf/compile),
    # paid for by about a minute of compiling; needs a C++ compiler on CPU
    compile: bool = False
    max_train_per_task: int | None = None
    max_eval_per_task: int | None = None  # cap on every evaluation set (queries for search)
    max_valid_per_task: int | None = None  # tighter cap for validation sets (None: max_eval_per_task)
    bucket_window: int = 50  # batches whose examples are sorted by length together
    seed: int = 42  # initialisation, batch order, dropout
    # which examples the caps and the search hold-out keep: separate from ``seed``, so the runs of a
    # multi-seed study train and are scored on the same examples
    data_seed: int = 42
    validate_every: int | None = None  # steps between validations; None: at the end of every epoch
    save_every_steps: int | None = None  # write the resumable last/ checkpoint every N steps
    save_every_minutes: float | None = None  # ... or every N minutes (either may be set, or both)
    keep_last: bool = False  # keep last/ once the run has finished (it is removed by default)
    # False: a validation-only run (recipe sweeps choose on validation): the test sets are not scored
    evaluate_test: bool = True
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    skip_bad_records: bool = False
    progress: bool = True


@dataclass
class RunConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output_dir: str = "runs/latest"
    vars: dict[str, str] = field(default_factory=dict)  # ${name} substitutions in paths
    # the tasks as written, before ``${var}`` substitution: what config.yaml stores, so a run folder
    # names its data relative to a root (``vars.data``) that another machine can replace
    raw_tasks: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["method"] = {"name": self.method.name, **self.method.options}
        if self.raw_tasks is not None:
            data["tasks"] = copy.deepcopy(self.raw_tasks)
        del data["raw_tasks"]
        # the package's own sample folder is found again wherever mtpeft is installed
        data["vars"] = {k: v for k, v in self.vars.items() if not (k == "sample" and v == str(sample_dir()))}
        return data


def sample_dir() -> Path:
    """The compact real data sample that ships inside the package."""
    return Path(str(resources.files("mtpeft") / "resources" / "sample"))


def default_vars() -> dict[str, str]:
    return {"sample": str(sample_dir()), "data": os.environ.get("MTPEFT_DATA", "../shared/data")}


_VAR = re.compile(r"\$\{(\w+)\}")


def substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replace ``${name}`` in every string of a nested structure."""
    if isinstance(value, str):
        def lookup(match: re.Match) -> str:
            if match.group(1) not in variables:
                raise MtpeftError(f"unknown variable ${{{match.group(1)}}} in {value!r}; known: {', '.join(sorted(variables))}")
            return variables[match.group(1)]

        return _VAR.sub(lookup, value)
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


# allowed ranges of numeric settings: name -> (lowest, highest); a parenthesis excludes the bound
RANGES: dict[str, tuple[str, float | None, float | None, str]] = {
    "max_len": ("[", 8, None, ")"), "attention_dropout": ("[", 0, 1, ")"), "hidden_dropout": ("[", 0, 1, ")"),
    "epochs": ("[", 1, None, ")"), "steps_per_epoch": ("[", 1, None, ")"), "batch_size": ("[", 1, None, ")"),
    "eval_batch_size": ("[", 1, None, ")"), "lr": ("(", 0, None, ")"), "head_lr": ("(", 0, None, ")"),
    "weight_decay": ("[", 0, None, ")"), "warmup": ("[", 0, 1, "]"), "max_grad_norm": ("(", 0, None, ")"),
    "temperature": ("(", 0, None, ")"), "max_train_per_task": ("[", 1, None, ")"),
    "max_eval_per_task": ("[", 1, None, ")"), "max_valid_per_task": ("[", 1, None, ")"),
    "bucket_window": ("[", 1, None, ")"), "validate_every": ("[", 1, None, ")"), "valid_fraction": ("(", 0, 1, ")"),
}


def _typed(value: Any, annotation: str, where: str) -> Any:
    """``value`` as the field's declared type (int, float, bool, str; ``| None`` allows null).

    PyYAML reads ``1e-4`` (no dot) as a string, so numbers given as strings are accepted where a
    float is expected; anything else of the wrong type is a one-line error."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        if "None" in kinds or "Any" in kinds:
            return None
        raise MtpeftError(f"config {where} must not be null")
    base = next((k for k in kinds if k != "None"), "Any")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise MtpeftError(f"config {where} must be an integer, got {value!r}")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise MtpeftError(f"config {where} must be a number, got {value!r}")
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise MtpeftError(f"config {where} must be true or false, got {value!r}")
    if base == "str":
        if isinstance(value, str):
            return value
        raise MtpeftError(f"config {where} must be a string, got {value!r}")
    if base.startswith("dict") and not isinstance(value, dict):
        raise MtpeftError(f"config {where} must be a mapping, got {value!r}")
    return value


def _in_range(name: str, value: Any, where: str) -> None:
    if name not in RANGES or not isinstance(value, (int, float)):
        return
    left, low, high, right = RANGES[name]
    bad_low = low is not None and (value < low or (left == "(" and value == low))
    bad_high = high is not None and (value > high or (right == ")" and value == high))
    if bad_low or bad_high:
        interval = f"{left}{low}, {'inf' if high is None else high}{right}"
        raise MtpeftError(f"config {where} must be in {interval}, got {value!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise MtpeftError(f"config section {where!r} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MtpeftError(f"unknown key(s) {', '.join(unknown)} in config section {where!r}; valid: {', '.join(sorted(fields))}")
    values = {}
    for name, value in data.items():
        values[name] = _typed(value, str(fields[name].type), f"{where}.{name}")
        _in_range(name, values[name], f"{where}.{name}")
    return cls(**values)


def method_section(value: Any) -> dict[str, Any]:
    """``method: lora`` or ``method: {name: lora, r: 8}``; null means the default method."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict):
        raise MtpeftError(f"config 'method' must be a mapping such as {{name: lora, r: 16}}, got {value!r}")
    return dict(value)


def from_dict(data: dict[str, Any], data_root: str | None = None) -> RunConfig:
    """A checked RunConfig; ``${var}`` in task paths is substituted (``data_root`` replaces ``vars.data``)."""
    data = dict(data or {})
    unknown = sorted(set(data) - ({f.name for f in dataclasses.fields(RunConfig)} - {"raw_tasks"}))
    if unknown:
        raise MtpeftError(f"unknown top-level config key(s): {', '.join(unknown)}")
    method = method_section(data.get("method"))
    name = method.pop("name", "lora")
    if not isinstance(name, str):
        raise MtpeftError(f"config method.name must be a string, got {name!r}")
    raw_tasks = data.get("tasks") or {}
    if not isinstance(raw_tasks, dict):
        raise MtpeftError("config 'tasks' must map task names to their data")
    if not isinstance(data.get("vars") or {}, dict):
        raise MtpeftError("config 'vars' must be a mapping of names to paths")
    variables = default_vars() | {str(k): str(v) for k, v in (data.get("vars") or {}).items()}
    if data_root is not None:
        variables["data"] = str(data_root)
    tasks = substitute(raw_tasks, variables)
    return RunConfig(
        backbone=_build(BackboneConfig, data.get("backbone"), "backbone"),
        method=MethodConfig(name=name, options=method),
        tasks={name: _build(TaskConfig, spec, f"tasks.{name}") for name, spec in tasks.items()},
        training=_build(TrainingConfig, data.get("training"), "training"),
        output_dir=str(data.get("output_dir", "runs/latest")),
        vars=variables,
        raw_tasks=copy.deepcopy(raw_tasks),
    )


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``training.epochs`` -> data["training"]["epochs"] = value (creating mappings as needed)."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise MtpeftError(f"cannot set {key!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value``, the value read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise MtpeftError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise MtpeftError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise MtpeftError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise MtpeftError(f"{path}: the config must be a mapping")
    return data


def select_tasks(data: dict[str, Any], names: str | None) -> dict[str, Any]:
    """Keep only the comma-separated tasks ``names`` of a raw config (all when None)."""
    if not names:
        return data
    wanted = [t.strip() for t in names.split(",") if t.strip()]
    available = data.get("tasks") or {}
    missing = [t for t in wanted if t not in available]
    if missing:
        raise MtpeftError(f"task(s) {', '.join(missing)} not in the config; it has: {', '.join(available)}")
    return data | {"tasks": {t: available[t] for t in wanted}}


def default_config_path() -> Path:
    return Path(str(resources.files("mtpeft") / "resources" / "configs" / "default.yaml"))


def resolve_config(data: dict[str, Any], overrides: list[tuple[str, Any]] = ()) -> RunConfig:
    """Apply overrides, keep only the tasks asked for, substitute ``${vars}`` in paths."""
    data = copy.deepcopy(data)  # (keeps the task order: it is the round-robin order)
    data["method"] = method_section(data.get("method"))
    configured_method = data["method"].get("name", MethodConfig.name)
    configured_weighting = (data.get("training") or {}).get("weighting", TrainingConfig.weighting)
    for key, value in overrides:
        if key == "method" or key.startswith("method."):
            data["method"] = method_section(data.get("method"))
        set_dotted(data, key, value)
    data["method"] = method_section(data.get("method"))
    training = data.get("training") or {}
    if training.get("weighting", configured_weighting) != configured_weighting:
        # likewise, the file's weighting options belong to the weighting it named
        training["weighting_options"] = {k.split(".", 2)[2]: v for k, v in overrides if k.startswith("training.weighting_options.")}
    if data["method"].get("name", configured_method) != configured_method:
        # the file's method options belong to the method it named, not to the one chosen instead
        data["method"] = overridden_method(overrides)
    return from_dict(data)


def overridden_method(overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """The method section the overrides alone give, in order: ``method`` (a whole section, or a
    name) replaces it, ``method.KEY`` sets one option."""
    chosen: dict[str, Any] = {}
    for key, value in overrides:
        if key == "method":
            chosen = method_section(value)
        elif key.startswith("method."):
            chosen[key.split(".", 1)[1]] = value
    return chosen


def save_config(config: RunConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
