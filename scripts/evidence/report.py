"""Joins the rows, the markers and the last run, and finds what does not add up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .junit import FAILED, NOT_RUN, PASSED, XFAILED, LastRun
from .requirements import Requirement


@dataclass(frozen=True)
class MarkedTest:
    nodeid: str
    outcome: str


@dataclass(frozen=True)
class Row:
    req: Requirement
    tests: tuple[MarkedTest, ...]

    @property
    def passing(self) -> bool:
        return any(t.outcome == PASSED for t in self.tests)

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.tests)

    @property
    def verdict(self) -> str:
        """One phrase for the last run, as an evaluator reads it."""
        if not self.tests:
            return "no test"
        parts = [f"{self.count(PASSED)}/{len(self.tests)} passed"]
        for outcome, label in ((FAILED, "failed"), (XFAILED, "open (strict xfail)"), (NOT_RUN, "not run")):
            if self.count(outcome):
                parts.append(f"{self.count(outcome)} {label}")
        skipped = len(self.tests) - sum(self.count(o) for o in (PASSED, FAILED, XFAILED, NOT_RUN))
        if skipped:
            parts.append(f"{skipped} skipped")
        return ", ".join(parts)


def build(reqs: list[Requirement], marks: dict[str, tuple[str, ...]], run: LastRun | None) -> list[Row]:
    """One row per requirement, rows without a passing test first (each group in file order)."""
    by_req: dict[str, list[MarkedTest]] = {r.id: [] for r in reqs}
    for nodeid in sorted(marks):
        outcome = run.outcome(nodeid) if run else NOT_RUN
        for rid in marks[nodeid]:
            if rid in by_req:
                by_req[rid].append(MarkedTest(nodeid, outcome))
    rows = [Row(r, tuple(by_req[r.id])) for r in reqs]
    return [r for r in rows if not r.passing] + [r for r in rows if r.passing]


def marker_problems(reqs: list[Requirement], marks: dict[str, tuple[str, ...]]) -> list[str]:
    """What the markers and the declared states contradict, whatever the last run says."""
    known = {r.id for r in reqs}
    problems = [f"{nodeid}: unknown requirement {rid!r} (see scripts/evidence/requirements.toml)"
                for nodeid, ids in sorted(marks.items()) for rid in ids if rid not in known]
    marked = Counter(rid for ids in marks.values() for rid in ids)
    for r in reqs:
        if r.state in ("done", "partly") and not marked[r.id]:
            problems.append(f"{r.id}: declared {r.state}, but no test carries @pytest.mark.req({r.id!r})")
        if r.state == "not" and marked[r.id]:
            problems.append(f"{r.id}: declared not, but {marked[r.id]} test(s) carry its marker")
    return problems


def run_problems(rows: list[Row]) -> list[str]:
    """Rows declared done whose tests did not pass in the last run."""
    return [f"{row.req.id}: declared done, but none of its tests passed in the last run ({row.verdict})"
            for row in rows if row.req.state == "done" and not row.passing]
