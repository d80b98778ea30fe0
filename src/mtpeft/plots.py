"""Plots of runs: the learning curve (validation metric against training examples seen), the loss
weights, and several runs' learning curves side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def _finish(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Labels, grid, legend, then write the PNG and free the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _validation_points(history: list[dict[str, Any]], set_name: str, metric: str) -> list[tuple[int, float]]:
    """(examples the set's task has seen, metric) at each validation that scored the set."""
    task = set_name.split("/")[0]
    return [(r.get("examples_seen", {}).get(task, r["step"]), r["valid"][set_name][metric])
            for r in history if set_name in r.get("valid", {}) and metric in r["valid"][set_name]]


def learning_curve(history: list[dict[str, Any]], headline: dict[str, str], path: Path, title: str = "") -> Path | None:
    """One line per validation set: its headline metric at each validation, x = that task's
    training examples seen so far. ``headline`` maps a set name (``search/cosqa``) to its metric."""
    if not history:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for set_name, metric in headline.items():
        points = _validation_points(history, set_name, metric)
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=f"{set_name} ({metric})")
    return _finish(fig, ax, "training examples seen by the task", "validation metric",
                   title or "Learning curve (validation)", path)


def compare_learning_curves(histories: dict[str, list[dict[str, Any]]], headline: dict[str, str], path: Path,
                            title: str = "") -> Path | None:
    """One panel per validation set, one line per run (``histories`` maps a run's label to its
    history), x = the examples that set's task has seen: e.g. a multi-task run against single-task
    runs of the same budget."""
    panels = [(s, m) for s, m in headline.items() if any(_validation_points(h, s, m) for h in histories.values())]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (set_name, metric) in zip(axes.flat, panels):
        for label, history in histories.items():
            points = _validation_points(history, set_name, metric)
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(set_name, fontsize=10)
        ax.set_xlabel("training examples seen by the task", fontsize=8)
        ax.set_ylabel(f"validation {metric}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or "Learning curves (validation)")
    return _save(fig, path)


def loss_weights_plot(history: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """The loss weight of every task after each optimisation step (history.json's ``weights``).
    Nothing is drawn for a single-task run: there is nothing to weigh."""
    rows = [row for record in history for row in record.get("weights", [])]
    tasks = [k for k in (rows[0] if rows else {}) if k != "step"]
    if len(tasks) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [row["step"] for row in rows]
    for task in tasks:
        ax.plot(steps, [row[task] for row in rows], label=task)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="equal (1)")
    return _finish(fig, ax, "optimisation step", "loss weight (sum = number of tasks)",
                   title or "Loss weights per step", path)
