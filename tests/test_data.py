"""Bad input gives one clear error naming file:line, or an explicit counted skip."""

import gzip
from pathlib import Path

import pytest

from mtpeft.data import SkipCounter, read_jsonl
from mtpeft.errors import DataError, MtpeftError
from mtpeft.tasks import build_task
from tests.conftest import write_jsonl


def lines(path: Path, *rows: str) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    path = lines(tmp_path / "d.jsonl", '{"func": "int a;", "target": 0}', "", '{"func": "int b;", "target": 1', '{"func": "x", "target": 1}')
    with pytest.raises(DataError, match=r"d\.jsonl:3: malformed JSON"):
        build_task("defect").read_train(path, SkipCounter())


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"target": 1}', "missing field: expected one of func"),
        ('{"func": "int a;", "target": 2}', "label 'target' must be 0 or 1, got 2"),
        ('{"func": "   ", "target": 1}', "field 'func' is empty"),
        ('{"func": 42, "target": 1}', "field 'func' must be a string"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, row, message):
    path = lines(tmp_path / "d.jsonl", '{"func": "int a;", "target": 0}', row)
    with pytest.raises(DataError) as info:
        build_task("defect").read_train(path, SkipCounter())
    assert f"d.jsonl:2: {message}" in str(info.value)


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"func": "int a;", "target": 0}\n{"func": "caf\xe9", "target": 1}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8"):
        list(read_jsonl(path))


def test_gzip_is_read_and_truncated_gzip_is_reported(tmp_path):
    good = write_jsonl(tmp_path / "d.jsonl.gz", [{"func": "int a;", "target": 1}], gz=True)
    assert [r.data["target"] for r in read_jsonl(good)] == [1]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"func": "int a;", "target": 1}\n' * 50)[:30])
    with pytest.raises(DataError, match="broken.jsonl.gz"):
        list(read_jsonl(broken))


def test_skip_option_counts_and_keeps_the_rest(tmp_path):
    path = lines(tmp_path / "d.jsonl", '{"func": "int a;", "target": 0}', "{oops", '{"func": "int b;", "target": 7}', '{"func": "int c;", "target": 1}')
    skips = SkipCounter(enabled=True)
    examples = build_task("defect").read_train(path, skips)
    assert [e.text for e in examples] == ["int a;", "int c;"]
    assert skips.total == 2
    assert "d.jsonl:2" in skips.report()["first_error"][str(path)]


def test_clone_pair_with_unknown_function_names_line(tmp_path):
    functions = write_jsonl(tmp_path / "f.jsonl", [{"idx": "1", "func": "void a() {}"}])
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"idx1": "1", "idx2": "1", "label": 1}, {"idx1": "1", "idx2": "9", "label": 0}])
    task = build_task("clone", {"functions": str(functions)})
    with pytest.raises(DataError, match=r"p\.jsonl:2: function idx 9 not in the functions file"):
        task.read_train(pairs, SkipCounter())


def test_clone_reads_inline_pairs_and_field_names(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"func1": "void a() {}", "func2": "void b() {}", "label": "1"}])
    (example,) = build_task("clone").read_train(path, SkipCounter())
    assert (example.text, example.text_b, example.label) == ("void a() {}", "void b() {}", 1)


def test_search_corpus_answer_must_exist(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"idx": 0, "code": "def a(): pass"}])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"query": "a", "answer_idx": 0}, {"query": "b", "answer_idx": 5}])
    with pytest.raises(DataError, match=r"q\.jsonl:2: answer_idx 5 is not an idx of the corpus"):
        build_task("search").read_eval("search/x", {"queries": str(queries), "corpus": str(corpus)}, SkipCounter(), None, 0)


def test_search_uses_docstring_and_drops_negative_pairs(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"docstring": "sum", "code": "def s(): pass"}, {"query": "x", "code": "def y(): pass", "label": 0}])
    pairs = build_task("search").read_train(path, SkipCounter())
    assert [(p.query, p.code) for p in pairs] == [("sum", "def s(): pass")]


def test_flaky_field_choice(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"full_code": "full", "final_code": "final", "flaky": True}])
    assert build_task("flaky").read_train(path, SkipCounter())[0].text == "full"
    assert build_task("flaky", {"text_field": "final_code"}).read_train(path, SkipCounter())[0].text == "final"


def test_unknown_task_lists_valid_ones():
    with pytest.raises(MtpeftError, match="unknown task 'vuln'; valid tasks: clone, defect, flaky, search"):
        build_task("vuln")
