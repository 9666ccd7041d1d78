"""Attacks on FIFOs (container config `fifos:`, modules/fifos.py and fifo_forwarder.py): cmld
copies what the management side writes into `/tmp/cmlfifos/<name>` (hosted mode without c0, the
arena's case; c0's `/dev/fifos/<name>` otherwise) into `/dev/fifos/<name>` of the one container
that has the name in its config. From inside containers, as their root:

* a container without the FIFO looks for it by every path and makes its own `/dev/fifos/<name>`;
* a container with a FIFO replaces its node by symlinks to the host's files (absolute, `..`,
  `/proc/1/root`), so the copier would write there;
* a container with a FIFO opens it and never reads, so the copier and the writer fill up.

Controls: the rightful reader gets the data each time (so "nothing arrived" means refused, not a
dead channel)."""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import CliResult
from .arena import Arena
from .conftest import Judge, modes
from .daemon import control_status

HOST_DIR = Path("/tmp/cmlfifos")
FIFO_VICTIM = "fifovictim"


def _name() -> str:
    return "atk" + secrets.token_hex(5)  # /tmp/cmlfifos is the machine's: names nobody else uses


def write_host(name: str, data: bytes, timeout: float = 10) -> int:
    """Writes into the management end like c0's writer would; returns the bytes written before
    the channel stopped taking more (a writer blocks there; this one gives up at `timeout`)."""
    path = HOST_DIR / name
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as e:
            if e.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the copier re-opens its end
    done = 0
    try:
        while done < len(data) and time.monotonic() < deadline:
            try:
                done += os.write(fd, data[done:done + 65536])
            except BlockingIOError:
                time.sleep(0.05)
    finally:
        os.close(fd)
    return done


def in_background(arena: Arena, container: str, script: str, timeout: float = 30
                  ) -> tuple[threading.Thread, list[CliResult]]:
    out: list[CliResult] = []
    t = threading.Thread(target=lambda: out.append(arena.exec(container, "sh", "-c", script, timeout=timeout)))
    t.start()
    return t, out


@pytest.fixture(scope="module")
def fifo_victim(arena: Arena) -> Iterator[tuple[str, str]]:
    """A container with a FIFO of its own: (container, FIFO name)."""
    name = _name()
    arena.create(FIFO_VICTIM, userns=True, fifos=name, ram_limit=48)
    try:
        assert arena.start_container(FIFO_VICTIM) == "RUNNING"
        yield FIFO_VICTIM, name
    finally:
        arena.cli(arena.d, "remove", FIFO_VICTIM)


def victim_reads(arena: Arena, fifo_victim: tuple[str, str], secret: str) -> None:
    """Control: the rightful reader gets `secret` through its FIFO."""
    container, name = fifo_victim
    t, out = in_background(arena, container, f"timeout 10 cat /dev/fifos/{name}")
    time.sleep(1.0)
    write_host(name, secret.encode() + b"\n")
    t.join()
    assert out and secret in out[0].out, f"the rightful reader did not get the data: {out}"


@modes()
def test_disclosure_fifo_of_another_container(arena: Arena, fifo_victim: tuple[str, str], mode: str, judge: Judge,
                                              unaffected: Callable[[], None]) -> None:
    container, name = fifo_victim
    secret = "fifo-secret-" + secrets.token_hex(6)
    script = (f"N={name}; for p in /dev/fifos/$N /tmp/cmlfifos/$N /run/cmlfifos/$N /proc/1/root/tmp/cmlfifos/$N; "
              "do [ -e $p ] && echo exists $p; done; "
              "find / -xdev -name \"$N\" 2>/dev/null | sed 's/^/found /'; "
              "mkdir -p /dev/fifos && mkfifo /dev/fifos/$N && echo made own /dev/fifos/$N; "
              "timeout 4 cat /dev/fifos/$N; rm -f /dev/fifos/$N; echo end")
    reader, rout = in_background(arena, container, f"timeout 10 cat /dev/fifos/{name}")
    attacker, aout = in_background(arena, arena.attackers[mode], script)
    time.sleep(1.5)
    write_host(name, secret.encode() + b"\n")
    attacker.join()
    reader.join()
    got = aout[0].out if aout else ""
    assert "end" in got, got
    if secret in got or "exists" in got or "found" in got:
        judge.succeeded(f"the attacker: {' | '.join(got.splitlines())[:200]}")
    assert rout and secret in rout[0].out, f"control: the rightful reader did not get the data: {rout}"
    judge.blocked(f"{container}'s FIFO {name}: no path to it or to the host's end; "
                  f"{'a FIFO of its own by that name got nothing' if 'made own' in got else 'no own FIFO by that name'}"
                  f"; the rightful reader got the data")
    unaffected()


