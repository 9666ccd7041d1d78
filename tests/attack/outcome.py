"""What an attack reports (one `RESULT` line of the attack program) and the exception that marks
a successful attack."""

from __future__ import annotations

from dataclasses import dataclass

from ..conftest import CliResult


class AttackSucceeded(AssertionError):
    """The attack did what it set out to do. Raised only with the evidence of that; an xfail
    mark for an open hole names this exception, so a test that breaks for any other reason
    fails instead of passing as "expected to fail"."""


@dataclass
class Outcome:
    verdict: str  # blocked | SUCCEEDED | done | error | none
    text: str
    output: str
    rc: int

    @property
    def notes(self) -> list[str]:
        return [ln[5:] for ln in self.output.splitlines() if ln.startswith("note ")]

    def evidence(self) -> str:
        extra = "; ".join(self.notes)
        return f"{self.text}" + (f" [{extra}]" if extra else "")


def parse_outcome(r: CliResult) -> Outcome:
    for line in reversed(r.out.splitlines()):
        if line.startswith("RESULT "):
            verdict, _, text = line[7:].partition(" ")
            return Outcome(verdict, text, r.out, r.rc)
    return Outcome("none", f"no RESULT line (rc {r.rc}): {r.out[-500:]} {r.err[-300:]}", r.out, r.rc)
