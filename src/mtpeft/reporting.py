"""Plain-text tables for the terminal: per-task metrics and the ledger."""

from __future__ import annotations

from typing import Any


COMMON_METRICS = ("accuracy", "f1", "precision", "recall", "mrr")


def format_duration(seconds: float) -> str:
    """``1h02m03s``: a wall time as the study's logs and estimates print it."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def format_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per split and set; ``trivial`` rows (majority / all-positive / random ranking) if given."""
    sets = sorted({name for split in ("valid", "test", "trivial") for name in metrics.get(split, {})})
    found = {m for split in ("valid", "test", "trivial") for values in metrics.get(split, {}).values() for m in values}
    names = [n for n in COMMON_METRICS if n in found] + sorted(found - set(COMMON_METRICS))  # any task's metrics
    header = f"{'split':<6} {'set':<16} " + " ".join(f"{n:>9}" for n in names)
    lines = [header, "-" * len(header)]
    for split in ("valid", "test", "trivial"):
        for name in sets:
            values = metrics.get(split, {}).get(name)
            if values is None:
                continue
            cells = " ".join(f"{values[n]:>9.4f}" if n in values else f"{'':>9}" for n in names)
            lines.append(f"{split:<6} {name:<16} {cells}")
    return "\n".join(lines)


def format_ledger(ledger: dict[str, Any]) -> str:
    params = ledger.get("parameters", {})
    wall = ledger.get("wall_seconds", {})
    return "\n".join([
        f"parameters: {params.get('trainable', 0):,} trainable of {params.get('total', 0):,} "
        f"({params.get('trainable_percent', 0)}%); method {params.get('method_trainable', 0):,}, heads {params.get('heads', 0):,}",
        f"adapter bytes: {ledger.get('adapter_bytes', 0):,}; peak RSS {ledger.get('peak_rss_mb', 0)} MB; "
        f"train tokens {ledger.get('train_tokens', 0):,} ({ledger.get('train_tokens_per_second', 0)} tokens/s of training "
        f"alone); validation {ledger.get('validation_seconds', 0):.1f} s",
        "wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in wall.items()),
    ])


# phases timed inside train_and_validate (not added to the total)
NESTED_PHASES = ("validate", "save_last")

def headline_metric(set_name: str) -> str | None:
    """A set's headline metric: its task's (``search/cosqa`` -> search's); None for unknown tasks."""
    from mtpeft.tasks import TASKS  # (here: the tables of finished runs need no torch otherwise)

    task = set_name.split("/", 1)[0]
    return TASKS.get(task).metric if task in TASKS else None


def headline_columns(set_names: list[str]) -> list[tuple[str, str]]:
    return [(s, m) for s in set_names if (m := headline_metric(s))]


# the columns of the built-in study's reports (study/report.py); runs_table finds its columns in
# the runs themselves and asks each set's task for its headline metric
HEADLINE = [("defect", "accuracy"), ("clone", "f1"), ("search", "mrr"), ("search/cosqa", "mrr"), ("flaky", "f1")]


def runs_table(runs: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """A markdown table comparing runs: name -> (metrics.json, ledger.json); one column per test set
    of any run (first-seen order), showing its task's headline metric."""
    sets = list(dict.fromkeys(s for metrics, _ in runs.values() for s in metrics.get("test", {})))
    columns = headline_columns(sets)
    head = "| run | method | trainable % | adapter bytes | threads | train s | total s | " + " | ".join(f"{s} {m}" for s, m in columns) + " |"
    lines = [head, "|" + "---|" * (7 + len(columns))]
    for name, (metrics, ledger) in runs.items():
        params = ledger.get("parameters", {})
        wall = ledger.get("wall_seconds", {})
        cells = [
            name, str(ledger.get("method", "")), f"{params.get('trainable_percent', 0):.3f}",
            f"{ledger.get('adapter_bytes', 0):,}", str(ledger.get("torch_threads", "")),
            f"{ledger.get('train_seconds', wall.get('train_and_validate', 0)):.0f}",
            f"{sum(v for k, v in wall.items() if k not in NESTED_PHASES):.0f}",
        ]
        test = metrics.get("test", {})
        cells += [f"{test[s][m]:.4f}" if m in test.get(s, {}) else "" for s, m in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
