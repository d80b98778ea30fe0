"""tree-sitter extraction, the shared backbone pass and the analyze outputs (table, JSON, SARIF, HTML)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from mtpeft.analysis.extract import extract_file, extract_source, extract_tree, source_files
from mtpeft.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

FIXTURES = Path(__file__).parent / "fixtures" / "project"
SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def by_name(functions):
    return {f.name: f for f in functions}


# ---- extraction ---------------------------------------------------------------------------------
def test_java_methods_constructors_and_junit_tests():
    found = by_name(extract_file(FIXTURES / "src" / "Buffer.java", FIXTURES)[0])
    assert set(found) == {"Buffer.Buffer", "Buffer.copy", "Buffer.copyAgain", "Buffer.Inner.reset"}
    assert (found["Buffer.copy"].line, found["Buffer.copy"].end_line) == (12, 18)
    assert found["Buffer.copy"].code.startswith("public int copy(byte[] source") and found["Buffer.copy"].code.endswith("}")
    assert found["Buffer.copy"].file == "src/Buffer.java" and not any(f.is_test for f in found.values())
    tests = by_name(extract_file(FIXTURES / "tests" / "BufferTest.java", FIXTURES)[0])
    # @Test and the fully qualified @org.junit.jupiter.api.Test are tests; a helper is not
    assert {n: f.is_test for n, f in tests.items()} == {
        "BufferTest.copiesBytes": True, "BufferTest.waitsForServer": True, "BufferTest.helper": False}


def test_c_and_cpp_function_names():
    c = by_name(extract_file(FIXTURES / "src" / "copy.c", FIXTURES)[0])
    assert set(c) == {"copy_name", "find_end"}  # find_end returns a pointer: char *find_end(...)
    assert c["copy_name"].language == "c" and c["copy_name"].line == 3 and "strcpy(buffer, src);" in c["copy_name"].code
    cpp = by_name(extract_file(FIXTURES / "src" / "shape.cpp", FIXTURES)[0])
    assert set(cpp) == {"geo.Shape.Shape", "geo.Shape.~Shape", "geo.Shape.area", "geo.total"}
    assert cpp["geo.total"].language == "cpp" and (cpp["geo.total"].line, cpp["geo.total"].end_line) == (10, 16)


def test_python_functions_methods_pytest_tests_and_no_nested_functions():
    util = by_name(extract_file(FIXTURES / "src" / "util.py", FIXTURES)[0])
    assert set(util) == {"add", "Reader.read_lines", "Reader.parse"}  # parse's inner helper is part of parse
    assert util["Reader.parse"].code.startswith("@staticmethod")  # decorators belong to the function
    assert util["Reader.parse"].column == 4 and "def helper" in util["Reader.parse"].code
    tests = by_name(extract_file(FIXTURES / "tests" / "test_util.py", FIXTURES)[0])
    assert {n: f.is_test for n, f in tests.items()} == {
        "test_add": True, "TestReader.test_parse": True, "TestReader.setup_method": False}


def test_syntax_errors_keep_the_intact_functions_and_are_reported():
    functions, problem = extract_file(FIXTURES / "src" / "broken.py", FIXTURES)
    assert [f.name for f in functions] == ["fine"]
    assert problem is not None and problem.file == "src/broken.py" and "syntax errors from line 5" in problem.reason
    functions, problem = extract_source(b"int ok(void) { return 1; }\nint bad(void) { return (; }\n", "c", "x.c")
    assert [f.name for f in functions] == ["ok"] and problem is not None


def test_binary_huge_and_non_utf8_files_are_skipped_and_reported(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "tree")
    (tmp_path / "tree" / "blob.c").write_bytes(b"\x7fELF\0\0\0binary")
    (tmp_path / "tree" / "latin1.py").write_bytes(b"def f():\n    return '\xe9'\n")
    (tmp_path / "tree" / "big.java").write_text("class Big { void m() {} }\n" + "// padding\n" * 500)
    (tmp_path / "tree" / "notes.txt").write_text("not source")
    result = extract_tree(tmp_path / "tree", max_bytes=4000)
    reasons = {s.file: s.reason for s in result.skipped}
    assert reasons["blob.c"] == "binary file"
    assert reasons["latin1.py"].startswith("not UTF-8")
    assert reasons["big.java"].startswith("larger than 4000 bytes")
    assert "src/broken.py" in reasons and "notes.txt" not in reasons  # unsupported files are not source
    assert result.files == 10 and len(result.functions) == 20


# ---- the shared pass ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder(tiny_run):
    from mtpeft.inference.encoder import SharedEncoder

    return SharedEncoder.from_run(tiny_run, batch_size=4)


def test_one_pass_gives_every_head_the_answer_of_its_own_task(encoder):
    """The shared pass reproduces each task's own prediction path, and encodes each function once."""
    from mtpeft.tasks import EvalContext
    from mtpeft.tasks.binary import Example

    functions = extract_tree(FIXTURES).functions
    codes = [f.code for f in functions] + [functions[0].code]  # a repeated function is encoded once
    before = encoder.encoded
    out = encoder.run_heads(codes)
    assert out.passes == 1 and encoder.encoded - before == len(functions)
    ctx = EvalContext(encoder.tokenizer, encoder.max_len, 3, False, False)
    examples = [Example(str(i), c, None) for i, c in enumerate(codes)]
    for head in ("defect", "flaky"):
        own = encoder.tasks[head].probabilities(encoder.model, examples, ctx, head)
        np.testing.assert_allclose(out.probabilities[head], own, atol=1e-5)
    search = encoder.tasks["search"]
    own = search.embed(encoder.model, codes, ctx, encoder.max_len, "codes")
    np.testing.assert_allclose(out.search, own, atol=1e-5)
    assert len(set(np.round(out.probabilities["defect"], 6))) > 1
    # a second call is answered from the cache: no backbone pass at all
    again = encoder.run_heads(codes)
    assert encoder.encoded - before == len(functions)
    np.testing.assert_allclose(again.probabilities["defect"], out.probabilities["defect"])


