"""Controls: what a container is meant to be able to do must work, or the suite could pass by
being broken (an attack "refused" because nothing runs at all)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from .arena import Arena
from .conftest import Judge, modes


@modes()
@pytest.mark.req("TSF Device Access Control")
def test_control_allowed_devices(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """/dev/null, /dev/zero, /dev/urandom, and mknod + open of an allowed device (null)."""
    out = arena.attack(mode, "devs_allowed")
    assert out.verdict == "SUCCEEDED", out.output
    judge.control_ok(out.text)
    unaffected()


@modes()
def test_control_own_volume(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """The container writes its own volume, and the data is really there (seen from the host
    through its init's root)."""
    token = "own-data-" + secrets.token_hex(6)
    r = arena.exec(arena.attackers[mode], "sh", "-c", f"echo {token} > /data/own && sync && cat /data/own")
    assert r.rc == 0 and token in r.out, r.out + r.err
    pid = arena.attacker_pid(mode)
    assert Path(f"/proc/{pid}/root/data/own").read_text().strip() == token
    judge.control_ok(f"wrote and read back /data/own ({token})")
    unaffected()


@modes()
def test_control_userfaultfd_user_mode(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """The policy allows userfaultfd for user-mode faults only (what e.g. a garbage collector or
    live migration needs); the kernel-fault kind is the exploit primitive and is refused (see
    test_execution_syscall[userfaultfd])."""
    out = arena.attack(mode, "sys", "userfaultfd_user")
    assert out.verdict == "SUCCEEDED", out.output
    judge.control_ok(out.text)
    unaffected()


@modes()
def test_control_own_processes(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """Signals and the process table inside the container work: the victim's sleeper is not
    visible, but the container's own processes are and can be signalled."""
    r = arena.exec(arena.attackers[mode], "sh", "-c", "sleep 30 & p=$!; kill -0 $p && kill $p && wait $p; "
                   "echo status=$?; ls /proc | grep -c '^[0-9]'")
    assert r.rc == 0 and "status=143" in r.out, r.out + r.err
    judge.control_ok(" ".join(r.out.split()))
    unaffected()
