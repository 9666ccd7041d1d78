"""The in-container service binary (service/cservice.c) against a fake cmld (not cmld itself).

Each case runs the real static binary in a chroot of a small busybox tree, in fresh user, PID,
mount and UTS namespaces (`unshare --user --map-root-user`): sethostname, PID 1 and the poweroff
of a PID namespace are real, while nothing it does can reach the host (the guest's `poweroff`
is busybox's, never the host's; the user namespace owns every capability it has). A small
asyncio server speaks the c_service framing on the chroot's /run/socket/cml-service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
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
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, chroot)"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("gcc") is None
                       or not Path("/bin/busybox").exists(), reason="needs util-linux unshare, gcc, busybox-static"),
]

TOP = Path(__file__).resolve().parents[2]
C = CmldToServiceMessage
S = ServiceToCmldMessage
BOOT = [S.CONTAINER_CFG_NAME_REQ, S.CONTAINER_CFG_DNS_REQ, S.BOOT_COMPLETED]
ZEROS = "0" * 128
TIMEOUT = 15.0
APPLETS = ("sh", "sleep", "cat", "echo", "uname", "hostname", "ls", "kill", "true", "grep", "wc", "tr", "stat",
           "readlink", "ps", "head", "env")

# Run by the host's sh as PID 1 of the new namespaces: /proc of the namespace (or, for $2 =
# hostproc, the host's), /dev/null, optionally a read-only /etc; then the guest command.
ENTER = ('root=$1; mode=$2; shift 2; '
         'if [ "$mode" = hostproc ]; then mount --rbind /proc "$root/proc"; else mount -t proc proc "$root/proc"; fi; '
         'mount --bind /dev/null "$root/dev/null"; '
         'if [ "$mode" = ro ]; then mount --bind "$root/etc" "$root/etc"; mount -o remount,bind,ro "$root/etc"; fi; '
         'exec chroot "$root" "$@"')


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def reply(code: int, name: str | None = None, dns: str | None = None) -> bytes:
    msg = C(code=code)  # type: ignore[arg-type]
    if name is not None:
        msg.container_cfg_name = name
    if dns is not None:
        msg.container_cfg_dns = dns
    return frame(msg.SerializeToString())


NAME_REPLY = reply(C.CONTAINER_CFG_NAME, name="demo-ct")
DNS_REPLY = reply(C.CONTAINER_CFG_DNS, dns="192.0.2.53")
HOSTS_LINE = "127.0.1.1\t demo-ct\n"  # the original's exact line


@pytest.fixture(scope="session")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service") / "cservice"
    p = subprocess.run(["bash", str(TOP / "scripts/build-service.sh"), str(out)], capture_output=True,
                       text=True, timeout=120, check=True)
    assert p.stdout.strip() == str(out)
    return out


class Guest:
    """A chroot tree: busybox applets, /sbin/cservice, a stock /etc/hosts and /etc/resolv.conf."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "run" / "socket" / "cml-service"

    def file(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def script(self, rel: str, text: str) -> None:
        p = self.file(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/sh\n" + text)
        p.chmod(0o755)

    def log(self, which: str = "init") -> str:
        p = self.file(f"/tmp/log/service-{which}.current")
        return p.read_text() if p.exists() else ""


@pytest.fixture(scope="session")
def asan_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same source with AddressSanitizer and UndefinedBehaviorSanitizer (dynamic: the chroot
    gets its libraries), for the cases that feed it hostile input."""
    out = tmp_path_factory.mktemp("service-asan") / "cservice"
    subprocess.run(["gcc", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", "-std=gnu11", "-o", str(out), str(TOP / "service/cservice.c")],
                   capture_output=True, text=True, timeout=120, check=True)
    return out


def copy_with_libs(binary: Path, root: Path, dest: str) -> None:
    shutil.copyfile(binary, root / dest.lstrip("/"))
    (root / dest.lstrip("/")).chmod(0o755)
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(lib).resolve(), target)
            target.chmod(0o755)  # the ELF interpreter must be executable


# Cases that feed the service hostile input run twice: the static binary, and a sanitized build
# whose every report (written into the chroot's /tmp) fails the test.
SANITIZED = pytest.mark.parametrize("guest", ["static", "asan"], indirect=True)


@pytest.fixture
def guest(request: pytest.FixtureRequest, binary: Path) -> Iterator[Guest]:
    flavor = getattr(request, "param", "static")
    d = Path(tempfile.mkdtemp(prefix="cservice-"))  # short: socket paths are limited to 108 bytes
    try:
        root = d / "root"
        for sub in ("bin", "sbin", "etc", "proc", "tmp", "run/socket", "dev"):
            (root / sub).mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        shutil.copyfile("/bin/busybox", root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        for a in APPLETS:
            (root / "bin" / a).symlink_to("busybox")
        if flavor == "asan":
            copy_with_libs(request.getfixturevalue("asan_binary"), root, "/sbin/cservice")
        else:
            shutil.copyfile(binary, root / "sbin" / "cservice")
            (root / "sbin" / "cservice").chmod(0o755)
        (root / "dev" / "null").touch()
        (root / "etc" / "hosts").write_text("stock hosts\n")
        (root / "etc" / "resolv.conf").write_text("stock resolv\n")
        yield Guest(root)
        reports = {p.name: p.read_text(errors="replace") for p in (root / "tmp").glob("*san.*")}
        assert not reports, reports
    finally:
        shutil.rmtree(d, ignore_errors=True)


class FakeCmld:
    """Serves the service socket like cmld: answers the two requests with the given raw bytes,
    records every message (code and audit_ack) per connection."""

    def __init__(self, path: Path, name_reply: bytes = NAME_REPLY, dns_reply: bytes = DNS_REPLY) -> None:
        self.path = path
        self.name_reply = name_reply
        self.dns_reply = dns_reply
        self.codes: list[int] = []
        self.acks: list[str] = []
        self.connections = 0
        self.booted = asyncio.Event()
        self.acked = asyncio.Event()
        self.closed = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        try:
            while (body := await read_frame(reader)) is not None:
                msg = S.FromString(body)
                self.codes.append(msg.code)
                if msg.code == S.CONTAINER_CFG_NAME_REQ:
                    writer.write(self.name_reply)
                elif msg.code == S.CONTAINER_CFG_DNS_REQ:
                    writer.write(self.dns_reply)
                elif msg.code == S.BOOT_COMPLETED:
                    self.booted.set()
                elif msg.code == S.AUDIT_ACK:
                    self.acks.append(msg.audit_ack)
                    self.acked.set()
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
        assert self.codes[:3] == BOOT

    async def wait_handler(self) -> None:
        """The boot, then the AUDIT_ACK of the connection that stays (as the original's handler)."""
        await self.wait_booted()
        await asyncio.wait_for(self.acked.wait(), TIMEOUT)
        assert self.acks == [ZEROS]


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


class Run:
    """The guest command as PID 1 of its namespaces."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)).decode().strip()

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
async def running(guest: Guest, *argv: str, mode: str = "") -> AsyncIterator[Run]:
    # --kill-child: if unshare is killed, the namespace's PID 1, and with it the namespace, dies too.
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--uts", "--kill-child",
        "sh", "-ec", ENTER, "sh", str(guest.root), mode or "-", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
             # read by the sanitized build only; LeakSanitizer cannot stop the world in here
             "ASAN_OPTIONS": "log_path=/tmp/asan:detect_leaks=0", "UBSAN_OPTIONS": "log_path=/tmp/ubsan"})
    try:
        yield Run(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 90))


def died_by(rc: int, sig: int) -> bool:
    """unshare passes its child's death by a signal on as its own exit status 128 + N."""
    return rc in (-sig, 128 + sig)


# ------------------------------------------------------------------ PID 1 with a program


@SANITIZED
def test_program_mode_boot_files_handler_and_shutdown(guest: Guest) -> None:
    guest.script("/app", 'trap "echo got-term; exit 0" TERM; echo "args=$*"; echo "ppid=$PPID"; hostname; '
                         'while :; do sleep 0.1; done')

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app", "a b", "c") as r:
            await cmld.wait_handler()
            assert await r.line() == "args=a b c"
            assert await r.line() == "ppid=1"  # cservice is PID 1 and the program's parent
            assert await r.line() == "demo-ct"
            assert guest.file("/etc/hosts").read_text() == "stock hosts\n" + HOSTS_LINE
            assert guest.file("/etc/hosts.stock").read_text() == "stock hosts\n"
            assert guest.file("/etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
            assert cmld.connections == 1  # the boot connection stays as the handler's
            await cmld.send(reply(C.SHUTDOWN))
            rc, out, err = await r.finish()
            assert "got-term" in out.split()
            assert rc == 0, err
            assert "shutdown requested by cmld" in err
    run(body)
    log = guest.log()
    assert "starting as PID 1" in log and "boot completed" in log and "started /app" in log


@SANITIZED
def test_hosts_are_restored_from_the_stock_copy_at_every_boot(guest: Guest) -> None:
    async def boot_once(name: str) -> None:
        async with serving(FakeCmld(guest.sock, name_reply=reply(C.CONTAINER_CFG_NAME, name=name))) as cmld, \
                running(guest, "/sbin/cservice", "true") as r:
            await cmld.wait_booted()
            rc, _, err = await r.finish()
            assert rc == 0, err

    async def body() -> None:
        await boot_once("first")
        assert guest.file("/etc/hosts").read_text() == "stock hosts\n127.0.1.1\t first\n"
        await boot_once("second")
        assert guest.file("/etc/hosts").read_text() == "stock hosts\n127.0.1.1\t second\n"
        assert guest.file("/etc/hosts.stock").read_text() == "stock hosts\n"
    run(body)


def test_without_hosts_the_line_is_the_file(guest: Guest) -> None:
    guest.file("/etc/hosts").unlink()

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "true") as r:
            await cmld.wait_booted()
            assert (await r.finish())[0] == 0
    run(body)
    assert guest.file("/etc/hosts").read_text() == HOSTS_LINE
    assert not guest.file("/etc/hosts.stock").exists()


@pytest.mark.parametrize("how", ["ro", "missing"])
def test_read_only_or_missing_etc_does_not_fail_the_boot(guest: Guest, how: str) -> None:
    if how == "missing":
        shutil.rmtree(guest.file("/etc"))
    guest.script("/app", "hostname")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, \
                running(guest, "/sbin/cservice", "/app", mode="ro" if how == "ro" else "") as r:
            await cmld.wait_booted()
            assert await r.line() == "demo-ct"
            rc, _, err = await r.finish()
            assert rc == 0
            assert "cannot write /etc/hosts" in err and "going on" in err
    run(body)
    if how == "ro":
        assert guest.file("/etc/hosts").read_text() == "stock hosts\n"
        assert guest.file("/etc/resolv.conf").read_text() == "stock resolv\n"


def test_program_exit_ends_init_with_its_status(guest: Guest) -> None:
    """A difference from the original, which stays as an empty PID 1: the container ends."""
    guest.script("/app", "sleep 0.2; exit 42")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_handler()
            rc, _, err = await r.finish()
            assert rc == 42, err
            assert "the program has ended: the container ends with status 42" in err
    run(body)


def test_signals_are_forwarded_and_orphans_reaped(guest: Guest) -> None:
    guest.script("/app", 'trap "echo got-usr1; exit 9" USR1; sh -c "sleep 0.2 &"; sleep 0.5; '
                         'echo zombies=$(grep -l "^State:.*Z" /proc/[0-9]*/status 2>/dev/null | wc -l); '
                         'echo ready; while :; do sleep 0.1; done')

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_booted()
            assert await r.line() == "zombies=0"  # the orphaned sleep was reaped by PID 1
            assert await r.line() == "ready"
            os.kill(r.init_pid(), signal.SIGUSR1)
            assert await r.line() == "got-usr1"
            rc, _, err = await r.finish()
            assert rc == 9, err
    run(body)


def test_tty_stop_signals_stop_the_program_group(guest: Guest) -> None:
    guest.script("/app", "echo $$; while :; do sleep 0.1; done")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_booted()
            inner = int(await r.line())
            init = r.init_pid()
            host_pid = next(int(p) for p in Path(f"/proc/{init}/task/{init}/children").read_text().split())
            os.kill(init, signal.SIGTSTP)
            for _ in range(100):
                if "(stopped)" in Path(f"/proc/{host_pid}/status").read_text().split("State:")[1].split("\n")[0]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the program was not stopped")
            assert inner > 1
            os.kill(init, signal.SIGCONT)
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert rc == 128 + signal.SIGTERM, (rc, err)
    run(body)


def test_shutdown_kills_a_program_that_ignores_sigterm_after_the_grace(guest: Guest) -> None:
    guest.script("/app", "trap '' TERM; echo up; while :; do sleep 0.1; done")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_booted()
            assert await r.line() == "up"
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish(30)
            assert rc == 128 + signal.SIGKILL, err
            assert "processes left after 10 s: killing them" in err
    run(body)


def test_program_that_cannot_be_executed(guest: Guest) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/nonexistent/prog") as r:
            await cmld.wait_booted()
            rc, _, err = await r.finish()
            assert rc == 127
            assert "cannot execute /nonexistent/prog" in err
    run(body)


def test_program_is_found_on_the_path(guest: Guest) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "sh", "-c", "exit 3") as r:
            await cmld.wait_booted()
            assert (await r.finish())[0] == 3
    run(body)


def test_without_cmld_the_program_runs_anyway(guest: Guest) -> None:
    guest.script("/app", "echo started; exit 5")

    async def body() -> None:
        async with running(guest, "/sbin/cservice", "/app") as r:
            rc, out, err = await r.finish(20)
            assert out.split() == ["started"] and rc == 5
            assert "cannot connect to /run/socket/cml-service" in err
            assert "running without the connection to cmld" in err
    run(body)


# ------------------------------------------------------------------ PID 1, `init` and no arguments


def test_init_mode_execs_sbin_init_with_the_arguments_shifted(guest: Guest) -> None:
    guest.script("/sbin/init", 'echo "argv0=$0 args=$*"; echo "pid=$$"; ls /proc/self/fd | tr "\\n" " "; echo; '
                               'hostname; echo "env=$container"')

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, \
                running(guest, "env", "container=trustm3", "/sbin/cservice", "init", "splash", "quiet") as r:
            await cmld.wait_booted()
            await asyncio.wait_for(cmld.closed.wait(), TIMEOUT)  # nothing stays connected
            assert await r.line() == "argv0=/sbin/init args=splash quiet"
            assert await r.line() == "pid=1"
            assert (await r.line()).split() == ["0", "1", "2", "3"]  # stdio and ls's own: nothing leaked
            assert await r.line() == "demo-ct"
            assert await r.line() == "env=trustm3"
            assert (await r.finish())[0] == 0
            assert cmld.codes == BOOT and cmld.acks == []  # no handler in this mode, as the original
    run(body)
    assert "executing /sbin/init" in guest.log()


def test_init_mode_without_sbin_init_stays_as_init(guest: Guest) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "init") as r:
            await cmld.wait_handler()
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert rc == 0
            assert "cannot execute /sbin/init" in err and "staying as init without a program" in err
    run(body)


def test_no_arguments_stays_as_init_until_shutdown(guest: Guest) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice") as r:
            await cmld.wait_handler()
            await asyncio.sleep(0.5)
            assert r.proc.returncode is None
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert rc == 0 and "running as init without a program" in err
    run(body)


def test_shutdown_during_the_boot_starts_nothing(guest: Guest) -> None:
    guest.script("/app", "echo started")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=reply(C.SHUTDOWN))), \
                running(guest, "/sbin/cservice", "/app") as r:
            rc, out, err = await r.finish()
            assert rc == 0 and out == ""
            assert "nothing is started" in err
    run(body)


