"""The static in-container service (service/cml-service.c) against a fake cmld.

Each case runs the real binary in fresh UTS, PID and mount namespaces (`unshare`), so sethostname
and the PID-1 init mode are real and the host is untouched: /etc/hosts and /etc/resolv.conf are
bind-mounted over with files of the test inside the namespace. A small asyncio server speaks the
c_service framing on the socket named by CML_SERVICE_SOCKET.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cml_common.aioframing import read_frame
from cml_common.framing import FramingError
from cml_common.messages.c_service_pb2 import CmldToServiceMessage, ServiceToCmldMessage

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, bind mounts)"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("gcc") is None,
                       reason="needs util-linux unshare and gcc"),
]

TOP = Path(__file__).resolve().parents[2]
C = CmldToServiceMessage
S = ServiceToCmldMessage
BOOT_SEQUENCE = [S.CONTAINER_CFG_NAME_REQ, S.CONTAINER_CFG_DNS_REQ, S.BOOT_COMPLETED]
TIMEOUT = 10.0

# Runs as the namespace's first process: hides the host's /etc/hosts and /etc/resolv.conf behind
# the test's files ($1, $2; read-only when $3 = ro), then execs the rest (which becomes PID 1).
WRAP = ('mount --bind "$1" /etc/hosts; mount --bind "$2" /etc/resolv.conf; '
        'if [ "$3" = ro ]; then mount -o remount,bind,ro /etc/hosts; mount -o remount,bind,ro /etc/resolv.conf; fi; '
        'shift 3; exec "$@"')


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def reply(code: CmldToServiceMessage.Code, name: str | None = None, dns: str | None = None) -> bytes:
    msg = C(code=code)
    if name is not None:
        msg.container_cfg_name = name
    if dns is not None:
        msg.container_cfg_dns = dns
    return frame(msg.SerializeToString())


NAME_REPLY = reply(C.CONTAINER_CFG_NAME, name="demo-ct")
DNS_REPLY = reply(C.CONTAINER_CFG_DNS, dns="192.0.2.53")


@pytest.fixture(scope="session")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service") / "cml-service"
    p = subprocess.run(["bash", str(TOP / "scripts/build-service.sh"), str(out)], capture_output=True,
                       text=True, timeout=120, check=True)
    assert p.stdout.strip() == str(out)
    return out


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory (socket paths are limited to 108 bytes), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="cmlsvc-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class FakeCmld:
    """Serves the service socket like cmld: answers the two requests with the given raw bytes and
    records every request code."""

    def __init__(self, path: Path, name_reply: bytes = NAME_REPLY, dns_reply: bytes = DNS_REPLY,
                 close_after_boot: bool = False) -> None:
        self.path = path
        self.name_reply = name_reply
        self.dns_reply = dns_reply
        self.close_after_boot = close_after_boot
        self.codes: list[int] = []
        self.booted = asyncio.Event()
        self.closed = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            while (body := await read_frame(reader)) is not None:
                code = S.FromString(body).code
                self.codes.append(code)
                if code == S.CONTAINER_CFG_NAME_REQ:
                    writer.write(self.name_reply)
                elif code == S.CONTAINER_CFG_DNS_REQ:
                    writer.write(self.dns_reply)
                elif code == S.BOOT_COMPLETED:
                    self.booted.set()
                    if self.close_after_boot:
                        break
                await writer.drain()
        except (ConnectionError, FramingError):
            pass
        finally:
            self.closed.set()
            writer.close()

    async def send(self, raw: bytes) -> None:
        assert self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()

    async def wait_booted(self) -> None:
        await asyncio.wait_for(self.booted.wait(), TIMEOUT)
        assert self.codes == BOOT_SEQUENCE


@asynccontextmanager
async def serving(cmld: FakeCmld) -> AsyncIterator[FakeCmld]:
    server = await asyncio.start_unix_server(cmld._serve, path=str(cmld.path))
    try:
        yield cmld
    finally:
        server.close()
        if cmld.writer is not None:
            cmld.writer.close()
        await server.wait_closed()
        cmld.path.unlink(missing_ok=True)


class Service:
    """The service (or a PID-1 shell around it) in its own namespaces; files are the test's
    /etc/hosts and /etc/resolv.conf as the namespace sees them."""

    def __init__(self, proc: asyncio.subprocess.Process, hosts: Path, resolv: Path) -> None:
        self.proc = proc
        self.hosts = hosts
        self.resolv = resolv

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)).decode().strip()

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()

    def init_pid(self) -> int:
        """Host PID of the namespace's PID 1 (the only child of unshare)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1
        return int(children[0])


@asynccontextmanager
async def running(workdir: Path, *argv: str, ro_etc: bool = False) -> AsyncIterator[Service]:
    hosts, resolv = workdir / "hosts", workdir / "resolv.conf"
    hosts.write_text("stock hosts\n")
    resolv.write_text("stock resolv\n")
    env = dict(os.environ, CML_SERVICE_SOCKET=str(workdir / "cml-service"))
    # --kill-child: if unshare is killed, the namespace's PID 1, and with it the namespace, dies too.
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
        "sh", "-ec", WRAP, "sh", str(hosts), str(resolv), "ro" if ro_etc else "rw", *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        yield Service(proc, hosts, resolv)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 60))


