"""The study YAML: which base run config, which methods / backbones / weightings, which regimes,
and one budget for every cell.

```yaml
base: full.yaml                # a run config, relative to this file
output_dir: results/study      # where the cells go (relative to the working directory)
tasks: [defect, clone, search, flaky]     # default: every task of the base config
backbones: [default]           # default: the base config's backbone
methods: {full: {}, lora: {}}  # name -> method options ({}: the base's when it names that method)
regimes: [single, multi, pairs]
pairs: {methods: [lora]}       # pairs only for these methods (default: every method)
weighting: learned_softmax     # of every cell (default: the base's)
weightings:                    # the weighting comparison: extra multi-task cells
  methods: [lora]
  names: {equal: {}, gradnorm: {alpha: 1.5}}   # or a list of names
budget: {max_train_per_task: 512, epochs: 2, max_len: 256, steps_per_epoch: null,
         max_eval_per_task: 1000, max_valid_per_task: 300}
set: {training.lr: 1.0e-3}     # more overrides for every cell
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtpeft.config import load_yaml
from mtpeft.errors import MtpeftError

REGIMES = ("single", "multi", "pairs")
# budget key -> the run-config key it sets (the same for every cell)
BUDGET_KEYS = {
    "max_train_per_task": "training.max_train_per_task",
    "epochs": "training.epochs",
    "steps_per_epoch": "training.steps_per_epoch",
    "max_len": "backbone.max_len",
    "batch_size": "training.batch_size",
    "max_eval_per_task": "training.max_eval_per_task",
    "max_valid_per_task": "training.max_valid_per_task",
}
TOP_KEYS = {"base", "output_dir", "tasks", "backbones", "methods", "regimes", "pairs", "weighting", "weightings", "budget", "set"}


@dataclass
class StudyConfig:
    base: Path
    base_data: dict[str, Any]
    output_dir: Path
    tasks: list[str]
    backbones: list[str]
    methods: dict[str, dict[str, Any]]
    regimes: list[str]
    pair_methods: list[str]
    weighting: str
    weightings: dict[str, dict[str, Any]] = field(default_factory=dict)  # comparison: name -> options
    weighting_methods: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def _names(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """A list of names or a mapping name -> options."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(v): {} for v in value}
    if isinstance(value, dict):
        return {str(k): dict(v or {}) for k, v in value.items()}
    raise MtpeftError(f"study config: {where!r} must be a list of names or a mapping, got {value!r}")


def _subset(names: Any, allowed: list[str], where: str) -> list[str]:
    names = list(_names(names, where)) if names is not None else list(allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise MtpeftError(f"study config: {where} names {', '.join(unknown)}, not among {', '.join(allowed)}")
    return names


def load_study(path: Path, output_dir: Path | None = None) -> StudyConfig:
    path = Path(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise MtpeftError(f"{path}: unknown study key(s) {', '.join(unknown)}; valid: {', '.join(sorted(TOP_KEYS))}")
    if "base" not in data:
        raise MtpeftError(f"{path}: the study needs 'base: RUN_CONFIG.yaml'")
    base = (path.parent / str(data["base"])).resolve() if not Path(str(data["base"])).is_absolute() else Path(data["base"])
    base_data = load_yaml(base)
    base_tasks = list((base_data.get("tasks") or {}))
    tasks = _subset(data.get("tasks"), base_tasks, "tasks")
    methods = _names(data.get("methods"), "methods") or {(base_data.get("method") or {}).get("name", "lora"): {}}
    from mtpeft.model.methods import METHODS

    for method in methods:
        METHODS.get(method)  # an unknown method stops here, not hours into the grid
    regimes = list(data.get("regimes") or REGIMES)
    bad = [r for r in regimes if r not in REGIMES]
    if bad:
        raise MtpeftError(f"{path}: unknown regime(s) {', '.join(map(str, bad))}; valid: {', '.join(REGIMES)}")
    budget = dict(data.get("budget") or {})
    bad = sorted(set(budget) - set(BUDGET_KEYS))
    if bad:
        raise MtpeftError(f"{path}: unknown budget key(s) {', '.join(bad)}; valid: {', '.join(BUDGET_KEYS)}")
    comparison = data.get("weightings") or {}
    if not isinstance(comparison, dict):
        raise MtpeftError(f"{path}: 'weightings' must be a mapping with 'methods' and 'names'")
    study = StudyConfig(
        base=base,
        base_data=base_data,
        output_dir=Path(output_dir or data.get("output_dir") or "runs/study"),
        tasks=tasks,
        backbones=[str(b) for b in (data.get("backbones") or [(base_data.get("backbone") or {}).get("name", "default")])],
        methods=methods,
        regimes=regimes,
        pair_methods=_subset((data.get("pairs") or {}).get("methods"), list(methods), "pairs.methods"),
        weighting=str(data.get("weighting") or (base_data.get("training") or {}).get("weighting", "learned_softmax")),
        weightings=_names(comparison.get("names"), "weightings.names"),
        weighting_methods=_subset(comparison.get("methods", []), list(methods), "weightings.methods"),
        budget=budget,
        overrides=dict(data.get("set") or {}),
        source=path,
    )
    _check_names(study)
    return study


def _check_names(study: StudyConfig) -> None:
    """Unknown weightings or their options stop before the first cell, not hours into the grid."""
    from mtpeft.training.weightings import build_weighting

    if not study.tasks:
        raise MtpeftError("study config: no tasks")
    for name, options in ({study.weighting: {}} | study.weightings).items():
        build_weighting(name, study.tasks, options)