# ------------------------------------------------------------------ not PID 1: the boot step and its handler


def pid1(guest: Guest, trap: str = "") -> str:
    """PID 1 is a shell: runs the service as a boot step (its output read to the end: the handler
    must not hold it), reports, then waits (optionally trapping a signal) like deb-boot."""
    guest.script("/init", (f'trap "echo got-{trap.lower()}; exit 0" {trap}; ' if trap else "")
                 + 'out=$(/sbin/cservice ignored args); echo "service-exit=$?"; '
                 + "while :; do sleep 0.1; done")
    return "/init"


@pytest.mark.parametrize("with_poweroff", [True, False])
def test_handler_shutdown_through_busybox_init_style_signal(guest: Guest, with_poweroff: bool) -> None:
    """PID 1 handles SIGUSR2 (busybox init's poweroff): the guest's poweroff (busybox: SIGUSR2 to
    PID 1), or the signal itself where the guest has no poweroff command."""
    if with_poweroff:
        (guest.root / "sbin" / "poweroff").symlink_to("/bin/busybox")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, pid1(guest, "USR2")) as r:
            await cmld.wait_handler()
            assert await r.line() == "service-exit=0"
            assert guest.file("/etc/hosts").read_text() == "stock hosts\n" + HOSTS_LINE
            await cmld.send(reply(C.SHUTDOWN))
            assert await r.line() == "got-usr2"
            assert (await r.finish())[0] == 0
    run(body)
    handler = guest.log("handler")
    assert "shutdown requested by cmld" in handler
    assert ("poweroff exited with status 0" if with_poweroff else "sending signal 12 to init") in handler