@modes()
def test_modification_fifo_symlink_replacement(arena: Arena, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """The attacker replaces its own /dev/fifos/<name> by a symlink to a host file; the
    management side writes; the copier must not write anywhere but a FIFO in the container."""
    name = _name()
    target = arena.hostdir / "victim.txt"
    before = target.read_bytes()
    links = (str(target), "../../../../../../.." + str(target), f"/proc/1/root{target}",
             f"/proc/self/root{target}", f"/proc/{os.getpid()}/root{target}")
    with arena.throwaway(mode, fifos=name) as tw:
        notes = []
        for link in links:
            marker = "fifo-write-" + secrets.token_hex(6)
            r = arena.exec(tw, "sh", "-c", f"rm -f /dev/fifos/{name} && ln -s {link} /dev/fifos/{name} && echo linked")
            assert "linked" in r.out, r.out + r.err
            write_host(name, marker.encode() + b"\n", timeout=3)
            time.sleep(1.0)
            leaked = [str(p) for p in arena.hostdir.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]
            if target.read_bytes() != before or leaked:
                judge.succeeded(f"symlink {link}: the copier wrote {marker} to {leaked or target}")
            notes.append(link.split("/")[1] if link.startswith("/proc") else ("abs" if link.startswith("/") else ".."))
            # control: the pending data goes to a FIFO put back in place, and only there
            t, out = in_background(arena, tw, f"rm -f /dev/fifos/{name}; mkfifo -m 600 /dev/fifos/{name}; "
                                              f"timeout 5 cat /dev/fifos/{name}")
            t.join()
            assert out and marker in out[0].out, f"control: the data did not reach the restored FIFO: {out}"
    judge.blocked(f"symlinks ({', '.join(notes)}) to the host's {target.name}: nothing written there; each time "
                  "the data waited and reached the FIFO put back")
    unaffected()


@modes()
def test_depletion_fifo_reader_never_reads(arena: Arena, fifo_victim: tuple[str, str], mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    """The attacker holds its FIFO open and never reads while the management side writes 4 MiB:
    the copier must wait without holding up cmld or another container's FIFO."""
    name = _name()
    with arena.throwaway(mode, fifos=name) as tw:
        r = arena.exec(tw, "sh", "-c", f"(exec </dev/fifos/{name}; sleep 60) >/dev/null 2>&1 </dev/null & echo held")
        assert "held" in r.out, r.out + r.err
        written: list[int] = []
        writer = threading.Thread(target=lambda: written.append(write_host(name, bytes(4 << 20), timeout=8)))
        writer.start()
        time.sleep(2)
        t0 = time.monotonic()
        try:
            states = control_status(arena.d.socket, timeout=5)
        except (OSError, AssertionError) as e:
            judge.succeeded(f"cmld did not answer while the attacker's FIFO was full: {e}")
        answered = time.monotonic() - t0
        secret = "fifo-other-" + secrets.token_hex(6)
        try:
            victim_reads(arena, fifo_victim, secret)
        except AssertionError as e:
            judge.succeeded(f"another container's FIFO stopped working while the attacker's was full: {e}")
        writer.join()
        if states.get(arena.victim) != "RUNNING":
            judge.succeeded(f"cmld's answer during the fill: {states}")
    judge.blocked(f"{written[0] >> 10} KiB of 4096 taken before the writer had to wait; cmld answered in "
                  f"{answered:.2f} s meanwhile, another container's FIFO delivered")
    unaffected()
