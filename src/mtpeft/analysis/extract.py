"""Tree-sitter extraction of functions and test methods from Java, C, C++ and Python files.

Uses the single-language grammar wheels (``tree-sitter-java``, ``-c``, ``-cpp``, ``-python``):
they work offline, unlike grammar bundles that download at run time. A function nested inside
another function is part of the outer one and is not extracted separately.

Test methods: a Java method annotated ``@Test`` (JUnit 4/5, also ``@ParameterizedTest`` and
``@RepeatedTest``), or a Python function or method whose name starts with ``test`` (pytest's
default collection rule, which also covers unittest ``TestCase`` methods).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import tree_sitter

EXTENSIONS = {
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".py": "python",
}
FUNCTION_NODES = {
    "java": ("method_declaration", "constructor_declaration"),
    "c": ("function_definition",),
    "cpp": ("function_definition",),
    "python": ("function_definition",),
}
# enclosing declarations whose names qualify a function's name (Class.method)
SCOPE_NODES = {
    "java": ("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"),
    "c": (),
    "cpp": ("class_specifier", "struct_specifier", "namespace_definition"),
    "python": ("class_definition",),
}
JUNIT_TEST_ANNOTATIONS = {"Test", "ParameterizedTest", "RepeatedTest", "TestFactory", "TestTemplate"}
SKIP_DIRECTORIES = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", "build", "target", "dist"}
DEFAULT_MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Function:
    """One extracted function; ``file`` is relative to the analysed root, lines are 1-based."""

    file: str
    language: str
    name: str
    line: int
    end_line: int
    code: str
    is_test: bool
    hash: str = field(default="")
    column: int = 0  # 0-based column of the first line (the code text starts there)

    def to_dict(self, with_code: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_code:
            data.pop("code")
        return data


@dataclass(frozen=True)
class Skipped:
    """A file that was not analysed (or only in part) and why."""

    file: str
    reason: str


@dataclass
class Extraction:
    functions: list[Function] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


@lru_cache(maxsize=None)
def parser_for(language: str) -> tree_sitter.Parser:
    if language == "java":
        import tree_sitter_java as grammar
    elif language == "c":
        import tree_sitter_c as grammar
    elif language == "cpp":
        import tree_sitter_cpp as grammar
    elif language == "python":
        import tree_sitter_python as grammar
    else:  # pragma: no cover - guarded by EXTENSIONS
        raise ValueError(language)
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def language_of(path: Path) -> str | None:
    return EXTENSIONS.get(path.suffix.lower())


def text(node: tree_sitter.Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def declarator_name(node: tree_sitter.Node) -> str:
    """C/C++: follow ``declarator`` fields (pointers, references) down to the function's name."""
    current = node.child_by_field_name("declarator")
    while current is not None:
        if current.type == "function_declarator":
            return text(current.child_by_field_name("declarator"))
        inner = current.child_by_field_name("declarator")
        if inner is None:
            # reference_declarator has no field name for its child
            inner = next((c for c in current.named_children if "declarator" in c.type), None)
        if inner is None:
            return text(current)
        current = inner
    return "<anonymous>"


def function_name(node: tree_sitter.Node, language: str) -> str:
    if language in ("c", "cpp"):
        return declarator_name(node)
    return text(node.child_by_field_name("name")) or "<anonymous>"


def scope_name(node: tree_sitter.Node) -> str:
    name = node.child_by_field_name("name")
    return text(name) if name is not None else ""


def java_annotations(node: tree_sitter.Node) -> set[str]:
    names = set()
    for child in node.children:
        if child.type == "modifiers":
            for mod in child.children:
                if mod.type in ("marker_annotation", "annotation"):
                    # org.junit.Test -> Test
                    names.add(text(mod.child_by_field_name("name")).rsplit(".", 1)[-1])
    return names


def is_test_function(node: tree_sitter.Node, language: str, name: str) -> bool:
    if language == "java":
        return bool(java_annotations(node) & JUNIT_TEST_ANNOTATIONS)
    if language == "python":
        return name.startswith("test")
    return False


