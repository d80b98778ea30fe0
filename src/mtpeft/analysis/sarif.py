"""SARIF 2.1.0 output of ``mtpeft analyze`` for CI systems and code hosts.

One rule per binary head (``mtpeft/defect``, ``mtpeft/flaky``); one result per score at or above
the head's minimum score. A score in a language the head was not trained on is reported at level
``note`` and says so in its message and properties (``in_domain: false``), never as a warning.
"""

from __future__ import annotations

from typing import Any

from mtpeft import __version__
from mtpeft.analysis.analyze import Analysis

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
RULES = {
    "defect": ("mtpeft/defect", "Possibly vulnerable function",
               "The defect head's probability that this function is vulnerable is at or above its threshold."),
    "flaky": ("mtpeft/flaky", "Possibly flaky test",
              "The flaky head's probability that this test method is flaky is at or above its threshold."),
}


def rule(head: str, facts: dict[str, Any]) -> dict[str, Any]:
    rule_id, short, full = RULES[head]
    languages = "/".join(facts["languages"]) or "unknown"
    return {
        "id": rule_id,
        "name": f"{head.capitalize()}Score",
        "shortDescription": {"text": short},
        "fullDescription": {"text": f"{full} The head was trained on {languages} code only; other languages are out of domain."},
        "defaultConfiguration": {"level": "warning"},
        "properties": {"trained_languages": facts["languages"], "threshold": facts["threshold"], "min_score": facts["min_score"]},
    }


def result(analysis: Analysis, index: int, head: str, rule_index: int) -> dict[str, Any]:
    fn = analysis.functions[index]
    score = analysis.scores[index][head]
    facts = analysis.heads[head]
    what = "vulnerable" if head == "defect" else "flaky"
    message = f"{fn.name}: P({what}) = {score['p']:.3f} (min score {facts['min_score']:.3f})"
    if not score["in_domain"]:
        message += f"; out of domain: the head was trained on {'/'.join(facts['languages'])}, not {fn.language}"
    return {
        "ruleId": RULES[head][0],
        "ruleIndex": rule_index,
        "level": "warning" if score["in_domain"] else "note",
        "message": {"text": message},
        "locations": [{
            "physicalLocation": {
                "artifactLocation": {"uri": fn.file, "uriBaseId": "SRCROOT"},
                "region": {"startLine": fn.line, "endLine": fn.end_line},
            },
            "logicalLocations": [{"name": fn.name, "kind": "function"}],
        }],
        "partialFingerprints": {"codeHash/v1": fn.hash},
        "properties": {"score": score["p"], "in_domain": score["in_domain"], "language": fn.language,
                       "is_test": fn.is_test},
    }


def to_sarif(analysis: Analysis) -> dict[str, Any]:
    heads = [h for h in RULES if h in analysis.heads]
    rules = [rule(h, analysis.heads[h]) for h in heads]
    results = [result(analysis, i, head, heads.index(head)) for i, head in analysis.findings() if head in heads]
    notifications = [
        {"level": "note", "message": {"text": f"{s['file']}: {s['reason']}"}} for s in analysis.skipped
    ]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "mtpeft", "version": __version__, "semanticVersion": __version__,
                            "informationUri": "https://arxiv.org/abs/2603.09978", "rules": rules}},
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {"run": analysis.run, "heads": analysis.heads, "summary": analysis.stats},
    }
    run["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": notifications}]
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
