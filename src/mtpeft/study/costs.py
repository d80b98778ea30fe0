"""The cost ledger of a study: per cell and per setting (the cells one way of serving the tasks
needs), and the savings of one multi-task PEFT run against the single-task settings.

- trainable parameters: the ledger's (method + heads); effective parameters of a setting: the sum
  over its cells, since a single-task setting keeps one module (and head) per task;
- storage bytes: what a run adds to the shared frozen backbone: the method's saved files + heads
  (full fine-tuning saves the whole backbone);
- wall seconds: every phase of the ledger (load, train + validate, reload, evaluate);
- training FLOPs, estimated: tokens x (4 N + 2 N_trainable), N = backbone parameters (method
  included), N_trainable = the method's trainable ones: forward 2N per token, backward 2N for the
  activation gradients (through the frozen layers too) + 2 N_trainable for the weight gradients;
  that is Kaplan et al.'s 6N when everything trains. Heads, attention scores and evaluation
  are left out; tokens are the non-padding training tokens of the ledger;
- peak RSS: the largest of the setting's cells (each cell is its own process under ``mtpeft study``).
"""

from __future__ import annotations

from typing import Any

COST_KEYS = ("trainable_params", "storage_bytes", "wall_seconds", "train_flops", "peak_rss_mb")
# the ledger's top-level phases; "validate" and "save_last" are timed inside train_and_validate
TOP_PHASES = ("load_data", "load_model", "train_and_validate", "reload", "evaluate", "evaluate_test")


def whole_run_timed(ledger: dict[str, Any]) -> bool:
    """Whether the ledger's seconds cover every sitting of the run. Ledgers written before the
    totals were carried in ``last/`` (no ``whole_run_timed`` key) time only a resumed run's last
    sitting."""
    return bool(ledger.get("whole_run_timed", not ledger.get("resumed", False)))


def training_flops(tokens: float, backbone_params: float, trainable_backbone_params: float) -> float:
    return float(tokens) * (4.0 * backbone_params + 2.0 * trainable_backbone_params)


def cell_costs(ledger: dict[str, Any]) -> dict[str, float]:
    params = ledger.get("parameters", {})
    backbone = params.get("backbone_total", 0)
    method = params.get("method_trainable", 0)
    return {
        "trainable_params": params.get("trainable", method + params.get("heads", 0)),
        "method_params": method,
        "storage_bytes": ledger.get("adapter_bytes", 0) + ledger.get("heads_bytes", 0),
        "wall_seconds": float(sum(v for k, v in ledger.get("wall_seconds", {}).items() if k in TOP_PHASES)),
        "train_seconds": float(ledger.get("wall_seconds", {}).get("train_and_validate", 0.0)),
        "train_tokens": ledger.get("train_tokens", 0),
        "train_flops": training_flops(ledger.get("train_tokens", 0), backbone, method),
        "peak_rss_mb": float(ledger.get("peak_rss_mb", 0.0)),
    }


def setting_costs(ledgers: list[dict[str, Any]]) -> dict[str, float]:
    """Sum over the cells of a setting (effective parameters, bytes, time, FLOPs); RSS: the max."""
    cells = [cell_costs(l) for l in ledgers]
    total = {k: float(sum(c[k] for c in cells)) for k in cells[0] if k != "peak_rss_mb"} if cells else {}
    total["peak_rss_mb"] = max((c["peak_rss_mb"] for c in cells), default=0.0)
    total["cells"] = len(cells)
    return total


def savings(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Per cost: candidate / baseline (ratio) and 100 x (1 - ratio) (percent less)."""
    out = {}
    for key in ("trainable_params", "storage_bytes", "wall_seconds", "train_flops"):
        base = baseline.get(key)
        ratio = candidate.get(key, 0.0) / base if base else None
        out[key] = {"ratio": ratio, "less_percent": None if ratio is None else 100.0 * (1.0 - ratio)}
    return out
