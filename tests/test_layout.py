"""Issue 9, item 21: the package's import graph (read from the source, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, top_level_only: bool) -> set[str]:
    """The mtpeft modules a file imports (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (nested and top_level_only):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module:
                names += [f"{node.module}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("mtpeft"))
        for child in ast.iter_child_nodes(node):
            visit(child, nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, False)
    return found


def graph(top_level_only: bool) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / "mtpeft").rglob("*.py")}
    return {name: {i for i in imports_of(path, top_level_only) if i in files and i != name} for name, path in files.items()}


def cycle_through(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_backbone_and_tiny_import_each_other_in_no_way():
    edges = graph(top_level_only=False)  # an import inside a function is still an import
    for module in ("mtpeft.model.backbone", "mtpeft.model.tiny", "mtpeft.model.cache"):
        assert cycle_through(edges, module) is None, cycle_through(edges, module)


def test_no_import_cycles_at_module_level():
    edges = graph(top_level_only=True)
    cycles = {m: c for m in edges if (c := cycle_through(edges, m))}
    assert not cycles, next(iter(cycles.values()))


@pytest.mark.parametrize("package, allowed", [
    ("mtpeft.data", ("mtpeft.data", "mtpeft.errors", "mtpeft.fileio")),
    ("mtpeft.fileio", ()),
    ("mtpeft.errors", ()),
])
def test_lower_layers_import_nothing_above_them(package, allowed):
    """data sits below the tasks: reading files knows no task (the task-aware loading is tasks/loading.py)."""
    edges = graph(top_level_only=False)
    for module, targets in edges.items():
        if module == package or module.startswith(package + "."):
            above = sorted(t for t in targets if not any(t == a or t.startswith(a + ".") for a in allowed))
            assert not above, f"{module} imports {above}"


def test_one_atomic_writer_one_reader_loop_and_one_inference_loop():
    """Temporary-file-and-rename lives in fileio alone; read-with-skip in data.jsonl alone; the
    batched inference loop of the tasks in tasks.base alone."""
    sources = {module_name(p): p.read_text(encoding="utf-8") for p in (SRC / "mtpeft").rglob("*.py")}
    replacing = sorted(m for m, text in sources.items() if "os.replace(" in text)
    assert replacing == ["mtpeft.fileio"], replacing
    handling = sorted(m for m, text in sources.items() if "skips.handle(" in text)
    assert handling == ["mtpeft.data.jsonl"], handling
    looping = sorted(m for m, text in sources.items() if m.startswith("mtpeft.tasks") and "tqdm(" in text)
    assert looping == ["mtpeft.tasks.base"], looping


def test_clone_task_holds_no_mutable_state(tmp_path):
    import copy

    from mtpeft.data import SkipCounter
    from mtpeft.tasks import build_task
    from tests.conftest import tiny_task_files, write_jsonl

    files = tiny_task_files(tmp_path)
    task = build_task("clone", files["clone"]["options"])
    before = copy.deepcopy(vars(task))
    train = task.read_train(files["clone"]["train"], SkipCounter())
    other = write_jsonl(tmp_path / "other_functions.jsonl", [{"idx": str(100 + i), "func": f"void other{i}() {{}}"} for i in range(24)])
    predicted = task.read_predict(Path(files["clone"]["test"]), SkipCounter(), {"functions": str(other)})
    assert vars(task) == before  # reading never changes the task
    assert "other" in predicted[0].text and "other" not in task.read_train(files["clone"]["train"], SkipCounter())[0].text
    assert len(train) == 24