def code_node(node: tree_sitter.Node, language: str) -> tree_sitter.Node:
    """Python decorators belong to the function's code (``@pytest.mark...`` matters to flakiness)."""
    if language == "python" and node.parent is not None and node.parent.type == "decorated_definition":
        return node.parent
    return node


def walk_functions(root: tree_sitter.Node, language: str) -> Iterator[tuple[tree_sitter.Node, list[str]]]:
    """Depth-first over function nodes, with the names of the enclosing scopes; no nested functions."""
    functions, scopes = FUNCTION_NODES[language], SCOPE_NODES[language]
    stack: list[tuple[tree_sitter.Node, list[str]]] = [(root, [])]
    while stack:
        node, names = stack.pop()
        if node.type in functions:
            yield node, names
            continue
        if node.type in scopes:
            names = names + [scope_name(node)] if scope_name(node) else names
        stack.extend((child, names) for child in reversed(node.children))


def first_error_line(node: tree_sitter.Node) -> int:
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            return current.start_point[0] + 1
        stack.extend(c for c in reversed(current.children) if c.has_error or c.is_missing)
    return node.start_point[0] + 1


def extract_source(source: bytes, language: str, file: str) -> tuple[list[Function], Skipped | None]:
    """Functions of one file's bytes; functions whose own syntax tree has errors are left out."""
    tree = parser_for(language).parse(source)
    found, broken = [], 0
    for node, scopes in walk_functions(tree.root_node, language):
        if node.has_error:
            broken += 1
            continue
        name = ".".join(scopes + [function_name(node, language)])
        span = code_node(node, language)
        code = text(span)
        found.append(Function(file, language, name, span.start_point[0] + 1, span.end_point[0] + 1, code,
                              is_test_function(node, language, function_name(node, language)), code_hash(code),
                              span.start_point[1]))
    problem = None
    if tree.root_node.has_error:
        problem = Skipped(file, f"syntax errors from line {first_error_line(tree.root_node)}: the functions "
                                f"there are skipped ({broken} damaged, {len(found)} kept)")
    return found, problem


def read_source(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why it is skipped (too large, binary, not UTF-8)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"larger than {max_bytes} bytes ({size})"
        data = path.read_bytes()
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    if b"\0" in data[:8192]:
        return None, "binary file"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {error.start})"
    return data, None


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """A path is excluded when a pattern matches its relative path or one of its parts."""
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns)


def source_files(root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Source files under ``root`` (a file or a directory) in a stable order; VCS, virtual-env and
    build folders are skipped, and so are paths matching an ``exclude`` glob (``test``, ``*/gen/*``)."""
    if root.is_file():
        return [root] if language_of(root) else []
    found = []
    for directory, subdirs, names in os.walk(root):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRECTORIES and not d.startswith(".")
                            and not excluded((here / d).relative_to(root).as_posix(), exclude))
        found.extend(here / n for n in sorted(names)
                     if language_of(Path(n)) and not excluded((here / n).relative_to(root).as_posix(), exclude))
    return found


def relative_name(path: Path, root: Path) -> str:
    base = root.parent if root.is_file() else root
    return path.relative_to(base).as_posix()


def extract_file(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[list[Function], Skipped | None]:
    name = relative_name(path, root)
    language = language_of(path)
    if language is None:
        return [], Skipped(name, "unsupported language")
    data, reason = read_source(path, max_bytes)
    if data is None:
        return [], Skipped(name, reason or "unreadable")
    return extract_source(data, language, name)


def extract_tree(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES, progress: bool = False,
                 exclude: Sequence[str] = ()) -> Extraction:
    """Every function under ``root``; files that cannot be analysed are listed, never fatal."""
    from tqdm.auto import tqdm

    result = Extraction()
    for path in tqdm(source_files(root, exclude), desc="files", unit="file", disable=not progress):
        functions, problem = extract_file(path, root, max_bytes)
        result.files += 1
        result.functions.extend(functions)
        if problem is not None:
            result.skipped.append(problem)
    return result