@SANITIZED
def test_handler_ends_a_namespace_whose_init_handles_nothing(guest: Guest) -> None:
    """deb-boot: PID 1 is a shell that only sleeps; no signal reaches it. The handler ends every
    process and powers off the PID namespace (reboot(2) ends only the namespace, by SIGINT)."""
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, pid1(guest)) as r:
            await cmld.wait_handler()
            assert await r.line() == "service-exit=0"
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert died_by(rc, signal.SIGINT), (rc, err)
    run(body)
    handler = guest.log("handler")
    assert "init handles no shutdown signal" in handler
    assert "asking every process to terminate, then powering off the container" in handler


def test_handler_never_powers_off_where_proc_is_not_its_namespaces(guest: Guest) -> None:
    """With the host's /proc (kthreadd at PID 2, /proc/self not our PID) the handler refuses."""
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, pid1(guest), mode="hostproc") as r:
            await cmld.wait_handler()
            await cmld.send(reply(C.SHUTDOWN))
            await asyncio.wait_for(cmld.closed.wait(), TIMEOUT)  # the handler gave up and exited
            assert r.proc.returncode is None  # the namespace lives on
    run(body)
    assert "not in a container's PID namespace: not powering off" in guest.log("handler")


def test_handler_exits_when_cmld_closes(guest: Guest) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, pid1(guest)):
            await cmld.wait_handler()
            assert cmld.writer is not None
            cmld.writer.close()
            for _ in range(100):
                if "connection to cmld closed" in guest.log("handler"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(guest.log("handler"))
    run(body)


def test_boot_step_without_cmld_exits_1(guest: Guest) -> None:
    async def body() -> None:
        async with running(guest, pid1(guest)) as r:
            assert await r.line() == "service-exit=1"
    run(body)
    assert "cannot connect to /run/socket/cml-service" in guest.log()


def test_help(binary: Path) -> None:
    p = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=10, check=False)
    assert p.returncode == 0 and p.stdout.startswith("usage: cservice")


