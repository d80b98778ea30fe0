"""Affinity and cost computations against hand-computed values; the study report rendered from a
fake study folder (every table, CSV and PNG; the findings' verdicts from designed numbers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mtpeft.study.affinity import affinity_matrix, mean_matrix
from mtpeft.study.costs import cell_costs, savings, setting_costs, training_flops

TASKS = ["defect", "clone", "search", "flaky"]
BASE = {"defect": 0.60, "clone": 0.90, "search": 0.70, "search/cosqa": 0.40, "flaky": 0.50}
METRIC = {"defect": "accuracy", "clone": "f1", "search": "mrr", "search/cosqa": "mrr", "flaky": "f1"}
OFFSET = {"full": 0.01, "lora": 0.0, "serial_adapter": 0.01 + 0.005}
MULTI_DROP = {"defect": -0.01, "clone": -0.01, "search": -0.05, "search/cosqa": -0.05, "flaky": -0.02}
PAIR = {frozenset(("search", "clone")): 0.02, frozenset(("search", "defect")): -0.03}
# defect's majority class sits among the cells' defect accuracies (0.57-0.615): some cells beat it by more
# than the 1-point noise margin, some by less (not read as beating it), some not at all
TRIVIAL = {"defect": 0.585, "clone": 0.869, "search": 0.006, "search/cosqa": 0.0015, "flaky": 0.078}
POSITIVE_SHARE = {"clone": 0.768, "flaky": 0.05}  # the always-positive baseline's precision on the F1 sets
SIZES = {"defect": 1000, "clone": 1000, "search": 1000, "search/cosqa": 500, "flaky": 1000}


def test_affinity_matrix_by_hand():
    single = {"a": 0.5, "b": 0.8, "c": 0.6}
    pairs = {frozenset("ab"): {"a": 0.55, "b": 0.78}, frozenset("ac"): {"a": 0.5, "c": 0.7}}
    m = affinity_matrix(["a", "b", "c"], single, pairs)
    assert m["a"]["b"] == pytest.approx(5.0) and m["b"]["a"] == pytest.approx(-2.0)
    assert m["a"]["c"] == pytest.approx(0.0) and m["c"]["a"] == pytest.approx(10.0)
    assert m["a"]["a"] is None and m["b"]["c"] is None  # diagonal; missing pair
    other = affinity_matrix(["a", "b", "c"], single, {frozenset("ab"): {"a": 0.45, "b": 0.8}})
    avg = mean_matrix([m, other])
    assert avg["a"]["b"] == pytest.approx(0.0) and avg["b"]["a"] == pytest.approx(-1.0) and avg["c"]["a"] == pytest.approx(10.0)


def test_costs_by_hand():
    assert training_flops(1000, 1010, 10) == 1000 * (4 * 1010 + 2 * 10)
    assert training_flops(10, 100, 100) == 6 * 100 * 10  # full fine-tuning: 6N per token
    ledger = {"parameters": {"backbone_total": 1010, "method_trainable": 10, "heads": 5, "trainable": 15},
              "adapter_bytes": 40, "heads_bytes": 20, "train_tokens": 1000, "peak_rss_mb": 300.0,
              "wall_seconds": {"load_data": 1.0, "train_and_validate": 8.0, "validate": 3.0, "evaluate_test": 1.0}}
    c = cell_costs(ledger)
    # wall: top-level phases only ("validate" is timed inside train_and_validate)
    assert (c["trainable_params"], c["storage_bytes"], c["wall_seconds"], c["train_flops"]) == (15, 60, 10.0, 4_060_000)
    big = ledger | {"peak_rss_mb": 500.0}
    s = setting_costs([ledger, ledger, big])
    assert (s["trainable_params"], s["storage_bytes"], s["wall_seconds"], s["peak_rss_mb"], s["cells"]) == (45, 180, 30.0, 500.0, 3)
    saved = savings(c, s)
    assert saved["train_flops"]["ratio"] == pytest.approx(1 / 3) and saved["storage_bytes"]["less_percent"] == pytest.approx(200 / 3)


def _metrics(method: str, regime: str, tasks: tuple[str, ...], weighting_offset: float = 0.0) -> dict:
    test = {}
    for s, base in BASE.items():
        task = s.split("/")[0]
        if task not in tasks:
            continue
        value = base + OFFSET[method]
        if regime == "multi":
            value += MULTI_DROP[s] + weighting_offset
        if regime == "pairs":
            value += PAIR.get(frozenset(tasks), 0.0) if s == task else 0.0
        test[s] = {METRIC[s]: round(value, 6)}
        if METRIC[s] == "f1":  # precision = recall = F1: the confusion counts follow from the sample's size and share
            test[s] |= {"precision": test[s]["f1"], "recall": test[s]["f1"]}
    return {"valid": test, "test": test}


def _ledger(method: str, tasks: tuple[str, ...]) -> dict:
    n = len(tasks)
    backbone, trainable = (1000, 1000) if method == "full" else (1010, 10)
    return {"parameters": {"backbone_total": backbone, "method_trainable": trainable, "heads": 10 * n, "trainable": trainable + 10 * n},
            "adapter_bytes": {"full": 4000, "lora": 40, "serial_adapter": 60}[method], "heads_bytes": 10 * n,
            "train_tokens": 1000 * n, "peak_rss_mb": 100.0 * n,
            "wall_seconds": {"train_and_validate": (30.0 if method == "full" else 10.0) * n},
            "torch_threads": 1, **({"cpus": ["CPU A (amx_bf16)"]} if method == "full" else {})}


def make_fake_study(root: Path) -> Path:
    """Designed numbers: search loses most in multi-task; search+clone +2 points, search+defect -3."""
    cells = []
    for method in ("full", "lora", "serial_adapter"):
        cells += [(method, "single", (t,), "equal", f"{method}/single/{t}") for t in TASKS]
        cells.append((method, "multi", tuple(TASKS), "equal", f"{method}/multi/equal"))
        if method != "full":
            cells += [(method, "pairs", (a, b), "equal", f"{method}/pairs/{a}+{b}") for i, a in enumerate(TASKS) for b in TASKS[i + 1:]]
    cells += [("lora", "multi", tuple(TASKS), w, f"lora/multi/{w}") for w in ("gradnorm", "famo")]
    cells.append(("lora", "multi", tuple(TASKS), "uncertainty", "lora/multi/uncertainty"))  # failed
    cells.append(("lora", "multi", tuple(TASKS), "loss_normalized", "lora/multi/loss_normalized"))  # killed while running
    summary = {"tasks": TASKS, "backbones": ["default"], "methods": ["full", "lora", "serial_adapter"], "weighting": "equal",
               "weightings": ["equal", "gradnorm", "famo", "uncertainty", "loss_normalized"], "budget": {"epochs": 1}, "base": "full.yaml",
               "cells": [{"path": p, "backbone": "default", "method": m, "regime": r, "tasks": list(t), "weighting": w, "state": "done"}
                         for m, r, t, w, p in cells]}
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps(summary))
    for method, regime, tasks, weighting, path in cells:
        folder = root / path
        folder.mkdir(parents=True)
        if weighting == "uncertainty":
            (folder / "study_cell.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom"}))
            continue
        if weighting == "loss_normalized":
            (folder / "study_cell.json").write_text(json.dumps({"state": "running"}))
            continue
        offset = {"equal": 0.0, "gradnorm": 0.01, "famo": -0.01}[weighting]
        metrics = _metrics(method, regime, tasks, offset)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "trivial_baselines.json").write_text(json.dumps(
            {"test": {s: {METRIC[s]: TRIVIAL[s]} | ({"precision": POSITIVE_SHARE[s]} if s in POSITIVE_SHARE else {}) for s in metrics["test"]}}))
        (folder / "data_report.json").write_text(json.dumps(
            {"sizes": {t: {"train": 10, "test": {s: SIZES[s] for s in metrics["test"] if s.split("/")[0] == t}} for t in tasks}}))
        # lora/single/clone: resumed from a checkpoint older than the carried ledger (one sitting timed);
        # lora/single/search: resumed with the ledger carried, so its seconds cover the whole run
        timing = {"lora/single/clone": {"resumed": True}, "lora/single/search": {"resumed": True, "whole_run_timed": True}}
        (folder / "ledger.json").write_text(json.dumps(_ledger(method, tasks) | timing.get(path, {"resumed": False})))
        weights = [{"step": s, **{t: 1.0 + (0.02 * s if t == "search" else -0.02 * s / 3) * (weighting != "equal") for t in tasks}} for s in range(1, 11)]
        losses = {t: 0.30 + 0.05 * (regime == "multi") for t in tasks}  # multi-task training leaves each loss higher
        (folder / "history.json").write_text(json.dumps([{"epoch": 1, "weights": weights, "train_loss": losses, "valid": metrics["valid"]}]))
    return root


def _csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_report_renders_every_table_and_plot_from_a_fake_study(tmp_path, capsys):
    from mtpeft.cli import main

    root = make_fake_study(tmp_path / "study")
    assert main(["report", str(root)]) == 0
    assert "report.md" in capsys.readouterr().out
    report = (root / "report.md").read_text()
    for heading in ("The paper's findings, checked", "Single-task vs multi-task", "Multi-task PEFT vs multi-task full",
                    "Task affinity", "Loss weightings", "Cost ledger", "Savings of one multi-task run", "Cells not finished",
                    "How precise each test set is", "What training saw"):
        assert heading in report, heading
    assert "lora/multi/uncertainty | failed | RuntimeError: boom" in report
    assert "lora/multi/loss_normalized | running or interrupted |" in report
    assert "older than the carried ledger (lora/single/clone):" in report
    assert "CPU A (amx_bf16), 1 thread(s): 5 cell(s)" in report and "not recorded, 1 thread(s):" in report
    for name in ("single_vs_multi.csv", "peft_vs_full.csv", "affinity_lora.csv", "affinity_serial_adapter.csv", "affinity_mean.csv",
                 "weightings.csv", "costs_cells.csv", "costs_settings.csv", "savings.csv", "findings.csv", "trivial_baselines.csv",
                 "standard_errors.csv", "training_single_vs_multi.csv"):
        assert len(_csv(root / name)) >= 2, name
    for name in ("multi_minus_single.png", "affinity_lora.png", "affinity_mean.png", "weightings_lora.png",
                 "weight_trajectories_lora.png", "savings.png"):
        assert (root / name).stat().st_size > 15_000, name  # a real figure, not an empty canvas
        assert f"({name})" in report

    rows = {(r["method"], r["test set"]): r for r in _csv(root / "single_vs_multi.csv")}
    assert float(rows[("lora", "search")]["Δ points"]) == pytest.approx(-5.0)
    assert float(rows[("serial_adapter", "clone")]["single-task"]) == pytest.approx(0.915)
    # defect 0.60 on 1,000 examples: binomial SE 1.55 points in each cell, so the difference's is 1.55·√2
    assert float(rows[("lora", "defect")]["SE of Δ (points)"]) == pytest.approx(100 * (2 * 0.6 * 0.4 / 1000) ** 0.5, rel=0.02)
    trained = {(r["method"], r["task"]): r for r in _csv(root / "training_single_vs_multi.csv")}
    assert float(trained[("lora", "flaky")]["Δ loss"]) == pytest.approx(0.05)
    assert float(trained[("serial_adapter", "search")]["Δ points"]) == pytest.approx(-5.0)  # the validation metric's drop
    errors = {r["test set"]: r for r in _csv(root / "standard_errors.csv")}
    assert errors["flaky"]["positives"] == "50" and errors["search"]["standard error by"] == "upper bound"
    assert 4 < float(errors["flaky"]["SE median (points)"]) < 10 and float(errors["clone"]["SE median (points)"]) < 1.6
    assert "median standard error of one cell above 1.6 points): search/cosqa (±2.2), flaky (±" in report
    affinity = {r["task measured \\ trained with"]: r for r in _csv(root / "affinity_lora.csv")}
    assert float(affinity["search"]["clone"]) == pytest.approx(2.0) and float(affinity["defect"]["search"]) == pytest.approx(-3.0)
    assert float(affinity["flaky"]["clone"]) == pytest.approx(0.0) and affinity["clone"]["clone"] == ""
    errors = {r["task measured \\ trained with"]: r for r in _csv(root / "affinity_se_lora.csv")}
    # defect alone 0.60, beside search 0.57, each on 1,000 examples: the two binomial variances add
    assert float(errors["defect"]["search"]) == pytest.approx(100 * (0.6 * 0.4 / 1000 + 0.57 * 0.43 / 1000) ** 0.5, rel=1e-3)
    assert "| defect | — | +0.0 ±2.2 | -3.0 ±2.2 |" in report
    saving = {(r["multi-task run"], r["against"]): r for r in _csv(root / "savings.csv")}
    vs_full = saving[("lora", "4 single-task full FT")]
    assert float(vs_full["FLOPs ratio"]) == pytest.approx(4000 * (4 * 1010 + 20) / (4 * 1000 * 6000), rel=1e-5)
    assert float(vs_full["storage ratio"]) == pytest.approx((40 + 40) / (4 * (4000 + 10)), rel=1e-5)
    assert float(vs_full["wall % less"]) == pytest.approx(100 * (1 - 40 / 120), rel=1e-5)
    settings = {(r["method"], r["setting"]): r for r in _csv(root / "costs_settings.csv")}
    assert int(settings[("full", "single-task")]["effective trainable params"]) == 4 * 1010
    weighting = {r["weighting"]: r for r in _csv(root / "weightings.csv")}
    assert set(weighting) == {"equal", "gradnorm", "famo"} and "search 1.20" in weighting["gradnorm"]["final weights"]

    beats = {(r["cell"], r["test set"]): r["beats it"] for r in _csv(root / "trivial_baselines.csv")}
    assert beats[("lora/single/defect", "defect")] == "yes"  # 0.60 against 0.585
    assert beats[("lora/multi/equal", "defect")] == "no"  # 0.59: ahead by less than the noise margin
    assert beats[("lora/pairs/defect+search", "defect")] == "no"  # 0.57
    assert {v for (cell, s), v in beats.items() if s != "defect"} == {"yes"}
    assert "Not readable: defect " in report and "| lora/multi/equal | defect | accuracy | 0.5900 | 0.5850 | +0.5 | no |" in report

    verdicts = {r["the paper's finding"]: r["verdict"] for r in _csv(root / "findings.csv")}
    assert verdicts == {
        "multi-task PEFT ≈ multi-task full fine-tuning": "reproduced",          # lora -1, serial +0.5 points
        "multi-task within a few points of single-task, code search losing most": "reproduced",  # -2.8 mean, search -5
        "the serial adapter is the most reliable all-rounder": "reproduced",
        "LoRA is best for code search": "partly",                               # second to serial on both search sets
        "search+clone help each other, search+defect interfere": "reproduced",
        "up to 85% less compute, storage ÷ number of tasks": "partly",          # 67% less wall time; method files 1/4
    }


def test_bars_and_heatmap_mark_the_sets_that_are_not_readable(tmp_path):
    from mtpeft.study import plots

    values = {"full": {"defect": 1.2, "clone": 0.4}, "lora": {"defect": 0.3, "clone": -0.2}}
    plain = plots.grouped_bars(values, tmp_path / "plain.png", "t", "points").read_bytes()
    marked = plots.grouped_bars(values, tmp_path / "marked.png", "t", "points", unreadable=frozenset({"defect"})).read_bytes()
    ignored = plots.grouped_bars(values, tmp_path / "ignored.png", "t", "points", unreadable=frozenset({"flaky"})).read_bytes()
    assert marked != plain and ignored == plain  # a set not in the plot changes nothing
    matrix = {"defect": {"defect": None, "clone": -3.0}, "clone": {"defect": 1.0, "clone": None}}
    plain = plots.affinity_heatmap(matrix, tmp_path / "a.png", "t").read_bytes()
    assert plots.affinity_heatmap(matrix, tmp_path / "b.png", "t", unreadable=frozenset({"defect"})).read_bytes() != plain


def test_the_report_marks_the_unreadable_sets_in_its_plots(tmp_path, monkeypatch):
    from mtpeft.study import plots, report

    marked: dict[str, frozenset] = {}
    for name in ("grouped_bars", "affinity_heatmap"):
        def recording(*args, _draw=getattr(plots, name), **kwargs):
            marked[args[1].name] = kwargs.get("unreadable", frozenset())
            return _draw(*args, **kwargs)
        monkeypatch.setattr(plots, name, recording)
    report.write_report(make_fake_study(tmp_path / "study"))
    # defect is not readable in the fake study (lora/multi/equal beats its baseline by 0.5 point only)
    for png in ("multi_minus_single.png", "affinity_lora.png", "affinity_mean.png", "weightings_lora.png"):
        assert marked[png] == {"defect"}, png


def test_report_of_a_study_without_finished_cells_says_so(tmp_path, capsys):
    from mtpeft.cli import main

    root = tmp_path / "empty"
    root.mkdir()
    (root / "study.json").write_text(json.dumps({"tasks": TASKS, "backbones": ["default"], "methods": ["lora"], "weighting": "equal",
                                                  "cells": [{"path": "lora/single/defect", "backbone": "default", "method": "lora",
                                                             "regime": "single", "tasks": ["defect"], "weighting": "equal"}]}))
    assert main(["report", str(root)]) == 2
    assert "no finished cell yet" in capsys.readouterr().err


def test_an_affinity_within_the_noise_margin_is_no_effect():
    from mtpeft.study.findings import search_clone_defect_affinity

    clear = {"search": {"clone": 2.0, "defect": -3.0}, "clone": {"search": 1.5}, "defect": {"search": -1.2}}
    assert search_clone_defect_affinity(clear).verdict == "reproduced"
    # +0.4 and -0.6 points are within a test set's noise: two of four hold
    noisy = {"search": {"clone": 0.4, "defect": -3.0}, "clone": {"search": 1.5}, "defect": {"search": -0.6}}
    assert search_clone_defect_affinity(noisy).verdict == "partly"


def test_confusion_counts_come_back_from_the_metrics_and_their_bootstrap_matches_one_over_examples():
    from mtpeft.evaluation.metrics import binary_f1
    from mtpeft.study.uncertainty import confusion_counts, f1_bootstrap_se, standard_error

    rng = np.random.default_rng(3)
    labels = (rng.random(1300) < 0.04).astype(int)
    predictions = np.where(labels == 1, rng.random(1300) < 0.5, rng.random(1300) < 0.015).astype(int)
    metrics = binary_f1(labels, predictions)
    tp, fp = int((labels & predictions).sum()), int(((1 - labels) & predictions).sum())
    fn = int(labels.sum()) - tp
    counts = confusion_counts(1300, labels.mean(), metrics["precision"], metrics["recall"])
    assert counts == (tp, fp, fn, 1300 - tp - fp - fn)
    # a bootstrap that resamples the examples themselves gives the same standard error
    draws = rng.integers(0, 1300, size=(2000, 1300))
    direct = np.std([binary_f1(labels[d], predictions[d])["f1"] for d in draws[:600]], ddof=1)
    assert f1_bootstrap_se(counts) == pytest.approx(direct, rel=0.15)
    assert standard_error("f1", metrics, {"precision": labels.mean()}, 1300).how == "bootstrap"
    # what cannot be recovered gives no standard error rather than a made-up one
    assert standard_error("f1", {"f1": 0.5}, {"precision": 0.04}, 1300) is None
    assert standard_error("accuracy", {"accuracy": 0.5}, {}, None) is None
    assert standard_error("accuracy", {"accuracy": 0.5}, {}, 100).value == pytest.approx(0.05)
    assert standard_error("mrr", {"mrr": 0.5}, {}, 400).value == pytest.approx(0.025)
