"""scripts/results_table.py: the README's multi/single/floor table, drawn from run folders."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script


def write_run(folder: Path, test: dict, trivial: dict | None = None, sizes: dict | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"valid": {}, "test": test}))
    if trivial is not None:
        (folder / "trivial_baselines.json").write_text(json.dumps({"test": trivial}))
    if sizes is not None:
        (folder / "data_report.json").write_text(json.dumps({"sizes": sizes}))


def test_the_table_compares_runs_with_floors_and_names_unfinished_runs(tmp_path):
    table = load_script("results_table")
    multi, single = tmp_path / "mt", tmp_path / "st"
    write_run(multi, {"defect": {"accuracy": 0.60}, "clone": {"f1": 0.95}, "search": {"mrr": 0.70},
                      "search/cosqa": {"mrr": 0.30}, "flaky": {"f1": 0.50}},
              trivial={"defect": {"accuracy": 0.548}}, sizes={"defect": {"test": {"defect": 2400}}})
    write_run(single / "defect", {"defect": {"accuracy": 0.65}})
    write_run(single / "search", {"search": {"mrr": 0.72}, "search/cosqa": {"mrr": 0.25}})

    rows, missing = table.build(multi, single)
    by_set = {r["set"]: r for r in rows}
    assert by_set["defect"]["single"] == 0.65 and by_set["search/cosqa"]["single"] == 0.25
    assert abs(by_set["defect"]["multi_se"] - (0.6 * 0.4 / 2400) ** 0.5) < 1e-12
    assert missing == [str(single / "clone"), str(single / "flaky")]

    lines = {line.split(" | ")[0].lstrip("| "): line for line in table.markdown(rows, missing).splitlines()}
    assert "| 0.600 ± 0.010 | **0.650** | -5.0 | 0.647 | 0.548 |" in lines["Devign accuracy"]  # floor 0.647
    assert "| **0.950** |  |  | 0.896 |" in lines["BigCloneBench F1"]
    assert "| **0.300** | 0.250 | +5.0 | 0.294 |" in lines["CoSQA MRR"]
    assert "0.79 (Flakify)" in lines["FlakeFlagger F1"]
    assert any(line.startswith("Not finished yet") and "st/flaky" in line for line in lines)


def test_curves_put_each_single_task_run_beside_the_multi_task_run_even_one_still_going(tmp_path):
    table = load_script("results_table")
    multi, single = tmp_path / "mt", tmp_path / "st"
    (multi / "last").mkdir(parents=True)  # still going: its validations so far are in last/state.json
    going = [{"step": 10, "examples_seen": {"defect": 160, "clone": 160},
              "valid": {"defect": {"accuracy": 0.55}, "clone/unseen": {"f1": 0.9}, "clone": {"f1": 0.95}}}]
    (multi / "last" / "state.json").write_text(json.dumps({"progress": {"history": going}}))
    write_run(single / "defect", {"defect": {"accuracy": 0.6}}, trivial={"defect": {"accuracy": 0.548}})
    (single / "defect" / "history.json").write_text(json.dumps(
        [{"step": 10, "examples_seen": {"defect": 160}, "valid": {"defect": {"accuracy": 0.57}}}]))

    assert table.history_of(multi) == going
    assert list(table.curve_sets([going])) == ["defect", "clone", "clone/unseen"]  # the table's order
    assert table.draw_curves(multi, single, tmp_path / "curves.png").stat().st_size > 0
    assert table.build(multi, single)[0][0]["trivial"] == 0.548  # from the single-task run
    assert table.draw_curves(tmp_path / "none", tmp_path / "none", tmp_path / "no.png") is None