# ------------------------------------------------------------------ hostile frames


@SANITIZED
def test_unknown_fields_of_every_wire_type_are_skipped(guest: Guest) -> None:
    name_body = (
        b"\x08\x11"                              # code = CONTAINER_CFG_NAME
        b"\x10\x96\x01"                          # field 2, varint
        b"\x19" + bytes(8) +                     # field 3, fixed64
        b"\x22\x03abc"                           # field 4, length-delimited
        b"\x2d" + bytes(4) +                     # field 5, fixed32
        b"\x33\x08\x01\x3b\x3c\x34"              # group 6 { varint 1, empty group 7 }
        b"\x82\x01\x02\x08\x01"                  # field 16 (audit_record), a nested message
        b"\x88\x01\x80\x80\x04"                  # field 17 (audit_remaining_storage)
        b"\xc0\x3e\x05"                          # field 1000, varint
        b"\x6a\x07skip-ct"                       # field 13, container_cfg_name
    )
    assert C.FromString(name_body).container_cfg_name == "skip-ct"  # valid protobuf indeed
    guest.script("/app", "hostname")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=frame(name_body))) as cmld, \
                running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_booted()
            assert await r.line() == "skip-ct"
            assert (await r.finish())[0] == 0
    run(body)


@SANITIZED
def test_malformed_and_unexpected_messages_are_logged_and_skipped(guest: Guest) -> None:
    bad = [
        b"",                        # no code (required)
        b"\xff\xff\xff",            # truncated varint tag
        b"\x08\x11\x6a\x10ab",      # string longer than the body
        b"\x0a\x01x",               # code with the wrong wire type
        b"\x08\x11\x33\x08\x01",    # unterminated group
        b"\x08\x11\x34",            # end group without a start
        b"\x08\x11\x0f",            # wire type 7
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint longer than 64 bits
        b"\x08\x11\x6a\x02\x00\x00",  # a late name reply with NULs: valid protobuf, never applied
    ]
    unexpected = [reply(C.CONTAINER_CFG_DNS, dns="198.51.100.1"), reply(C.AUDIT_NOTIFY), reply(C.AUDIT_COMPLETE),
                  frame(b"\x08\x14\x82\x01\x00"), frame(b"\x08\x63")]  # AUDIT_RECORD, code 99
    name_reply = b"".join(frame(b) for b in bad[:-1]) + b"".join(unexpected) + NAME_REPLY

    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=name_reply)) as cmld, \
                running(guest, "/sbin/cservice", "sh", "-c", "hostname; exec sleep 30") as r:
            await cmld.wait_handler()
            assert await r.line() == "demo-ct"
            await cmld.send(frame(bad[-1]) + reply(C.AUDIT_NOTIFY) + frame(b"\x08\x14\x82\x01\x00"))
            await cmld.send(b"".join(frame(b) for b in bad[:-1]))
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert rc == 128 + signal.SIGTERM
            assert err.count("ignoring a malformed message") == 2 * (len(bad) - 1)
            assert "ignoring message code 18 from cmld while waiting for 17" in err
            assert "ignoring message code 99" in err
    run(body)
    assert guest.file("/etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"  # not the early one


@SANITIZED
@pytest.mark.parametrize("name,dns", [("evil\n10.0.0.1 bank", "192.0.2.53"), ("x" * 65, "192.0.2.53"),
                                      ("", "192.0.2.53"), ("demo-ct", "192.0.2.53\nnameserver 203.0.113.9"),
                                      ("demo-ct", "a b"), ("demo-ct", "")])
def test_names_that_would_inject_lines_are_refused(guest: Guest, name: str, dns: str) -> None:
    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=reply(C.CONTAINER_CFG_NAME, name=name),
                                    dns_reply=reply(C.CONTAINER_CFG_DNS, dns=dns))) as cmld, \
                running(guest, "/sbin/cservice", "true") as r:
            await cmld.wait_booted()
            assert (await r.finish())[0] == 0
    run(body)
    hosts = guest.file("/etc/hosts").read_text()
    resolv = guest.file("/etc/resolv.conf").read_text()
    assert hosts == ("stock hosts\n" + HOSTS_LINE if name == "demo-ct" else "stock hosts\n")
    assert resolv == ("nameserver 192.0.2.53\n" if dns == "192.0.2.53" else "stock resolv\n")


