"""``mtpeft analyze``: every function of a source tree through every head, from one backbone pass.

Per function: the vulnerability probability (defect head), for test methods the flaky probability,
and clone pairs: each function's nearest neighbours by cosine of the pooled states (never all N²
pairs, and only within one language) form a shortlist that the clone head confirms. Every score
says whether the function's language is one the head was trained on (``in_domain``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mtpeft import __version__
from mtpeft.analysis.extract import DEFAULT_MAX_FILE_BYTES, Extraction, Function, extract_tree
from mtpeft.errors import MtpeftError
from mtpeft.inference.encoder import BINARY_HEADS, SharedEncoder

HEAD_TITLES = {"defect": "vulnerability", "flaky": "flaky test", "clone": "clone", "search": "code search"}


@dataclass
class AnalyzeOptions:
    min_score: float | None = None  # None: each head's threshold chosen on validation
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    clone_neighbours: int = 5  # shortlist size per function for the clone head
    clone_min_similarity: float = 0.5  # cosine floor of the shortlist
    clone_min_lines: int = 3  # one-line getters are "clones" of each other and of no interest
    exclude: tuple[str, ...] = ()  # glob patterns of paths not to analyse
    progress: bool = False


@dataclass
class Analysis:
    """The result: functions with their scores, clone pairs/groups, skipped files, facts about the run."""

    root: str
    run: str
    functions: list[Function]
    scores: list[dict[str, dict[str, Any]]]  # per function: head -> {p, in_domain, flagged}
    clone_pairs: list[dict[str, Any]]
    clone_groups: list[list[int]]
    skipped: list[dict[str, str]]
    heads: dict[str, dict[str, Any]]  # head -> {languages, threshold, min_score}
    stats: dict[str, Any] = field(default_factory=dict)

    def risk(self, index: int) -> tuple[bool, float]:
        """(any in-domain score?, highest probability among in-domain scores, else among all)."""
        scores = self.scores[index].values()
        inside = [s["p"] for s in scores if s["in_domain"]]
        if inside:
            return True, max(inside)
        return False, max((s["p"] for s in scores), default=0.0)

    def ranked(self) -> list[int]:
        """Function indices by risk: in-domain scores first, then highest probability."""
        return sorted(range(len(self.functions)), key=lambda i: (not self.risk(i)[0], -self.risk(i)[1], i))

    def findings(self) -> list[tuple[int, str]]:
        """(function index, head) for every score at or above its head's minimum, by risk."""
        found = [(i, head) for i in self.ranked() for head, s in self.scores[i].items() if s["flagged"]]
        return found

    def to_dict(self) -> dict[str, Any]:
        functions = []
        for i in self.ranked():
            in_domain, risk = self.risk(i)
            functions.append({"id": i, **self.functions[i].to_dict(), "risk": round(risk, 6),
                              "risk_in_domain": in_domain, "scores": self.scores[i]})
        return {
            "tool": {"name": "mtpeft", "version": __version__},
            "root": self.root,
            "run": self.run,
            "heads": self.heads,
            "summary": self.stats,
            "skipped": self.skipped,
            "functions": functions,
            "clone_pairs": self.clone_pairs,
            "clone_groups": self.clone_groups,
        }


def head_facts(encoder: SharedEncoder, min_score: float | None) -> dict[str, dict[str, Any]]:
    thresholds = encoder.thresholds()
    facts = {}
    for name, languages in encoder.languages().items():
        threshold = thresholds.get(name)
        facts[name] = {"task": HEAD_TITLES.get(name, name), "languages": languages, "threshold": threshold,
                       "min_score": min_score if min_score is not None and name in BINARY_HEADS else threshold}
    return facts


