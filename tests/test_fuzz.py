"""Issue 9, item 22: fuzzed inputs for the readers and the CLI. Every outcome is a result, a
one-line error (exit 2), or, with --skip-bad-records, a counted skip; never a traceback, never a
partial output file. Example counts are bounded so the suite stays fast."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtpeft.cli import main
from mtpeft.data import SkipCounter
from mtpeft.errors import MtpeftError
from mtpeft.tasks import build_task
from tests.conftest import write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TASK_NAMES = ("defect", "clone", "search", "flaky")
FIELDS = ["idx", "func", "code", "target", "label", "flaky", "full_code", "func1", "func2", "idx1", "idx2",
          "query", "docstring", "answer_idx"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0xDFFF), max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), children, max_size=3),
    max_leaves=8,
)
records = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)


def read(task_name: str, path: Path, skip: bool) -> tuple[list, SkipCounter]:
    options = {"functions": str(path)} if task_name == "clone" else {}
    skips = SkipCounter(enabled=skip)
    return build_task(task_name, options).read_train(str(path), skips), skips


def only_clean_errors(task_name: str, path: Path, skip: bool) -> tuple[list, SkipCounter] | None:
    try:
        return read(task_name, path, skip)
    except MtpeftError as error:
        assert "\n" not in str(error) and str(error)
        return None


@pytest.mark.parametrize("task_name", TASK_NAMES)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@FUZZ
@given(data=st.binary(max_size=600), skip=st.booleans())
def test_random_bytes_read_or_fail_in_one_line(tmp_path, task_name, suffix, data, skip):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    only_clean_errors(task_name, path, skip)


@pytest.mark.parametrize("task_name", TASK_NAMES)
@FUZZ
@given(rows=st.lists(records, min_size=1, max_size=6), deep=st.booleans())
def test_wrong_json_types_fail_in_one_line_or_are_counted(tmp_path, task_name, rows, deep):
    lines = [json.dumps(r) for r in rows] + (["[" * 50000 + "]" * 50000, "1" * 5000] if deep else [])
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    only_clean_errors(task_name, path, skip=False)
    result = only_clean_errors(task_name, path, skip=True)
    if result is not None and task_name in ("defect", "flaky"):
        examples, skips = result
        assert len(examples) + skips.total == len(lines)  # every record is an example or a counted skip


@FUZZ
@given(cut=st.floats(min_value=0.0, max_value=0.98))
def test_a_truncated_gzip_is_one_line(tmp_path, cut):
    rows = [{"idx": i, "func": f"int f{i}() {{ return {i} * {i}; }}" * 20, "target": i % 2} for i in range(60)]
    whole = write_jsonl(tmp_path / "whole.jsonl.gz", rows, gz=True).read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: int(len(whole) * cut)])
    with pytest.raises(MtpeftError) as error:
        read("defect", path, skip=True)
    assert str(path) in str(error.value)


# ---- the CLI ---------------------------------------------------------------------------------------
def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("mtpeft: error:")]
    assert len(errors) == 1, err
    return errors[0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.lists(records, min_size=1, max_size=4).map(
    lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode())), task=st.sampled_from(TASK_NAMES))
def test_predict_on_fuzzed_input_writes_all_or_nothing(tiny_run, tmp_path, capsys, data, task):
    source, target = tmp_path / "in.jsonl", tmp_path / "out" / "pred.txt"
    source.write_bytes(data)
    target.unlink(missing_ok=True)
    code = main(["predict", str(tiny_run), str(source), "--task", task, "-o", str(target)])
    if code == 2:
        one_line(capsys)
        assert not target.exists()  # never a partial prediction file
    else:
        assert code == 0 and target.exists()
        capsys.readouterr()


def test_predict_counts_skipped_records(tiny_run, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"idx": 1, "func": "int f() { return 1; }"}\n{not json\n{"idx": 2, "func": 5}\n', encoding="utf-8")
    assert main(["predict", str(tiny_run), str(source), "--task", "defect"]) == 2
    assert "in.jsonl:2: malformed JSON" in one_line(capsys)
    assert main(["predict", str(tiny_run), str(source), "--task", "defect", "--skip-bad-records"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 1 and "skipped 2 malformed record(s)" in out.err


def test_a_one_megabyte_function_is_predicted(tiny_run, tmp_path, capsys):
    source = write_jsonl(tmp_path / "big.jsonl", [{"idx": "big", "func": "int f() { " + "x += 1; " * 131072 + "}"}])
    assert main(["predict", str(tiny_run), str(source), "--task", "defect,flaky"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["task"], r["idx"]) for r in rows] == [("defect", "big"), ("flaky", "big")]


@pytest.mark.parametrize("damage", ["missing", "empty", "directory", "garbage_gz"])
def test_train_on_a_bad_split_is_one_line_and_leaves_no_outputs(tmp_path, task_files, capsys, damage):
    import yaml

    from tests.conftest import tiny_config

    target = Path(task_files["defect"]["valid"])
    if damage == "missing":
        target.unlink()
    elif damage == "empty":
        target.write_text("\n\n")
    elif damage == "directory":
        target.unlink()
        target.mkdir()
    else:
        target = target.with_suffix(".jsonl.gz")
        target.write_bytes(b"\x1f\x8b\x08\x00garbage")
        task_files["defect"]["valid"] = str(target)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config({"defect": task_files["defect"]}, tmp_path / "run")))
    assert main(["train", "--config", str(config)]) == 2
    assert str(target) in one_line(capsys)
    assert not any((tmp_path / "run").iterdir())


def test_a_lone_surrogate_is_a_bad_record_not_a_tokenizer_crash(tiny_run, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"idx": 1, "func": "int f() { return \\ud800; }"}\n', encoding="utf-8")
    assert main(["predict", str(tiny_run), str(source), "--task", "defect"]) == 2
    assert "in.jsonl:1: field 'func' is not valid Unicode" in one_line(capsys)
