"""A self-contained HTML report of ``mtpeft analyze``: no scripts, no external files, every text
escaped. Capped (top findings, code lines per function, clone groups) so it stays readable on a
large tree; the JSON output has everything."""

from __future__ import annotations

import textwrap
from html import escape
from typing import Any

from mtpeft.analysis.analyze import Analysis

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2430;max-width:1100px}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d8dee8}
.muted{color:#5c6778;font-size:.9rem} table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #eef1f5;font-size:.9rem}
.finding{border:1px solid #d8dee8;border-radius:6px;margin:1rem 0;overflow:hidden}
.finding header{background:#f5f7fa;padding:.4rem .7rem;display:flex;gap:1rem;flex-wrap:wrap;align-items:baseline}
.loc{font-family:ui-monospace,monospace;font-size:.85rem}
.score{font-weight:600} .hi{color:#b42318} .mid{color:#b54708} .lo{color:#3b6e2f}
.ood{background:#eef1f5;color:#5c6778;border-radius:4px;padding:0 .35rem;font-size:.8rem}
pre{margin:0;padding:.6rem .7rem;background:#fbfcfd;font-size:.8rem;line-height:1.35;overflow-x:auto}
.group{margin:.6rem 0;padding:.4rem .7rem;border-left:3px solid #7f56d9;background:#faf8ff}
"""


def score_class(p: float, threshold: float) -> str:
    return "hi" if p >= max(threshold, 0.5) else "mid" if p >= threshold else "lo"


def code_block(code: str, first_line: int, max_lines: int, column: int = 0) -> str:
    # the code text starts at its column: indent line one back so the block dedents evenly
    lines = textwrap.dedent(" " * column + code).splitlines()
    shown = lines[:max_lines]
    width = len(str(first_line + len(shown)))
    body = "\n".join(f"{first_line + n:>{width}}  {line}" for n, line in enumerate(shown))
    if len(lines) > max_lines:
        body += f"\n{'':>{width}}  ... {len(lines) - max_lines} more lines"
    return f"<pre>{escape(body)}</pre>"


def score_badges(analysis: Analysis, index: int) -> str:
    parts = []
    for head, s in analysis.scores[index].items():
        threshold = analysis.heads[head]["min_score"]
        threshold = 0.5 if threshold is None else threshold
        ood = "" if s["in_domain"] else ' <span class="ood">out of domain</span>'
        parts.append(f'<span class="score {score_class(s["p"], threshold)}">{escape(head)} {s["p"]:.3f}</span>{ood}')
    return " ".join(parts)


def finding_card(analysis: Analysis, index: int, max_lines: int) -> str:
    fn = analysis.functions[index]
    test = " · test method" if fn.is_test else ""
    return (f'<section class="finding"><header>{score_badges(analysis, index)}'
            f'<span class="loc">{escape(fn.file)}:{fn.line}</span><span>{escape(fn.name)}{test} · {escape(fn.language)}</span>'
            f"</header>{code_block(fn.code, fn.line, max_lines, fn.column)}</section>")


def heads_table(heads: dict[str, dict[str, Any]]) -> str:
    def threshold(h: dict[str, Any]) -> str:
        return "" if h["threshold"] is None else f"{h['threshold']:.3f}"

    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(str(h['task']))}</td><td>{escape(', '.join(h['languages']) or '?')}</td>"
        f"<td>{threshold(h)}</td></tr>"
        for name, h in heads.items()
    )
    return ("<table><tr><th>head</th><th>task</th><th>trained on</th><th>threshold (validation)</th></tr>"
            f"{rows}</table><p class='muted'>Scores of functions in other languages are marked <span class='ood'>out of domain</span>: "
            "the head never saw such code, treat them as weak hints.</p>")


def clone_section(analysis: Analysis, max_groups: int, max_members: int, max_lines: int) -> str:
    if not analysis.clone_groups:
        return "<p class='muted'>No clone pairs confirmed by the clone head.</p>"
    parts = []
    for group in analysis.clone_groups[:max_groups]:
        members = "".join(
            f"<li class='loc'>{escape(analysis.functions[i].file)}:{analysis.functions[i].line} {escape(analysis.functions[i].name)}</li>"
            for i in group[:max_members]
        )
        more = f"<li class='muted'>... {len(group) - max_members} more</li>" if len(group) > max_members else ""
        first = analysis.functions[group[0]]
        parts.append(f"<div class='group'><b>{len(group)} functions</b><ul>{members}{more}</ul>"
                     f"{code_block(first.code, first.line, max_lines, first.column)}</div>")
    if len(analysis.clone_groups) > max_groups:
        parts.append(f"<p class='muted'>... {len(analysis.clone_groups) - max_groups} more groups in the JSON output.</p>")
    return "".join(parts)


def to_html(analysis: Analysis, max_findings: int = 50, max_lines: int = 40, max_groups: int = 20, max_members: int = 8) -> str:
    s = analysis.stats
    findings = []
    seen = set()
    for index, _ in analysis.findings():
        if index not in seen:
            seen.add(index)
            findings.append(index)
    shown = findings[:max_findings]
    cards = "".join(finding_card(analysis, i, max_lines) for i in shown) or "<p class='muted'>No function scored at or above a head's minimum score.</p>"
    capped = f"<p class='muted'>Showing the top {len(shown)} of {len(findings)} flagged functions; the JSON output has all.</p>" if len(findings) > len(shown) else ""
    skipped = "".join(f"<li class='loc'>{escape(x['file'])}: {escape(x['reason'])}</li>" for x in analysis.skipped[:50])
    more_skipped = f"<li class='muted'>... {len(analysis.skipped) - 50} more</li>" if len(analysis.skipped) > 50 else ""
    summary = (f"{s['functions']} functions ({s['test_methods']} test methods) in {s['files']} files · "
               f"{len(findings)} flagged · {s['clone_pairs']} clone pairs in {s['clone_groups']} groups")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mtpeft analysis of {escape(analysis.root)}</title><style>{STYLE}</style></head>
<body>
<h1>mtpeft analysis of {escape(analysis.root)}</h1>
<p class="muted">run: {escape(analysis.run)} · {escape(summary)}</p>
<h2>Heads and their domains</h2>
{heads_table(analysis.heads)}
<h2>Top findings by risk</h2>
{capped}{cards}
<h2>Clone groups</h2>
{clone_section(analysis, max_groups, max_members, max_lines // 2)}
<h2>Files skipped or with syntax errors ({len(analysis.skipped)})</h2>
<ul>{skipped}{more_skipped}</ul>
</body></html>
"""
