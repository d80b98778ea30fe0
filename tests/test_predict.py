"""Issue 9, items 12-19: ``mtpeft predict`` as a user expects it (on the shared untrained tiny run)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mtpeft.cli import main
from tests.conftest import write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict-inputs")
    funcs = [{"idx": f"f{i}", "func": f"int f{i}(char *s) {{ char b[{i}]; strcpy(b, s); return {i}; }}"} for i in range(6)]
    java = [{"idx": str(100 + i), "func": f"public class A {{ void m{i}() {{ int x = {i}; }} }}"} for i in range(6)]
    return {
        "functions": write_jsonl(root / "functions.jsonl", funcs),
        "java": write_jsonl(root / "java.jsonl", java),
        "pairs": write_jsonl(root / "pairs.jsonl", [{"idx1": "100", "idx2": str(101 + i)} for i in range(4)]),
        "inline_pairs": write_jsonl(root / "inline.jsonl", [{"func1": j["func"], "func2": java[0]["func"]} for j in java[:3]]),
        "queries": write_jsonl(root / "queries.jsonl", [{"idx": f"q{i}", "query": f"copy string {i}"} for i in range(3)]),
        "corpus": write_jsonl(root / "corpus.jsonl", [{"idx": f"c{i}", "code": f"def c{i}(x): return x + {i}"} for i in range(150)]),
    }


def run_predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- item 12 --------------------------------------------------------------------------------------
def test_help_names_tasks_fields_formats_and_where_output_goes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for expected in ("defect:", "clone:", "search:", "flaky:", "func1/func2", "idx1/idx2", "--functions", "--corpus",
                     "codexglue", "jsonl", "stdout", "full_code", "--top-k"):
        assert expected in text, expected


# ---- item 13 --------------------------------------------------------------------------------------
def test_predictions_go_to_stdout_and_the_run_directory_is_untouched(tiny_run, inputs, capsys):
    before = sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*"))
    code, out, _ = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [f"f{i}" for i in range(6)] and all(r[1] in ("0", "1") for r in rows)
    assert sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*")) == before


# ---- item 14 --------------------------------------------------------------------------------------
def test_jsonl_output_has_probability_and_decision(tiny_run, inputs, capsys, tmp_path):
    out_file = tmp_path / "p.jsonl"
    code, out, err = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect", "--format", "jsonl", "-o", out_file)
    assert code == 0 and out == "" and str(out_file) in err
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert set(row) == {"task", "idx", "probability", "prediction"} and 0 <= row["probability"] <= 1
    state = json.loads((tiny_run / "checkpoint" / "state.json").read_text())
    threshold = state["tasks"]["defect"]["threshold"]
    assert all(row["prediction"] == int(row["probability"] >= threshold) for row in rows)


# ---- item 15 --------------------------------------------------------------------------------------
def test_search_top_k(tiny_run, inputs, capsys):
    code, out, _ = run_predict(capsys, tiny_run, inputs["queries"], "--task", "search", "--corpus", inputs["corpus"], "--top-k", "7")
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 3 and all(len(a["answers"]) == 7 for a in answers)
    code, out, _ = run_predict(capsys, tiny_run, inputs["queries"], "--task", "search", "--corpus", inputs["corpus"])
    assert all(len(json.loads(line)["answers"]) == 100 for line in out.splitlines())  # the documented default
    code, _, err = run_predict(capsys, tiny_run, inputs["queries"], "--task", "search", "--corpus", inputs["corpus"], "--top-k", "0")
    assert code == 2 and "--top-k must be at least 1" in err


# ---- item 16 --------------------------------------------------------------------------------------
def test_clone_idx_pairs_need_functions_given_on_the_command_line(tiny_run, inputs, capsys):
    code, out, err = run_predict(capsys, tiny_run, inputs["pairs"], "--task", "clone")
    assert code == 2 and out == "" and "--functions FILE" in err and "Traceback" not in err
    code, out, _ = run_predict(capsys, tiny_run, inputs["pairs"], "--task", "clone", "--functions", inputs["java"])
    assert code == 0 and [line.split("\t")[:2] for line in out.splitlines()] == [["100", str(101 + i)] for i in range(4)]
    code, out, _ = run_predict(capsys, tiny_run, inputs["inline_pairs"], "--task", "clone")  # inline code needs none
    assert code == 0 and len(out.splitlines()) == 3


# ---- item 17 --------------------------------------------------------------------------------------
def test_search_queries_without_code_ask_for_a_corpus(tiny_run, inputs, capsys):
    code, _, err = run_predict(capsys, tiny_run, inputs["queries"], "--task", "search")
    assert code == 2 and "give --corpus FILE" in err


# ---- item 18 --------------------------------------------------------------------------------------
def test_several_tasks_in_one_call_load_the_model_once(tiny_run, inputs, capsys, monkeypatch):
    from mtpeft import recipes

    loads = []
    real = recipes.load_run
    monkeypatch.setattr(recipes, "load_run", lambda *a, **k: loads.append(a) or real(*a, **k))
    code, out, _ = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect,flaky")
    assert code == 0 and len(loads) == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["task"] for r in rows] == ["defect"] * 6 + ["flaky"] * 6
    code, _, err = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect,flaky", "--format", "codexglue")
    assert code == 2 and "one task" in err
    code, _, err = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect,vuln")
    assert code == 2 and "'vuln'" in err


# ---- item 19 --------------------------------------------------------------------------------------
def test_no_progress_bars_when_stderr_is_not_a_terminal(tiny_run, inputs, capsys, tmp_path):
    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["training"]["progress"] = True  # a run trained with bars on
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_predict(capsys, run, inputs["functions"], "--task", "defect")
    assert code == 0 and "predict defect" not in err and "it/s" not in err


def test_progress_bars_on_a_terminal(tiny_run, inputs, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = run_predict(capsys, tiny_run, inputs["functions"], "--task", "defect")
    assert code == 0 and "predict defect" in err


def test_one_input_file_serves_heads_trained_on_other_field_names(tiny_run, inputs, capsys, tmp_path):
    """A run whose flaky head was trained on Flakify's full_code still predicts a file of func records."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["tasks"]["flaky"].setdefault("options", {})["text_field"] = "full_code"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_predict(capsys, run, inputs["functions"], "--task", "defect,flaky")
    assert code == 0, err
    assert [json.loads(line)["task"] for line in out.splitlines()] == ["defect"] * 6 + ["flaky"] * 6
