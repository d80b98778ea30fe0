"""Summarise an ``mtpeft analyze -o DIR`` output for results/: counts, the top findings by risk,
clone groups, skipped files, and whether the SARIF file validates against the SARIF 2.1.0 schema
(the OASIS schema vendored in tests/data). The analysed code itself is not copied.

    python benchmarks/analyze_summary.py runs/analyze-stdlib --name cpython-stdlib --command "..." --out results/analyze
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema

SCHEMA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sarif-schema-2.1.0.json"


def sarif_check(path: Path) -> dict:
    schema = json.loads(SCHEMA.read_text())
    document = json.loads(path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [e.message for e in validator.iter_errors(document)]
    results = document["runs"][0]["results"]
    return {"valid": not errors, "errors": errors[:5], "results": len(results),
            "results_by_rule_and_level": {f"{r}/{l}": sum(x["ruleId"] == r and x["level"] == l for x in results)
                                          for r in sorted({x["ruleId"] for x in results}) for l in ("warning", "note")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("analysis_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True, help="the analyze command that was run")
    parser.add_argument("--source", required=True, help="what was analysed (name, version or commit)")
    parser.add_argument("--run-note", required=True, help="which trained run, and its validation metrics")
    parser.add_argument("--out", type=Path, default=Path("results/analyze"))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    report = json.loads((args.analysis_dir / "analysis.json").read_text())
    sarif = sarif_check(args.analysis_dir / "analysis.sarif")
    functions = report["functions"]  # already ranked by risk
    by_id = {f["id"]: f for f in functions}
    top = [{k: f[k] for k in ("file", "line", "name", "language", "is_test", "risk", "risk_in_domain", "scores")}
           for f in functions[: args.top]]
    top_in_domain_flaky = [f for f in functions if f.get("scores", {}).get("flaky", {}).get("in_domain")][: args.top]
    groups = [[f"{by_id[i]['file']}:{by_id[i]['line']} {by_id[i]['name']}" for i in g[:6]] + ([f"... {len(g) - 6} more"] if len(g) > 6 else [])
              for g in report["clone_groups"][:10]]
    reasons: dict[str, int] = {}
    for s in report["skipped"]:
        kind = s["reason"].split(" (")[0].split(":")[0].split(" from line")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    summary = {"name": args.name, "source": args.source, "command": args.command, "run": args.run_note,
               "heads": report["heads"], "summary": report["summary"], "skipped_by_reason": reasons,
               "sarif": sarif, "top_by_risk": top,
               "top_in_domain_flaky": [{k: f[k] for k in ("file", "line", "name", "scores")} for f in top_in_domain_flaky],
               "clone_groups_top10": groups}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    s = report["summary"]
    lines = [f"# mtpeft analyze: {args.name}", "", f"Source: {args.source}", "", f"Command: `{args.command}`", "",
             f"Run: {args.run_note}", "",
             "Heads and the languages they were trained on: " + "; ".join(
                 f"{n} {'/'.join(h['languages'])} (threshold {h['threshold'] if h['threshold'] is None else round(h['threshold'], 3)})"
                 for n, h in report["heads"].items()) + ".", "",
             f"{s['functions']} functions ({s['test_methods']} test methods) in {s['files']} files "
             f"({', '.join(f'{k} {v}' for k, v in s['languages'].items())}); {s['files_with_problems']} files skipped or with "
             f"syntax errors ({', '.join(f'{k}: {v}' for k, v in reasons.items()) or 'none'}). Backbone passes: {s['backbone_passes']}; "
             f"functions encoded {s['functions_encoded']}; extraction {s['seconds_extracting']} s, scoring {s['seconds_scoring']} s.", "",
             f"Findings at or above the thresholds: {s['findings']} (in domain: {s['findings_in_domain']}). Clone shortlist "
             f"{s['clone_shortlist']} pairs, {s['clone_pairs']} confirmed, {s['clone_groups']} groups.", "",
             f"SARIF: {sarif['results']} results {sarif['results_by_rule_and_level']}; validates against the SARIF 2.1.0 schema: "
             f"**{sarif['valid']}**{'' if sarif['valid'] else ' ' + str(sarif['errors'])}.", "",
             f"## Top {args.top} by risk (in-domain scores first)", "",
             "| risk | defect | flaky | file:line | function |", "|---|---|---|---|---|"]

    def cell(f: dict, head: str) -> str:
        x = f["scores"].get(head)
        return "-" if x is None else f"{x['p']:.3f}{'' if x['in_domain'] else ' (ood)'}"

    for f in top:
        lines.append(f"| {f['risk']:.3f}{'' if f['risk_in_domain'] else ' (ood)'} | {cell(f, 'defect')} | {cell(f, 'flaky')} | "
                     f"`{f['file']}:{f['line']}` | `{f['name']}`{' (test)' if f['is_test'] else ''} |")
    if groups:
        lines += ["", "## Largest clone groups", ""] + [f"- {len(report['clone_groups'][n])} functions: " + "; ".join(f"`{m}`" for m in g)
                                                          for n, g in enumerate(groups)]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:14]))


if __name__ == "__main__":
    main()