def score_functions(functions: Sequence[Function], probabilities: dict[str, np.ndarray],
                    heads: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Per function, each binary head's probability; flaky only for test methods."""
    scores = []
    for i, fn in enumerate(functions):
        entry = {}
        for head, probs in probabilities.items():
            if head == "flaky" and not fn.is_test:
                continue
            p = float(probs[i])
            entry[head] = {"p": round(p, 6), "in_domain": fn.language in heads[head]["languages"],
                           "flagged": bool(p >= heads[head]["min_score"])}
        scores.append(entry)
    return scores


def nearest_neighbours(states: torch.Tensor, groups: Sequence[int], k: int, floor: float,
                       eligible: Sequence[bool], chunk: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (i < j) among each eligible row's k most cosine-similar rows of the same group, exact
    (a chunked matrix product: memory stays chunk x N)."""
    index = [i for i, ok in enumerate(eligible) if ok]
    if len(index) < 2:
        return []
    vectors = torch.nn.functional.normalize(states[index].float(), dim=-1)
    group = torch.tensor([groups[i] for i in index])
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(index), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        rows = torch.arange(start, min(start + chunk, len(index)))
        sims[torch.arange(len(rows)), rows] = -2.0  # not its own neighbour
        sims[group[rows].unsqueeze(1) != group.unsqueeze(0)] = -2.0  # same language only
        values, cols = sims.topk(min(k, len(index) - 1), dim=1)
        for r, (vals, cs) in enumerate(zip(values.tolist(), cols.tolist())):
            for value, c in zip(vals, cs):
                if value >= floor:
                    a, b = sorted((index[start + r], index[c]))
                    pairs[(a, b)] = value
    return [(a, b, s) for (a, b), s in sorted(pairs.items())]


def connected_groups(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Clone groups: connected components of the confirmed pairs (union-find), largest first."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def find_clones(encoder: SharedEncoder, functions: Sequence[Function], states: torch.Tensor,
                options: AnalyzeOptions, threshold: float) -> tuple[list[dict[str, Any]], list[list[int]], int]:
    """Shortlist by nearest neighbours, confirm with the clone head; returns pairs, groups, shortlist size."""
    languages = sorted({f.language for f in functions})
    group = [languages.index(f.language) for f in functions]
    eligible = [f.end_line - f.line + 1 >= options.clone_min_lines for f in functions]
    shortlist = nearest_neighbours(states, group, options.clone_neighbours, options.clone_min_similarity, eligible)
    texts = [f.code for f in functions]
    probs = encoder.clone_probabilities([(a, b) for a, b, _ in shortlist], texts, states)
    confirmed = [
        {"a": a, "b": b, "p": round(float(p), 6), "similarity": round(s, 6)}
        for (a, b, s), p in zip(shortlist, probs) if p >= threshold
    ]
    return confirmed, connected_groups([(c["a"], c["b"]) for c in confirmed]), len(shortlist)


def analyze_functions(encoder: SharedEncoder, extraction: Extraction, root: str, options: AnalyzeOptions) -> Analysis:
    """Score extracted functions: one backbone pass each feeds defect, flaky and clone."""
    started = time.perf_counter()
    functions = extraction.functions
    heads = head_facts(encoder, options.min_score)
    wanted = [h for h in ("defect", "flaky", "clone") if h in encoder.tasks]
    encoded_before = encoder.encoded
    outputs = encoder.run_heads([f.code for f in functions], wanted)
    scores = score_functions(functions, outputs.probabilities, heads)
    pairs, groups, shortlist = [], [], 0
    if "clone" in encoder.tasks and outputs.clone_states is not None and len(functions) > 1:
        threshold = heads["clone"]["threshold"]
        pairs, groups, shortlist = find_clones(encoder, functions, outputs.clone_states, options,
                                               0.5 if threshold is None else float(threshold))
    analysis = Analysis(root, encoder.run_dir or "", list(functions), scores, pairs, groups,
                        [{"file": s.file, "reason": s.reason} for s in extraction.skipped], heads)
    flagged = analysis.findings()
    analysis.stats = {
        "files": extraction.files,
        "files_with_problems": len(extraction.skipped),
        "functions": len(functions),
        "test_methods": sum(f.is_test for f in functions),
        "languages": {lang: sum(f.language == lang for f in functions) for lang in sorted({f.language for f in functions})},
        "backbone_passes": outputs.passes,
        "functions_encoded": encoder.encoded - encoded_before,
        "findings": {head: sum(h == head for _, h in flagged) for head in BINARY_HEADS if head in encoder.tasks},
        "findings_in_domain": {head: sum(h == head and analysis.scores[i][h]["in_domain"] for i, h in flagged)
                               for head in BINARY_HEADS if head in encoder.tasks},
        "clone_shortlist": shortlist,
        "clone_pairs": len(pairs),
        "clone_groups": len(groups),
        "seconds_scoring": round(time.perf_counter() - started, 2),
    }
    return analysis


def analyze_path(path: Path, encoder: SharedEncoder, options: AnalyzeOptions) -> Analysis:
    path = Path(path)
    if not path.exists():
        raise MtpeftError(f"{path}: no such file or directory")
    started = time.perf_counter()
    extraction = extract_tree(path, options.max_file_bytes, options.progress, options.exclude)
    extract_seconds = time.perf_counter() - started
    analysis = analyze_functions(encoder, extraction, path.name or str(path), options)
    analysis.stats["seconds_extracting"] = round(extract_seconds, 2)
    return analysis


# ---- the terminal table -----------------------------------------------------------------------
def domain_note(heads: dict[str, dict[str, Any]]) -> str:
    parts = [f"{name} trained on {'/'.join(h['languages']) or '?'}" for name, h in heads.items()]
    return "heads: " + "; ".join(parts) + ". '*' = out of domain (language not trained on)."


def format_table(analysis: Analysis, top: int = 30, width: int = 60) -> str:
    """A plain-text table of the riskiest functions, highest first."""
    lines = [domain_note(analysis.heads), ""]
    header = f"{'risk':>6}  {'defect':>7}  {'flaky':>7}  {'lang':<6}  location"
    lines += [header, "-" * (len(header) + width)]

    def cell(scores: dict[str, Any], head: str) -> str:
        s = scores.get(head)
        if s is None:
            return f"{'-':>7}"
        return f"{s['p']:>6.3f}{'*' if not s['in_domain'] else ' '}"

    for i in analysis.ranked()[:top]:
        fn = analysis.functions[i]
        in_domain, risk = analysis.risk(i)
        where = f"{fn.file}:{fn.line} {fn.name}{' [test]' if fn.is_test else ''}"
        if len(where) > width:  # drop the folders first: the file name, line and function matter most
            where = f".../{fn.file.rsplit('/', 1)[-1]}:{fn.line} {fn.name}{' [test]' if fn.is_test else ''}"
        lines.append(f"{risk:>6.3f}{' ' if in_domain else '*'} {cell(analysis.scores[i], 'defect')}  "
                     f"{cell(analysis.scores[i], 'flaky')}  {fn.language:<6}  {where}")
    s = analysis.stats
    lines += ["", f"{s['functions']} functions ({s['test_methods']} test methods) in {s['files']} files; "
                  f"{s['files_with_problems']} file(s) skipped or with syntax errors; findings {s['findings']} "
                  f"(in domain {s['findings_in_domain']}); {s['clone_pairs']} clone pairs in {s['clone_groups']} groups"]
    return "\n".join(lines)