@SANITIZED
def test_largest_frame_is_accepted_and_larger_ones_skipped(guest: Guest) -> None:
    head = b"\x08\x11\x6a\x06big-ct"
    pad = 65536 - len(head) - 1 - 3
    big = head + b"\x22" + bytes([(pad & 0x7f) | 0x80, ((pad >> 7) & 0x7f) | 0x80, pad >> 14]) + bytes(pad)
    assert len(big) == 64 * 1024
    too_big = frame(reply(C.CONTAINER_CFG_NAME, name="wrong")[4:] + b"\x22\x80\x80\x04" + bytes(65536))

    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=too_big + frame(big))) as cmld, \
                running(guest, "/sbin/cservice", "hostname") as r:
            await cmld.wait_booted()
            assert await r.line() == "big-ct"
            rc, _, err = await r.finish()
            assert rc == 0
            assert f"ignoring a frame of {len(too_big) - 4} bytes from cmld" in err
    run(body)


@SANITIZED
def test_broken_stream_drops_the_connection_not_the_program(guest: Guest) -> None:
    guest.script("/app", "echo up; sleep 1; echo still-here; exit 7")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_handler()
            await cmld.send(struct.pack(">I", 0xFFFFFFFF) + bytes(100))
            await asyncio.wait_for(cmld.closed.wait(), TIMEOUT)
            assert await r.line() == "up"
            assert await r.line() == "still-here"
            rc, _, err = await r.finish()
            assert rc == 7 and "the stream is broken" in err and "running on without it" in err
    run(body)


