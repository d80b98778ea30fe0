"""The study's PNGs: affinity heatmaps, multi-minus-single bars, loss-weighting comparison and
trajectories, cost savings. Every plot has a title, axis labels with units and a legend or a colour bar."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mtpeft.study.affinity import Matrix  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def affinity_heatmap(matrix: Matrix, path: Path, title: str, metric_note: str = "",
                     unreadable: frozenset[str] = frozenset()) -> Path:
    """Rows: the task measured; columns: the task trained with it. Diverging colours centred on 0.
    The rows of ``unreadable`` tasks are marked so: their changes are noise at this budget."""
    tasks = list(matrix)
    values = np.array([[np.nan if matrix[i][j] is None else matrix[i][j] for j in tasks] for i in tasks], dtype=float)
    span = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    span = span or 1.0
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(tasks), 1.2 + 1.1 * len(tasks)))
    cmap = matplotlib.colormaps["RdBu"].copy()
    cmap.set_bad("#c8c8c8")  # the diagonal and missing pairs: grey, unlike a zero (white)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=TwoSlopeNorm(0.0, -span, span))
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(tasks)), [f"{t}\n(not readable)" if t in unreadable else t for t in tasks])
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            value = values[i, j]
            text = "—" if math.isnan(value) else f"{value:+.1f}"
            dark = not math.isnan(value) and abs(value) > 0.6 * span  # white on the saturated colours
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xlabel("trained together with (partner task)")
    ax.set_ylabel("task measured")
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("change vs. trained alone (points" + (f", {metric_note}" if metric_note else "") + ")")
    return _save(fig, path)


UNREADABLE_NOTE = "not readable: a cell does not beat\nthe trivial baseline on this set"


def grouped_bars(values: dict[str, dict[str, float | None]], path: Path, title: str, ylabel: str,
                 xlabel: str = "test set", zero_line: bool = True, unreadable: frozenset[str] = frozenset()) -> Path:
    """values: series (legend) -> category (x) -> value. Bars of the ``unreadable`` categories are
    hatched and pale (and their tick labels marked): they are noise at this budget, not a result."""
    series = list(values)
    categories = list(dict.fromkeys(c for s in series for c in values[s]))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(categories) * max(1, len(series)) * 0.8 + 5), 4.4))
    x = np.arange(len(categories))
    legend = []  # built by hand: a series' own first bar may be a hatched one
    for k, name in enumerate(series):
        heights = [values[name].get(c) for c in categories]
        heights = [np.nan if h is None else h for h in heights]
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width, color=f"C{k % 10}")
        for bar, category in zip(bars, categories):
            if category in unreadable:
                bar.set_hatch("//")
                bar.set_alpha(0.35)
        legend.append(Patch(color=f"C{k % 10}", label=name))
    if any(c in unreadable for c in categories):
        legend.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label=UNREADABLE_NOTE))
    if zero_line:
        ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{c}\n(not readable)" if c in unreadable else c for c in categories])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside, never over the bars
    return _save(fig, path)


def weight_trajectories(histories: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path | None:
    """One panel per weighting: each task's loss weight after every step."""
    runs = {name: rows for name, rows in histories.items() if rows}
    if not runs:
        return None
    cols = min(3, len(runs))
    rows_n = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.1 * rows_n), squeeze=False, sharey=True)
    for ax, (name, rows) in zip(axes.flat, runs.items()):
        steps = [r["step"] for r in rows]
        for task in [k for k in rows[0] if k != "step"]:
            ax.plot(steps, [r[task] for r in rows], label=task)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("loss weight")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
