"""`cml-control run` against a real container: a PTY session driven from a terminal and from a
pipe, input streaming with EOF, multi-byte text split across reads, and the session's limits."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from ..conftest import BIN, Daemon, DaemonFactory, cli, is_root
from .containers import create, install_guestos, run, start, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]



@pytest.fixture
def running(cmld_factory: DaemonFactory, guestos_src: Path) -> Daemon:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    create(d, cmld_factory.tmp, "ex", ram_limit=64)
    assert start(d, "ex").rc == 0
    wait_state(d, "ex", "RUNNING")
    return d


def read_until(fd: int, want: bytes, timeout: float = 15) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while want not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} in {buf!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF before {want!r}: {buf!r}")
            buf += chunk
    return buf


def test_pty_session_from_a_terminal(running: Daemon) -> None:
    """What an operator does: an interactive shell; the terminal is restored afterwards."""
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    p = subprocess.Popen([str(BIN / "cml-control"), "-s", str(running.socket), "run", "ex", "sh"],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    try:
        # busybox's line editor asks the terminal for the cursor position; answer as a terminal does
        assert b"/ # " in read_until(master, b"\x1b[6n")
        os.write(master, b"\x1b[24;1R")
        os.write(master, b"tty; test -t 0 && echo IS-A-TTY; echo $((6*7))X\r")
        out = read_until(master, b"42X")
        assert b"/dev/pts/" in out and b"IS-A-TTY" in out, out
        # job control in the session: ^C interrupts the foreground command, the shell stays
        os.write(master, b"sleep 30\r")
        time.sleep(0.5)
        os.write(master, b"\x03")
        os.write(master, b"echo after-$((1+1))\r")
        read_until(master, b"after-2")
        os.write(master, b"exit 3\r")
        assert p.wait(timeout=15) == 3
        assert termios.tcgetattr(slave) == before  # raw mode undone
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)
    # the ^C reached only the session: the container is still running
    assert "RUNNING" in cli(running.socket, "state", "ex").out


def test_pty_session_fed_from_a_pipe(running: Daemon) -> None:
    """Input streamed from a pipe; its end reaches the command as end-of-file (^D on the PTY)."""
    r = cli(running.socket, "run", "ex", "sh", "-c", "read a; read b; echo \"got:$a:$b\"; cat; echo end",
            stdin="one\ntwo\nthree\n")
    assert r.rc == 0, r.out + r.err
    assert "got:one:two" in r.out and "three" in r.out and "end" in r.out, r.out
    assert r.out.startswith("one\ntwo\nthree\n"), r.out  # echoed by the PTY's line discipline


def test_pipe_session_streams_stdin_and_keeps_text(running: Daemon) -> None:
    # large input in many chunks, EOF at its end
    data = "".join(f"{i:07d}\n" for i in range(60000))  # 480 kB
    r = cli(running.socket, "run", "ex", "nopty", "sh", "-c", "wc -c; echo done >&2", stdin=data, timeout=60)
    assert r.rc == 0, r.err
    # (EXEC_OUTPUT has one stream: the client prints stderr's bytes in order with stdout's)
    assert r.out.split() == [str(len(data)), "done"], r.out
    # multi-byte characters split across the client's reads arrive intact
    text = "Grüße aus dem Container ✓ 中文 " * 3000
    r = cli(running.socket, "run", "ex", "nopty", "sha256sum", stdin=text, timeout=60)

    assert r.out.split()[0] == hashlib.sha256(text.encode()).hexdigest()
    # no PTY: not a terminal; stdout and stderr both relayed, exit status kept
    r = run(running, "ex", "nopty", "sh", "-c", "test -t 0 || echo no-tty; echo oops >&2; exit 5")
    assert r.rc == 5 and r.out.split() == ["no-tty", "oops"], (r.out, r.err)


def test_session_is_confined_like_the_container(running: Daemon) -> None:
    """The session sees the container, not the host: its PID 1, hostname, cgroup, caps and root."""
    out = run(running, "ex", "nopty", "sh", "-c",
              "cat /proc/1/comm; hostname; grep CapBnd /proc/self/status; grep CapBnd /proc/1/status; "
              "cat /proc/self/cgroup | sort | md5sum; cat /proc/1/cgroup | sort | md5sum; "
              "for f in self/ns/mnt 1/ns/mnt self/ns/pid 1/ns/pid; do readlink /proc/$f; done").out
    lines = out.splitlines()
    assert lines[0] == "init" and lines[1] == "ex", out
    assert lines[2].split()[1] == lines[3].split()[1], out  # same bounding set as init
    assert lines[4] == lines[5], out  # same cgroups as init
    assert lines[6] == lines[7] and lines[8] == lines[9], out  # same mount and PID namespaces
    host_mnt = os.readlink("/proc/self/ns/mnt")
    assert lines[6] != host_mnt
    # a command that does not exist: a clear failure, not a hang
    r = run(running, "ex", "nopty", "/no/such/command")
    assert r.rc == 127 and "No such file" in r.out, (r.rc, r.out, r.err)