# --- mode A: PID 1 with a program ---


def test_boot_sequence_hostname_dns_and_shutdown(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        script = "read x; uname -n; echo ppid=$PPID; exec sleep 30"
        async with serving(FakeCmld(workdir / "cml-service")) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", script) as svc:
            await cmld.wait_booted()
            await svc.say("go")
            assert await svc.line() == "demo-ct"
            assert await svc.line() == "ppid=1"  # the service is PID 1, the parent of its program
            assert svc.hosts.read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tdemo-ct\n"
            assert svc.resolv.read_text() == "nameserver 192.0.2.53\n"
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await svc.finish()
            assert rc == 128 + signal.SIGTERM, err
            assert "shutdown requested by cmld" in err
            assert cmld.codes == BOOT_SEQUENCE  # the connection was kept open, nothing else sent
    run(body)


def test_exit_status_of_the_program_is_passed_on(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service")) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; exit 42") as svc:
            await cmld.wait_booted()
            await svc.say("go")
            rc, _, err = await svc.finish()
            assert rc == 42, err
            assert err == ""
    run(body)


def test_socket_closing_terminates_the_program(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service", close_after_boot=True)), \
                running(workdir, str(binary), "/bin/sh", "-c", "exec sleep 30") as svc:
            rc, _, err = await svc.finish()
            assert rc == 128 + signal.SIGTERM, err
            assert "connection to cmld closed" in err
    run(body)


def test_signals_are_forwarded_and_orphans_reaped(binary: Path, workdir: Path) -> None:
    script = ('trap "echo got-usr1; exit 9" USR1; sh -c "sleep 0.2 &"; sleep 0.5; '
              'echo zombies=$(grep -l "^State:.*Z" /proc/[0-9]*/status 2>/dev/null | wc -l); '
              'echo ready; while :; do sleep 0.1; done')
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service")) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", script) as svc:
            await cmld.wait_booted()
            assert await svc.line() == "zombies=0"  # the orphaned sleep was reaped by PID 1
            assert await svc.line() == "ready"
            os.kill(svc.init_pid(), signal.SIGUSR1)
            assert await svc.line() == "got-usr1"
            rc, _, err = await svc.finish()
            assert rc == 9, err
    run(body)


def test_without_cmld_the_program_runs_at_once_and_keeps_running(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with running(workdir, str(binary), "/bin/sh", "-c", "echo started; sleep 6; exit 5") as svc:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await svc.line() == "started"
            assert loop.time() - t0 < 2  # not delayed by the 5 s connection attempts
            rc, _, err = await svc.finish(15)
            assert rc == 5
            assert "cannot connect to" in err and "running without the service connection" in err
    run(body)


def test_program_that_cannot_be_executed(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with running(workdir, str(binary), "/nonexistent/prog") as svc:
            rc, _, err = await svc.finish()
            assert rc == 127
            assert "cml-service: cannot execute /nonexistent/prog" in err
    run(body)


def test_unknown_fields_of_every_wire_type_are_skipped(binary: Path, workdir: Path) -> None:
    name_body = (
        b"\x08\x11"                              # code = CONTAINER_CFG_NAME
        b"\x10\x96\x01"                          # field 2, varint
        b"\x19" + bytes(8) +                     # field 3, fixed64
        b"\x22\x03abc"                           # field 4, length-delimited
        b"\x2d" + bytes(4) +                     # field 5, fixed32
        b"\x33\x08\x01\x3b\x3c\x34"              # group 6 { varint 1, empty group 7 }
        b"\xc0\x3e\x05"                          # field 1000, varint
        b"\x6a\x07skip-ct"                       # field 13, container_cfg_name
    )
    assert C.FromString(name_body).container_cfg_name == "skip-ct"  # valid protobuf indeed

    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service", name_reply=frame(name_body))) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; uname -n") as svc:
            await cmld.wait_booted()
            await svc.say("go")
            assert await svc.line() == "skip-ct"
            rc, _, err = await svc.finish()
            assert rc == 0 and err == ""
    run(body)


def test_malformed_messages_are_logged_and_skipped(binary: Path, workdir: Path) -> None:
    bad = [
        b"",                        # no code (required)
        b"\xff\xff\xff",            # truncated varint tag
        b"\x08\x11\x6a\x10ab",      # string longer than the body
        b"\x0a\x01x",               # code with the wrong wire type
        b"\x08\x11\x33\x08\x01",    # unterminated group
        b"\x08\x11\x34",            # end group without a start
        b"\x08\x11\x0f",            # wire type 7
    ]
    name_reply = b"".join(frame(b) for b in bad) + DNS_REPLY + NAME_REPLY  # DNS first: out of order

    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service", name_reply=name_reply)) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; uname -n") as svc:
            await cmld.wait_booted()
            await svc.say("go")
            assert await svc.line() == "demo-ct"
            rc, _, err = await svc.finish()
            assert rc == 0
            assert err.count("cml-service: ignoring a malformed message") == len(bad)
            assert "ignoring message code 18" in err
    run(body)


def test_largest_frame_is_accepted(binary: Path, workdir: Path) -> None:
    head = b"\x08\x11\x6a\x06big-ct"
    pad = 65536 - len(head) - 1 - 3
    name_body = head + b"\x22" + bytes([(pad & 0x7f) | 0x80, ((pad >> 7) & 0x7f) | 0x80, pad >> 14]) + bytes(pad)
    assert len(name_body) == 64 * 1024

    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service", name_reply=frame(name_body))) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; uname -n") as svc:
            await cmld.wait_booted()
            await svc.say("go")
            assert await svc.line() == "big-ct"
            rc, _, err = await svc.finish()
            assert rc == 0 and err == ""
    run(body)


