"""FIFOs (`fifos:`): a channel from the management side into one container, at /dev/fifos/<name>
inside it, that no other container can open. In hosted mode without c0 the writing end is the
host's /tmp/cmlfifos/<name> (the original's place); with c0 it is c0's /dev/fifos/<name>
(tests/host/test_c0.py)."""

from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from ..conftest import CliResult, Daemon, DaemonFactory, cli, is_root
from .containers import create, install_guestos, run, start, state, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
HOST_DIR = Path("/tmp/cmlfifos")


def start_cmld(factory: DaemonFactory, src: Path) -> Daemon:
    base = factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(src, base)
    return factory.start("--stop-timeout", "10", base=base)


def read_in(d: Daemon, name: str, path: str) -> tuple[threading.Thread, list[CliResult]]:
    """`cat <path>` in the container, in the background (it ends at the writer's end of file)."""
    out: list[CliResult] = []
    t = threading.Thread(target=lambda: out.append(run(d, name, "nopty", "cat", path, timeout=30)))
    t.start()
    return t, out


def write_host(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)  # the forwarder holds the reading end open: no block
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_fifo_from_the_host_into_one_container(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    fifo = f"t{uuidlib.uuid4().hex[:8]}"
    create(d, cmld_factory.tmp, "fa", fifos=fifo)
    create(d, cmld_factory.tmp, "fb")
    for n in ("fa", "fb"):
        assert start(d, n).rc == 0
        wait_state(d, n, "RUNNING")
    host_end = HOST_DIR / fifo
    try:
        assert host_end.is_fifo()
        ls = run(d, "fa", "nopty", "ls", "-ln", "/dev/fifos/").out
        assert f" {fifo}" in ls and ls.lstrip().splitlines()[-1].startswith("prw-------"), ls

        # two writers one after the other: the reader sees each one's data, then end of file
        for msg in (b"hello from c0\n", b"second line\n" * 1000):
            t, out = read_in(d, "fa", f"/dev/fifos/{fifo}")
            time.sleep(0.5)
            write_host(host_end, msg)
            t.join(30)
            assert out and out[0].rc == 0, out
            assert out[0].out.encode() == msg, out[0].out[:200]

        # a writer first, a reader later: the data waits for it
        write_host(host_end, b"waited\n")
        t, out = read_in(d, "fa", f"/dev/fifos/{fifo}")
        t.join(30)
        assert out and out[0].out == "waited\n", out

        # no other container has the FIFO, nor any path to it
        r = run(d, "fb", "nopty", "sh", "-c", f"ls /dev/fifos/ ; cat /dev/fifos/{fifo}; "
                f"find / -name {fifo} 2>/dev/null; echo end")
        assert r.out.count(fifo) == 1 and f"can't open '/dev/fifos/{fifo}': No such file" in r.out, r.out
        assert r.out.endswith("end\n"), r.out

        # the host end goes with the container; the name is free again afterwards
        assert cli(d.socket, "stop", "fa").rc == 0
        wait_state(d, "fa", "STOPPED")
        assert not host_end.exists()
        assert start(d, "fa").rc == 0
        wait_state(d, "fa", "RUNNING")
        assert host_end.is_fifo()
        t, out = read_in(d, "fa", f"/dev/fifos/{fifo}")
        time.sleep(0.5)
        write_host(host_end, b"again\n")
        t.join(30)
        assert out and out[0].out == "again\n", out
    finally:
        for n in ("fa", "fb"):
            cli(d.socket, "stop", n)
    wait_state(d, "fa", "STOPPED")
    assert not host_end.exists()


def test_fifo_names_are_checked_and_not_shared(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    fifo = f"t{uuidlib.uuid4().hex[:8]}"
    create(d, cmld_factory.tmp, "one", fifos=fifo)
    create(d, cmld_factory.tmp, "two", fifos=fifo)
    for i, bad in enumerate(("../escape", "a/b", "..", "", "x" * 300)):
        create(d, cmld_factory.tmp, f"bad{i}", fifos=bad)
    create(d, cmld_factory.tmp, "twice", fifos=[f"{fifo}d", f"{fifo}d"])
    try:
        assert start(d, "one").rc == 0
        wait_state(d, "one", "RUNNING")
        # one name goes to one container: the second start is refused with the reason
        r = start(d, "two")
        assert r.rc != 0 and "is already forwarded to container" in r.out + r.err + d.log_text(), r.out
        wait_state(d, "two", "STOPPED")
        for i in range(5):
            r = start(d, f"bad{i}")
            assert r.rc != 0, r.out
            wait_state(d, f"bad{i}", "STOPPED")
        assert "is not a valid FIFO name" in d.log_text() or "is not a valid FIFO name" in r.out
        r = start(d, "twice")
        assert r.rc != 0
        assert "is listed twice" in r.out + d.log_text()
        assert not (HOST_DIR / "escape").exists() and not Path("/tmp/escape").exists()
        assert sorted(p.name for p in HOST_DIR.iterdir() if p.name.startswith(fifo)) == [fifo]
        assert state(d, "one") == "RUNNING" and d.alive()
    finally:
        cli(d.socket, "stop", "one")
    wait_state(d, "one", "STOPPED")
    assert not (HOST_DIR / fifo).exists()
