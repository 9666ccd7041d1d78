"""Pure logic of the daemon's limits: log escaping, log budgets, crash-point parsing, and the
deadlines of stop hooks and module cleanups (a hook or cleanup that hangs lets the next one run)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from cml_common import crashpoints
from cml_common.logbudget import LogBudget
from cml_common.logsafe import clip, escape
from cml_common.logsetup import FORMAT, CmlFormatter
from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.container_pb2 import ContainerState as S
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.containers.container import Container
from cmld.launcher.spec import LaunchSpec
from cmld.modules.base import Module
from cmld.modules.context import StartContext
from cmld.modules.settings import RuntimeSettings
from cmld.runtime import stopping
from cmld.runtime.compartment import Compartment
from cmld.runtime.records import RecordStore

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------- escaping


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain /tmp/x", "plain /tmp/x"),
    ("a\nb", "a\\nb"),
    ("a\r\n2099-01-01 [1] CRITICAL x", "a\\r\\n2099-01-01 [1] CRITICAL x"),
    ("tab\there", "tab\\there"),
    ("esc\x1b[31m", "esc\\x1b[31m"),
    ("nul\x00", "nul\\x00"),
    ("del\x7f", "del\\x7f"),
    ("nel\x85 ls\u2028 ps\u2029", "nel\\x85 ls\\u2028 ps\\u2029"),
    ("bidi\u202eevil", "bidi\\u202eevil"),
    ("été ümlaut 日本", "été ümlaut 日本"),
])
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert len(escape(raw).splitlines()) <= 1


def test_clip_bytes_and_length() -> None:
    assert clip(b"/dev/\xff\n") == "/dev/\\xff\\n"
    long = clip("x" * 500, 100)
    assert long.startswith("x" * 100) and long.endswith("(+400 chars)")


def test_formatter_one_record_one_line() -> None:
    f = CmlFormatter(FORMAT)
    rec = logging.LogRecord("t", logging.WARNING, __file__, 1, "path %s", ("/tmp/x\n2099 forged",), None)
    line = f.format(rec)
    assert "\n" not in line and line.endswith("WARN path /tmp/x\\n2099 forged")
    try:
        raise ValueError("bad\nline")
    except ValueError:
        import sys
        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    out = f.format(rec).split("\n")
    assert out[0].endswith("ERROR boom")
    assert all(ln.startswith("\t") for ln in out[1:]), out  # nothing after the first line starts a record


# ---------------------------------------------------------------------------- budgets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_burst_then_rate_then_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = LogBudget("container c", rate=0.5, burst=20, clock=clock)
    allowed = sum(b.allow("mknod") for _ in range(2000))
    assert allowed == 20 and b.suppressed_total == 1980
    assert b.allow("service"), "kinds have buckets of their own"
    clock.now += 2.0  # one token back
    with caplog.at_level(logging.WARNING, logger="cml.logbudget"):
        assert b.allow("mknod")
    assert "container c: 1980 'mknod' log line(s) suppressed in 2.0 s (limit 0.5/s, burst 20)" in caplog.text
    assert not b.allow("mknod")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cml.logbudget"):
        b.flush()
    assert "container c: 1 'mknod' log line(s) suppressed" in caplog.text


def test_budget_summary_comes_on_its_own_in_a_loop(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cml_common.logbudget.SUMMARY_AFTER", 0.05)

    async def flood() -> None:
        b = LogBudget("container c", burst=1)
        for _ in range(5):
            b.allow("x")
        await asyncio.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="cml.logbudget"):
        asyncio.run(flood())
    assert "container c: 4 'x' log line(s) suppressed" in caplog.text


# ---------------------------------------------------------------------------- crash points


def test_crash_point_spec() -> None:
    assert crashpoints._parse("") == {}
    assert crashpoints._parse("start.record") == {"start.record": 1}
    assert crashpoints._parse(" stop.shutdown@3 , wipe.key,bad@x") == {"stop.shutdown": 3, "wipe.key": 1, "bad": 1}
    crashpoints.crash_point("not.armed")  # without the variable: nothing happens


# ---------------------------------------------------------------------------- deadlines


class Hangs(Module):
    name = "hangs"

    def __init__(self) -> None:
        self.cleaned = False

    async def stop(self, ctx: StartContext) -> bool:
        await asyncio.sleep(3600)
        return True

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        await asyncio.sleep(3600)


class Works(Module):
    name = "works"

    def __init__(self) -> None:
        self.stopped = self.cleaned = False

    async def stop(self, ctx: StartContext) -> bool:
        self.stopped = True
        return True

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        self.cleaned = True


def ctx(tmp_path: Path) -> StartContext:
    s = RuntimeSettings(base_dir=tmp_path, run_dir=tmp_path / "run", containers_dir=tmp_path / "c",
                        guestos_dir=tmp_path / "os", shared_files_dir=tmp_path / "files")
    c = Container(uuid="11111111-2222-3333-4444-555555555555", config=ContainerConfig(name="c", guest_os="x"))
    return StartContext(c, None, s, LaunchSpec(uuid=c.uuid, name="c", hostname="c", root_dir="/", work_dir="/"))


def test_a_hanging_stop_hook_or_cleanup_does_not_hold_up_the_others(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stopping, "HOOK_TIMEOUT", 0.05)
    monkeypatch.setattr(stopping, "CLEANUP_TIMEOUT", 0.05)
    works = Works()
    c = ctx(tmp_path)
    assert asyncio.run(stopping.run_stop_hooks("c", c, [Hangs(), works]))
    assert works.stopped
    assert not asyncio.run(stopping.run_stop_hooks("c", c, [Hangs()]))
    works = Works()
    failed = asyncio.run(stopping.run_cleanups("c", c, [works, Hangs()], rebooting=False))
    assert failed == ["hangs"] and works.cleaned  # reverse order: the hanging one first


class Host:
    """The runtime side a compartment needs (as in test_lifecycle)."""

    def __init__(self, tmp_path: Path, modules: list[Module]) -> None:
        self.settings = ctx(tmp_path).settings
        self.records = RecordStore(self.settings.run_dir)
        self.modules = modules

    def guestos_config(self, c: Container) -> GuestOSConfig | None:
        return GuestOSConfig(name="busybox", version=1)

    def build_modules(self, c: Container) -> list[Module]:
        return self.modules

    def on_stopped(self, comp: Compartment) -> None:
        pass


def test_exit_releases_a_container_that_did_not_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cmld exits while a container is still in SHUTDOWN (init never ended): every module's cleanup
    runs anyway (a hanging one is given up on), the record and run dir go, the state is STOPPED."""
    monkeypatch.setattr(stopping, "CLEANUP_TIMEOUT", 0.05)
    works = Works()
    host = Host(tmp_path, [works, Hangs()])
    c = ctx(tmp_path)
    comp = Compartment(c.container, host)

    async def scenario() -> None:
        for st in (S.STARTING, S.BOOTING, S.RUNNING, S.SHUTDOWN):
            comp.set_state(st)
        comp.ctx, comp.modules = c, host.modules
        host.records.write(c)
        c.run_dir.mkdir(parents=True)
        await comp.abandon()
    asyncio.run(scenario())
    assert works.cleaned and comp.state == S.STOPPED and comp.ctx is None
    assert not list((tmp_path / "run").rglob("*.json")) and not c.run_dir.exists()
