"""Plain-text tables for the terminal: per-task metrics and the ledger."""

from __future__ import annotations

from typing import Any


def format_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per split and set; ``trivial`` rows (majority / all-positive / random ranking) if given."""
    sets = sorted({name for split in ("valid", "test", "trivial") for name in metrics.get(split, {})})
    names = ["accuracy", "f1", "precision", "recall", "mrr"]
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

HEADLINE = [("defect", "accuracy"), ("clone", "f1"), ("search", "mrr"), ("search/cosqa", "mrr"), ("flaky", "f1")]


def runs_table(runs: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """A markdown table comparing runs: name -> (metrics.json, ledger.json)."""
    head = "| run | method | trainable % | adapter bytes | threads | train s | total s | " + " | ".join(f"{s} {m}" for s, m in HEADLINE) + " |"
    lines = [head, "|" + "---|" * (7 + len(HEADLINE))]
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
        cells += [f"{test[s][m]:.4f}" if m in test.get(s, {}) else "" for s, m in HEADLINE]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
