"""The run directory: layout, ledger (parameters, bytes, time, memory, tokens) and model card."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from mtpeft.device import cpu_facts, cpu_label
from mtpeft.fileio import write_json  # noqa: F401  (re-exported: the run directory's JSON writer)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mb() -> float | None:
    """Resident memory now (Linux ``/proc``; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _add_seconds(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(a.get(k, 0.0) + b.get(k, 0.0), 3) for k in {**a, **b}}


@dataclass
class Ledger:
    """What a run cost: filled in as phases run, written as ledger.json.

    A run that spans sittings (``--resume``) carries its totals in the resumable checkpoint
    (``carry``), and the next sitting's ledger starts from them (``earlier``): ``wall_seconds`` and
    ``peak_rss_mb`` then cover the whole run; ``this_sitting`` keeps the last sitting's own."""

    phases: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, dict[str, float | None]] = field(default_factory=dict)  # phase -> RSS at its (last) end
    earlier: dict[str, Any] = field(default_factory=dict)  # the totals of the sittings before this one
    # training tokens of sittings whose time nobody recorded (a resume from a checkpoint older than
    # the carried ledger); carried on, so every later sitting still knows its totals are partial
    untimed_tokens: int = 0
    running: dict[str, float] = field(default_factory=dict)  # phase -> start, while it runs

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (repeated phases add up) and note resident memory when it ends: the peak
        so far (a running maximum, so it includes earlier phases) and the current RSS."""
        start = self.running[name] = time.perf_counter()
        try:
            yield
        finally:
            del self.running[name]
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - start, 3)
            current = current_rss_mb()
            # the kernel updates ru_maxrss lazily, so the RSS read now can exceed it by a few pages
            peak = max(peak_rss_mb(), current or 0.0)
            self.memory[name] = {"peak_rss_mb_so_far": round(peak, 1),
                                 "rss_mb": None if current is None else round(current, 1)}

    def record_parameters(self, counts: dict[str, int]) -> None:
        self.values["parameters"] = counts | {
            "trainable_percent": round(100.0 * counts["trainable"] / max(counts["total"], 1), 4),
            "method_trainable_percent": round(100.0 * counts["method_trainable"] / max(counts["backbone_total"], 1), 4),
        }

    def sitting_peak_rss_mb(self) -> float:
        return round(max([peak_rss_mb()] + [m["peak_rss_mb_so_far"] or 0.0 for m in self.memory.values()]), 1)

    def seconds(self) -> dict[str, float]:
        """Seconds per phase over the whole run: the earlier sittings' and this one's so far."""
        return _add_seconds(self.earlier.get("wall_seconds", {}), self.phases)

    def carry(self) -> dict[str, Any]:
        """The totals a resumable checkpoint keeps, phases still running counted up to now: the
        sitting that resumes from it adds its own."""
        now = time.perf_counter()
        running = {name: now - start for name, start in self.running.items()}
        return {"wall_seconds": _add_seconds(self.seconds(), running),
                "peak_rss_mb": max(self.earlier.get("peak_rss_mb", 0.0), self.sitting_peak_rss_mb()),
                "sittings": self.earlier.get("sittings", 0) + 1,
                "untimed_tokens": self.untimed_tokens,
                # every CPU the run trained on (sittings draw different ones): its wall time is theirs
                "cpus": list(dict.fromkeys(self.earlier.get("cpus", []) + [cpu_label(cpu_facts())]))}

    def to_dict(self) -> dict[str, Any]:
        totals = self.carry()  # the whole run's (no phase runs any more when the ledger is written)
        sitting = {"wall_seconds": self.phases, "peak_rss_mb": self.sitting_peak_rss_mb()}
        return self.values | totals | {
            "memory_by_phase": self.memory,  # this sitting's
            **({"this_sitting": sitting} if self.earlier else {}),
            "torch_threads": torch.get_num_threads(),
            **cpu_facts(),  # this sitting's
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        }


def model_card(config: dict[str, Any], metrics: dict[str, Any], ledger: dict[str, Any], data_sizes: dict[str, Any]) -> str:
    """A README.md for the run directory: what was trained, on what, and how well it did."""
    params = ledger.get("parameters", {})
    lines = [
        "# mtpeft run",
        "",
        f"- backbone: `{config['backbone']['name']}` (pooling {config['backbone']['pooling']}, max_len {config['backbone']['max_len']})",
        f"- method: `{config['method']['name']}` {json.dumps({k: v for k, v in config['method'].items() if k != 'name'})}",
        f"- tasks: {', '.join(config['tasks'])}",
        f"- trainable parameters: {params.get('trainable', '?'):,} of {params.get('total', '?'):,} "
        f"({params.get('trainable_percent', '?')}%; method alone {params.get('method_trainable', '?'):,}, "
        f"heads {params.get('heads', '?'):,}); adapter bytes {ledger.get('adapter_bytes', '?'):,}",
        f"- training: {json.dumps(config['training'])}",
        "",
        "## Data",
        "",
        "| task | train | valid | test | sources |",
        "|---|---|---|---|---|",
    ]
    for name, spec in config["tasks"].items():
        sizes = data_sizes.get(name, {})
        sources = ", ".join(f"{k}: `{v}`" for k, v in spec.items() if k in ("train", "valid", "test", "extra") and v)
        lines.append(f"| {name} | {sizes.get('train', '')} | {sizes.get('valid', '')} | {sizes.get('test', '')} | {sources} |")
    lines += ["", "## Metrics", "", "| split | set | metrics |", "|---|---|---|"]
    for split in ("valid", "test"):
        for name, values in metrics.get(split, {}).items():
            lines.append(f"| {split} | {name} | {', '.join(f'{k} {v:.4f}' for k, v in values.items())} |")
    lines += ["", "Reload with `mtpeft evaluate RUN_DIR`; predict with `mtpeft predict RUN_DIR --task TASK FILE`.", ""]
    return "\n".join(lines)