def test_oversized_frame_drops_the_connection_not_the_program(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        oversized = struct.pack(">I", 64 * 1024 + 1) + bytes(100)
        async with serving(FakeCmld(workdir / "cml-service", name_reply=oversized)) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; exit 7") as svc:
            await asyncio.wait_for(cmld.closed.wait(), TIMEOUT)
            assert cmld.codes == [S.CONTAINER_CFG_NAME_REQ]
            await svc.say("go")
            rc, _, err = await svc.finish()
            assert rc == 7
            assert "frame of 65537 bytes from cmld is too large" in err
    run(body)


def test_read_only_etc_is_not_an_error(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service")) as cmld, \
                running(workdir, str(binary), "/bin/sh", "-c", "read x; uname -n", ro_etc=True) as svc:
            await cmld.wait_booted()
            await svc.say("go")
            assert await svc.line() == "demo-ct"
            rc, _, err = await svc.finish()
            assert rc == 0 and err == ""
            assert svc.hosts.read_text() == "stock hosts\n"
    run(body)


# --- mode B: not PID 1, started by an init ---

def pid1_shell(binary: Path, trap_signal: str, *options: str) -> list[str]:
    """PID 1 is a shell that reports the poweroff signal, and the service's own exit status."""
    script = (f'trap "echo got-{trap_signal.lower()}; exit 0" {trap_signal}; '
              '"$0" "$@" & wait $!; echo "service-exit=$?"; exit 3')
    return ["/bin/sh", "-c", script, str(binary), *options]


@pytest.mark.parametrize("options,sig", [((), "USR2"), (("--shutdown-signal", "10"), "USR1")])
def test_mode_b_shutdown_signals_pid1(binary: Path, workdir: Path, options: tuple[str, ...], sig: str) -> None:
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service")) as cmld, \
                running(workdir, *pid1_shell(binary, sig, *options)) as svc:
            await cmld.wait_booted()
            assert svc.hosts.read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tdemo-ct\n"
            assert svc.resolv.read_text() == "nameserver 192.0.2.53\n"
            await cmld.send(reply(C.SHUTDOWN))
            rc, out, err = await svc.finish()
            assert f"got-{sig.lower()}" in out.split(), (out, err)
            assert rc == 0
    run(body)


def test_mode_b_socket_closed_exits_0(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with serving(FakeCmld(workdir / "cml-service", close_after_boot=True)), \
                running(workdir, *pid1_shell(binary, "USR2")) as svc:
            rc, out, err = await svc.finish()
            assert out.split() == ["service-exit=0"], err
            assert rc == 3
    run(body)


def test_mode_b_oversized_frame_exits_1(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        oversized = struct.pack(">I", 0xFFFFFFFF)
        async with serving(FakeCmld(workdir / "cml-service", name_reply=oversized)), \
                running(workdir, *pid1_shell(binary, "USR2")) as svc:
            rc, out, err = await svc.finish()
            assert out.split() == ["service-exit=1"]
            assert "too large" in err
    run(body)


def test_mode_b_without_cmld_exits_1(binary: Path, workdir: Path) -> None:
    async def body() -> None:
        async with running(workdir, *pid1_shell(binary, "USR2")) as svc:
            rc, out, err = await svc.finish(15)
            assert out.split() == ["service-exit=1"]
            assert "cml-service: cannot connect to" in err
            assert svc.hosts.read_text() == "stock hosts\n"
    run(body)


# --- command line and build ---

@pytest.mark.parametrize("argv", [["/bin/true"], ["--shutdown-signal"], ["--shutdown-signal", "x"],
                                  ["--shutdown-signal", "0"], ["--bogus"]])
def test_usage_errors(binary: Path, argv: list[str]) -> None:
    # Not PID 1 here; every case fails before touching anything.
    p = subprocess.run([str(binary), *argv], capture_output=True, text=True, timeout=TIMEOUT, check=False,
                       env={"CML_SERVICE_SOCKET": "/nonexistent"})
    assert p.returncode == 2
    assert p.stderr.startswith("usage: cml-service")


def test_compiles_without_warnings(tmp_path: Path) -> None:
    subprocess.run(["gcc", "-static", "-Os", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "svc"),
                    str(TOP / "service/cml-service.c")], check=True, timeout=120)