@SANITIZED
def test_random_frames_never_crash_it(guest: Guest) -> None:
    """500 frames of random bytes (seeded), valid length prefixes, some cut short: PID 1 survives,
    keeps its program, and still obeys SHUTDOWN afterwards."""
    rnd = random.Random(1234)
    blob = b"".join(frame(rnd.randbytes(rnd.choice((1, 2, 3, 8, 40, 300, 5000))))
                    for _ in range(500))
    guest.script("/app", "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done")

    async def body() -> None:
        async with serving(FakeCmld(guest.sock)) as cmld, running(guest, "/sbin/cservice", "/app") as r:
            await cmld.wait_handler()
            assert await r.line() == "up"
            await cmld.send(blob)
            await asyncio.sleep(0.5)
            assert r.proc.returncode is None
            await cmld.send(reply(C.SHUTDOWN))
            rc, _, err = await r.finish()
            assert rc == 0, err
            assert "shutdown requested by cmld" in err
    run(body)


def test_a_silent_cmld_does_not_hold_the_boot_forever(guest: Guest) -> None:
    """No reply at all: after the reply timeout (10 s per request) the boot goes on."""
    async def body() -> None:
        async with serving(FakeCmld(guest.sock, name_reply=b"", dns_reply=b"")) as cmld, \
                running(guest, "/sbin/cservice", "true") as r:
            await asyncio.wait_for(cmld.booted.wait(), 30)
            rc, _, err = await r.finish(10)
            assert rc == 0 and err.count("no reply to request") == 2
    run(body)


