"""Search index: build -> search round trip, incremental re-index, damaged or foreign indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtpeft.cli import main
from mtpeft.serving.index import CodeIndex, build_index

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

FIXTURES = Path(__file__).parent / "fixtures" / "project"


@pytest.fixture(scope="module")
def encoder(tiny_run):
    from mtpeft.inference.encoder import SharedEncoder

    return SharedEncoder.from_run(tiny_run, batch_size=8)


def test_index_then_search_finds_each_function_by_its_own_code(tiny_run, tmp_path, capsys):
    index_dir = tmp_path / "idx"
    assert main(["index", str(FIXTURES), "--run", str(tiny_run), "--index", str(index_dir), "--no-progress"]) == 0
    assert "indexed 20 functions in 7 files" in capsys.readouterr().out
    index = CodeIndex.load(index_dir)
    assert index.vectors.shape[0] == 20 and set(index.entries[0]) == {"file", "line", "end_line", "name", "language", "hash"}
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    # a query that is a function's own code (short enough for the query length) ranks it first
    code = "def add(a, b):\n    return a + b"
    assert main(["search", code, "--index", str(index_dir), "-k", "3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    results = answer["results"]
    assert answer["trained_languages"] == ["ruby", "python"]
    assert all(r["in_domain"] == (r["language"] == "python") for r in results)
    assert len(results) == 3 and [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert main(["search", "find the end of a string", "--index", str(index_dir), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("search head trained on ruby/python")
    assert len(lines) == 3 and all(":" in line for line in lines[1:])


def test_search_ranks_by_matrix_product(encoder):
    index, _ = build_index(FIXTURES, encoder)
    for row in (0, 7, 19):
        top = index.search(index.vectors[row : row + 1], k=20)[0]
        assert top[0]["hash"] == index.entries[row]["hash"] and top[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert len(top) == 20 and [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)


def test_reindex_embeds_only_what_changed(encoder, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES, tree)
    first, stats = build_index(tree, encoder)
    assert stats["functions_embedded"] == 20 and stats["files_changed"] == 7
    first.save(tmp_path / "idx")
    previous = CodeIndex.load(tmp_path / "idx")

    util = tree / "src" / "util.py"
    util.write_text(util.read_text().replace("return a + b", "return b + a  # commutative"))
    (tree / "src" / "extra.c").write_text("int one(void) { return 1; }\nint two(void) { return 2; }\n")
    (tree / "src" / "copy.c").unlink()
    before = encoder.encoded
    second, stats = build_index(tree, encoder, previous)
    # util.py changed (only `add` is new code), extra.c is new, copy.c is gone; nothing else re-read
    assert (stats["files_changed"], stats["files_unchanged"], stats["files_removed"]) == (2, 5, 1)
    assert stats["functions_embedded"] == 3 and encoder.encoded - before <= 3
    assert len(second) == 20 - 2 + 2
    old = {e["hash"]: first.vectors[i] for i, e in enumerate(first.entries)}
    for i, e in enumerate(second.entries):
        if e["hash"] in old:  # untouched functions keep exactly their vectors
            np.testing.assert_array_equal(second.vectors[i], old[e["hash"]])
    names = {e["name"] for e in second.entries}
    assert {"one", "two", "add"} <= names and "copy_name" not in names
    add_row = next(i for i, e in enumerate(second.entries) if e["name"] == "add")
    assert second.search(second.vectors[add_row : add_row + 1], 1)[0][0]["name"] == "add"

    unchanged, stats = build_index(tree, encoder, second)
    assert stats["functions_embedded"] == 0 and stats["files_changed"] == 0
    np.testing.assert_array_equal(unchanged.vectors, second.vectors)


def test_an_index_of_another_run_is_rebuilt(encoder, tmp_path):
    index, _ = build_index(FIXTURES, encoder)
    index.fingerprint = "another run"
    _, stats = build_index(FIXTURES, encoder, index)
    assert stats["functions_embedded"] == 20


def test_missing_or_damaged_index_is_a_clear_error(tiny_run, tmp_path, capsys):
    assert main(["search", "x", "--index", str(tmp_path / "none")]) == 2
    assert "not an index directory" in capsys.readouterr().err
    assert main(["index", str(FIXTURES), "--run", str(tiny_run), "--index", str(tmp_path / "idx"), "--no-progress"]) == 0
    (tmp_path / "idx" / "vectors.safetensors").write_bytes(b"garbage")
    assert main(["search", "x", "--index", str(tmp_path / "idx")]) == 2
    assert "damaged index" in capsys.readouterr().err
    assert main(["search", "  ", "--index", str(tmp_path / "idx")]) == 2
    assert "the query is empty" in capsys.readouterr().err


def test_float16_prescoring_returns_the_float32_top_k():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = CodeIndex(vectors, [{"row": i} for i in range(len(vectors))])
    queries = vectors[:25] + 0.3 * rng.standard_normal((25, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, fast = index.search(queries, 10, "float32"), index.search(queries, 10, "float16")
    assert [[r["row"] for r in q] for q in fast] == [[r["row"] for r in q] for q in exact]
    np.testing.assert_allclose([[r["score"] for r in q] for q in fast], [[r["score"] for r in q] for q in exact], atol=2e-6)
    with pytest.raises(Exception, match="unknown prescore"):
        index.search(queries, 10, "int8")
