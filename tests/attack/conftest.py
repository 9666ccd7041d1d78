"""Fixtures of the isolation attack suite: one arena per test process, the verdict helper and a
summary table of every attack (threat class, mode, result, evidence) at the end of the run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .arena import MODES, Arena
from .outcome import AttackSucceeded, Outcome

THREATS = ("disclosure", "modification", "depletion", "execution", "control")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.attack)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="the attack suite needs root"))


@pytest.fixture(scope="session")
def arena(tmp_path_factory: pytest.TempPathFactory, guestos_src: Path) -> Iterator[Arena]:
    a = Arena(tmp_path_factory.mktemp("arena"), guestos_src)
    try:
        a.setup()
        yield a
    finally:
        a.teardown()


@pytest.fixture(scope="session")
def guestos_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..host.containers import demo_guestos

    return demo_guestos(tmp_path_factory.mktemp("guestos"))


def modes(*, userns: str | None = None, no_userns: str | None = None) -> pytest.MarkDecorator:
    """Parametrises a test over both user-namespace modes. A mode whose attack succeeds today is
    an open hole: `userns=`/`no_userns=` name its class, and the test is a strict xfail that only
    counts as expected when the attack itself succeeded (AttackSucceeded)."""
    params = []
    for mode, why in zip(MODES, (userns, no_userns), strict=True):
        marks = [pytest.mark.xfail(strict=True, raises=AttackSucceeded, reason=f"open: {why} (issue 12)")] if why \
            else []
        params.append(pytest.param(mode, id=mode, marks=marks))
    return pytest.mark.parametrize("mode", params)


class Judge:
    """Records what an attack achieved on the test's report and turns it into the verdict."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def _record(self, result: str, evidence: str) -> None:
        node = self.request.node
        name = node.originalname if hasattr(node, "originalname") else node.name
        threat = next((t for t in THREATS if name.startswith(f"test_{t}")), "?")
        params = dict(node.callspec.params) if hasattr(node, "callspec") else {}
        mode = params.pop("mode", "-")
        if params:
            name += "[" + ",".join(str(v) for v in params.values()) + "]"
        props = node.user_properties
        for i, (key, value) in enumerate(props):
            if key == "attack":  # a second attempt in the same test: one row with both
                prev = json.loads(value)
                result = result if result == "SUCCEEDS" else prev["result"]
                evidence = f"{prev['evidence']} | {evidence}"
                del props[i]
                break
        props.append(("attack", json.dumps(
            {"attack": name.removeprefix("test_"), "threat": threat, "mode": mode, "result": result,
             "evidence": evidence})))

    def succeeded(self, evidence: str) -> None:
        self._record("SUCCEEDS", evidence)
        raise AttackSucceeded(evidence)

    def blocked(self, evidence: str) -> None:
        self._record("blocked", evidence)

    def control_ok(self, evidence: str) -> None:
        self._record("works (control)", evidence)

    def __call__(self, outcome: Outcome) -> Outcome:
        """The attack program's own verdict: SUCCEEDED raises, blocked is recorded, anything else
        means the attack could not run (a broken test, not a verdict)."""
        if outcome.verdict == "SUCCEEDED":
            self.succeeded(outcome.evidence())
        if outcome.verdict != "blocked":
            raise AssertionError(f"the attack did not run to a verdict: {outcome.verdict} {outcome.text}\n"
                                 f"{outcome.output[-2000:]}")
        self.blocked(outcome.evidence())
        return outcome


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Judge:
    return Judge(request)


@pytest.fixture
def unaffected(arena: Arena) -> Callable[[], None]:
    return arena.check_unaffected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = []
    for key in ("passed", "failed", "xfailed", "xpassed"):
        for rep in terminalreporter.stats.get(key, []):
            for name, value in getattr(rep, "user_properties", []):
                if name == "attack" and rep.when == "call":
                    rows.append(json.loads(value))
    if not rows:
        return
    rows.sort(key=lambda r: (THREATS.index(r["threat"]) if r["threat"] in THREATS else 9, r["attack"], r["mode"]))
    tr = terminalreporter
    tr.section("isolation attacks")
    blocked = sum(r["result"] == "blocked" for r in rows)
    open_ = sum(r["result"] == "SUCCEEDS" for r in rows)
    tr.write_line(f"{len(rows)} attack runs: {blocked} blocked, {open_} succeed (open holes), "
                  f"{len(rows) - blocked - open_} controls")
    for r in rows:
        tr.write_line(f"{r['threat']:<12} {r['attack']:<52} {r['mode']:<9} {r['result']:<16} {r['evidence'][:160]}")
    out = os.environ.get("CML_ATTACK_REPORT")
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))
