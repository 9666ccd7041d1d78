"""The report as Markdown (for the repository and review) and HTML (for evaluators' browsers)."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass

from .junit import FAILED, PASSED, XFAILED
from .report import Row

SYMBOL = {PASSED: "pass", FAILED: "FAIL", XFAILED: "open hole"}


@dataclass(frozen=True)
class Header:
    commit: str
    generated: str
    junit: str


def _ours(row: Row) -> str:
    text = row.req.state
    if row.req.newly_covered:
        text += f" (original: {row.req.seed_state})"
    return text


def summary(rows: list[Row]) -> str:
    states = Counter(r.req.state for r in rows)
    without = sum(not r.passing for r in rows)
    newly = sum(r.req.newly_covered for r in rows)
    return (f"{len(rows)} requirements: {states['done']} done, {states['partly']} partly, {states['not']} not; "
            f"{without} without a passing test; {newly} that the original only planned or partly did.")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], head: Header) -> str:
    out = [
        "# Certification evidence",
        "",
        f"Commit `{head.commit}`, generated {head.generated} from {head.junit}. "
        "Produced by `python -m scripts.evidence` (`bash scripts/test.sh` runs it after pytest).",
        "",
        summary(rows),
        "",
        "Rows without a passing test come first. *Ours*: done (implemented, and a marked test fails if it "
        "breaks), partly (the note says what is missing), not. *Tests*: the tests marked "
        "`@pytest.mark.req(\"<id>\")` and their outcome in that run.",
        "",
        "| Requirement | Text | Ours | Original | Modules | Tests (last run) | Note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tests = "<br>".join(f"{SYMBOL.get(t.outcome, t.outcome)}: `{t.nodeid}`" for t in row.tests)
        out.append("| " + " | ".join([
            f"**{_md(row.req.id)}**<br>{_md(row.req.table)}",
            _md(row.req.title),
            _ours(row),
            row.req.seed_state,
            "<br>".join(f"`{m}`" for m in row.req.modules),
            f"{row.verdict}<br>{tests}" if row.tests else row.verdict,
            _md(row.req.note),
        ]) + " |")
    return "\n".join(out) + "\n"


CSS = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.35em; vertical-align: top; text-align: left; }
th { background: #eee; }
td.done { background: #e3f4e3; } td.partly { background: #fff4d6; } td.not { background: #f8e1e1; }
li.failed { color: #a00; font-weight: bold; } li.xfailed { color: #a60; }
code { font-size: 0.85em; }
ul { margin: 0; padding-left: 1.1em; }
"""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def html_page(rows: list[Row], head: Header) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Certification evidence</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>Certification evidence</h1>",
        f"<p>Commit <code>{_h(head.commit)}</code>, generated {_h(head.generated)} from {_h(head.junit)}.</p>",
        f"<p>{_h(summary(rows))} Rows without a passing test come first.</p>",
        "<table><thead><tr><th>Requirement</th><th>Text</th><th>Ours</th><th>Original</th><th>Modules</th>"
        "<th>Tests (last run)</th><th>Note</th></tr></thead><tbody>",
    ]
    for row in rows:
        tests = "".join(f'<li class="{_h(t.outcome.replace(" ", "-"))}">{_h(SYMBOL.get(t.outcome, t.outcome))}: '
                        f"<code>{_h(t.nodeid)}</code></li>" for t in row.tests)
        modules = "".join(f"<li><code>{_h(m)}</code></li>" for m in row.req.modules)
        out.append(
            f'<tr id="{_h(row.req.id)}"><td><b>{_h(row.req.id)}</b><br>{_h(row.req.table)}</td>'
            f"<td>{_h(row.req.title)}</td><td class=\"{_h(row.req.state)}\">{_h(_ours(row))}</td>"
            f"<td>{_h(row.req.seed_state)}</td><td><ul>{modules}</ul></td>"
            f"<td>{_h(row.verdict)}<ul>{tests}</ul></td><td>{_h(row.req.note)}</td></tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out) + "\n"