def test_nearest_neighbour_shortlist_stays_within_a_language():
    import torch

    from mtpeft.analysis.analyze import connected_groups, nearest_neighbours

    states = torch.tensor([[1.0, 0.0], [0.99, 0.1], [1.0, 0.01], [0.0, 1.0], [0.1, 0.99]])
    pairs = nearest_neighbours(states, groups=[0, 0, 1, 0, 0], k=1, floor=0.5, eligible=[True] * 5)
    assert {(a, b) for a, b, _ in pairs} == {(0, 1), (3, 4)}  # 2 is alone in its language
    assert nearest_neighbours(states, [0] * 5, 1, 0.5, [True, False, True, True, True]) and all(
        1 not in (a, b) for a, b, _ in nearest_neighbours(states, [0] * 5, 1, 0.5, [True, False, True, True, True]))
    assert connected_groups([(0, 1), (3, 4), (1, 2)]) == [[0, 1, 2], [3, 4]]


# ---- analyze outputs ------------------------------------------------------------------------------
def sarif_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(document)]


def test_analyze_writes_table_json_valid_sarif_and_escaped_html(tiny_run, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES, tree)
    (tree / "src" / "xss.c").write_text('int evil(void) { return puts("</pre><script>alert(1)</script>"); }\n')
    (tree / "src" / "blob.py").write_bytes(b"\0\0\0")
    out = tmp_path / "out"
    assert main(["analyze", str(tree), "--run", str(tiny_run), "-o", str(out), "--min-score", "0", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "defect trained on c" in table and "flaky trained on java" in table and "out of domain" in table
    rows = [line for line in table.splitlines() if ":" in line and line[:6].strip().replace(".", "").isdigit()]
    risks = [float(r[:6]) for r in rows]
    in_domain = [r[6] == " " for r in rows]
    assert in_domain == sorted(in_domain, reverse=True)  # in-domain first, then by risk
    assert risks[: sum(in_domain)] == sorted(risks[: sum(in_domain)], reverse=True)

    report = json.loads((out / "analysis.json").read_text())
    assert report["heads"]["defect"]["languages"] == ["c"] and report["heads"]["flaky"]["languages"] == ["java"]
    assert report["summary"]["functions"] == 21 and report["summary"]["test_methods"] == 4
    assert report["summary"]["backbone_passes"] == 1
    fns = {f["name"]: f for f in report["functions"]}
    assert fns["evil"]["scores"]["defect"]["in_domain"] is True
    assert fns["geo.total"]["scores"]["defect"]["in_domain"] is False  # C++ is not the C it learned
    assert "flaky" not in fns["geo.total"]["scores"]  # flaky only for test methods
    assert fns["test_add"]["scores"]["flaky"]["in_domain"] is False  # pytest test: Python, not Java
    assert fns["BufferTest.copiesBytes"]["scores"]["flaky"]["in_domain"] is True
    assert {s["file"] for s in report["skipped"]} == {"src/blob.py", "src/broken.py"}

    sarif = json.loads((out / "analysis.sarif").read_text())
    assert sarif_errors(sarif) == []
    results = sarif["runs"][0]["results"]
    assert len(results) == 21 + 4  # --min-score 0: every defect score and every flaky score of a test
    levels = {r["message"]["text"].split(":")[0]: r["level"] for r in results if r["ruleId"] == "mtpeft/defect"}
    assert levels["evil"] == "warning" and levels["geo.total"] == "note"
    broken = json.loads(json.dumps(sarif))
    broken["runs"][0]["results"][0]["level"] = "critical"
    del broken["runs"][0]["tool"]["driver"]["name"]
    assert len(sarif_errors(broken)) == 2  # the schema check can fail

    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "out of domain" in html and "src/copy.c:3" in html and "http" not in html.split("<body>")[1]


def test_min_score_selects_the_sarif_results(tiny_run, tmp_path, capsys):
    sarif_path = tmp_path / "a.sarif"
    assert main(["analyze", str(FIXTURES / "src" / "copy.c"), "--run", str(tiny_run), "--sarif", str(sarif_path),
                 "--min-score", "1", "--no-progress"]) == 0
    document = json.loads(sarif_path.read_text())
    assert sarif_errors(document) == [] and document["runs"][0]["results"] == []
    assert main(["analyze", str(FIXTURES), "--run", str(tiny_run), "--min-score", "2"]) == 2
    assert "--min-score must be a probability" in capsys.readouterr().err


def test_html_report_is_capped(tiny_run, tmp_path, capsys):
    html_path = tmp_path / "r.html"
    assert main(["analyze", str(FIXTURES), "--run", str(tiny_run), "--html", str(html_path), "--min-score", "0",
                 "--html-findings", "3", "--no-progress"]) == 0
    html = html_path.read_text()
    assert html.count('<section class="finding">') == 3 and "Showing the top 3 of 20" in html


def test_missing_path_is_one_clear_error(tiny_run, tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere"), "--run", str(tiny_run)]) == 2
    assert "no such file or directory" in capsys.readouterr().err


# ---- clones ---------------------------------------------------------------------------------------
def clone_examples(codes):
    from mtpeft.tasks.binary import Example

    pairs = [(0, 1), (1, 2), (0, 3), (2, 3)]
    return pairs, [Example(f"{a}\t{b}", codes[a], None, codes[b]) for a, b in pairs]


@pytest.mark.parametrize("pair_encoding", ["separate", "joint"])
def test_clone_confirmation_matches_the_clone_task(tmp_path, pair_encoding):
    """Separate runs: the pair head over the shared pass's pooled states; joint runs: only the
    shortlisted pairs are re-encoded jointly. Both equal the clone task's own predictions."""
    from mtpeft.inference.encoder import SharedEncoder
    from mtpeft.tasks import EvalContext
    from tests.conftest import save_untrained_run, tiny_task_files

    files = tiny_task_files(tmp_path / "data")
    files["clone"]["options"]["pair_encoding"] = pair_encoding
    encoder = SharedEncoder.from_run(save_untrained_run(tmp_path / "run", files), batch_size=2)
    assert encoder.clone_mode == pair_encoding
    codes = [f.code for f in extract_tree(FIXTURES / "src").functions][:4]
    pairs, examples = clone_examples(codes)
    before = encoder.encoded
    states = encoder.run_heads(codes, ["clone"]).clone_states
    ours = encoder.clone_probabilities(pairs, codes, states)
    # separate: 4 functions, one pass each, nothing more; joint: plus one pass per shortlisted pair
    assert encoder.encoded - before == (4 if pair_encoding == "separate" else 4 + len(pairs))
    ctx = EvalContext(encoder.tokenizer, encoder.max_len, 2, False, False)
    own = encoder.tasks["clone"].probabilities(encoder.model, examples, ctx, "clone")
    np.testing.assert_allclose(ours, own, atol=1e-5)


def test_analyze_groups_the_confirmed_clones(tiny_run):
    from mtpeft.analysis.analyze import AnalyzeOptions, analyze_path
    from mtpeft.inference.encoder import SharedEncoder

    encoder = SharedEncoder.from_run(tiny_run)
    encoder.tasks["clone"].threshold = 0.0  # confirm every shortlisted pair: the shortlist is what is tested
    analysis = analyze_path(FIXTURES, encoder, AnalyzeOptions(clone_neighbours=1, clone_min_similarity=-1.0))
    names = [f.name for f in analysis.functions]
    pairs = {(names[p["a"]], names[p["b"]]) for p in analysis.clone_pairs}
    # copy and copyAgain have the same body: each is the other's nearest neighbour
    assert ("Buffer.copy", "Buffer.copyAgain") in pairs
    languages = {(analysis.functions[p["a"]].language, analysis.functions[p["b"]].language) for p in analysis.clone_pairs}
    assert all(a == b for a, b in languages)  # never across languages
    short = {i for i, f in enumerate(analysis.functions) if f.end_line - f.line + 1 < 3}
    assert not any(p["a"] in short or p["b"] in short for p in analysis.clone_pairs)  # one-liners left out
    assert analysis.stats["clone_shortlist"] <= len(analysis.functions)  # k = 1: at most one pair per function
    grouped = sorted(i for g in analysis.clone_groups for i in g)
    assert grouped == sorted({i for p in analysis.clone_pairs for i in (p["a"], p["b"])})


def test_exclude_globs_skip_folders_and_files():
    assert {p.name for p in source_files(FIXTURES, ["tests"])} == {"Buffer.java", "broken.py", "copy.c", "shape.cpp", "util.py"}
    assert {p.name for p in source_files(FIXTURES, ["*.py", "src/shape.*"])} == {"Buffer.java", "copy.c", "BufferTest.java"}


def test_a_run_saved_before_pair_encoding_loads_as_joint(tmp_path):
    """Older runs' configs do not name pair_encoding; their one-input clone head says joint."""
    import yaml

    from mtpeft.inference.encoder import SharedEncoder
    from tests.conftest import save_untrained_run, tiny_task_files

    files = tiny_task_files(tmp_path / "data")
    files["clone"]["options"]["pair_encoding"] = "joint"
    run = save_untrained_run(tmp_path / "run", files)
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["tasks"]["clone"]["options"]["pair_encoding"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert SharedEncoder.from_run(run).clone_mode == "joint"