def test_sanitizer_reports_reach_the_checks(tmp_path: Path, asan_binary: Path) -> None:
    """The sanitized runs above could not fail if a report got lost: a program with a heap
    overflow, built and run the same way, leaves its report where the guest fixture looks."""
    src = tmp_path / "overflow.c"
    src.write_text("#include <stdlib.h>\nint main(void) { char *p = malloc(8); p[8] = 1; return p[0]; }\n")
    prog = tmp_path / "overflow"
    subprocess.run(["gcc", "-g", "-fsanitize=address,undefined", "-o", str(prog), str(src)], check=True, timeout=60)
    d = Path(tempfile.mkdtemp(prefix="cservice-"))
    try:
        root = d / "root"
        for sub in ("proc", "tmp", "dev", "sbin"):
            (root / sub).mkdir(parents=True)
        (root / "dev" / "null").touch()
        copy_with_libs(prog, root, "/sbin/overflow")

        async def body() -> None:
            async with running(Guest(root), "/sbin/overflow") as r:
                rc, _, _ = await r.finish()
                assert rc != 0
        run(body)
        reports = list((root / "tmp").glob("asan.*"))
        assert reports and "heap-buffer-overflow" in reports[0].read_text()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ the binary


def test_binary_is_static_and_needs_nothing_from_the_guest(binary: Path) -> None:
    p = subprocess.run(["readelf", "-d", "-l", str(binary)], capture_output=True, text=True, check=True)
    assert "NEEDED" not in p.stdout and "INTERP" not in p.stdout
