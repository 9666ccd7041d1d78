"""Modification: writing what belongs to the host, to the daemon or to another container.

Writes are only ever aimed at sacrificial objects of the arena (a file on its own loop file
system, a key the test added); everything else is "written" by opening it for writing (the
kernel checks the permission at open) or by writing back the value it already has.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .arena import Arena
from .conftest import Judge, modes


@modes()
def test_modification_open_by_handle_at_overwrites_host_file(arena: Arena, mode: str, judge: Judge,
                                                              unaffected: Callable[[], None]) -> None:
    payload = "overwritten-by-" + secrets.token_hex(4)
    target = arena.hostdir / "victim.txt"
    out = arena.attack(mode, "obh", "/opt/bind-rw.txt", "host/victim.txt", "write", payload)
    now = target.read_text()
    if now != arena.host_file_text:
        target.write_text(arena.host_file_text)  # the sacrificial host file, restored
        assert now == payload and out.verdict == "SUCCEEDED", (now, out.output)
        judge.succeeded(f"{out.text}; the host file now read {now!r}")
    judge(out)
    unaffected()


@modes()
@pytest.mark.req("TSF Container Isolation")
def test_modification_keyring_other_container_key(arena: Arena, mode: str, judge: Judge,
                                                  unaffected: Callable[[], None]) -> None:
    desc = f"atk-victim-w-{mode}"
    arena.victim_key(desc, "victim-original")
    new = "overwritten-" + secrets.token_hex(4)
    out = arena.attack(mode, "keys_update", desc, new)
    seen = arena.attack(arena.victim, "keys_read_own", desc)
    if new in seen.text:
        judge.succeeded(f"{out.text}; the victim container now reads {seen.text}")
    judge(out)
    unaffected()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
KEY_SPEC_USER_KEYRING = -4
SYS_add_key, SYS_keyctl = 248, 250
KEYCTL_SEARCH, KEYCTL_UNLINK, KEYCTL_REVOKE = 10, 9, 3


def _keyctl(*args: int | bytes | ctypes.c_long) -> int:
    return int(_libc.syscall(SYS_keyctl, *args))


@modes()
def test_modification_keyring_host_root_user_keyring(arena: Arena, mode: str, judge: Judge,
                                                     unaffected: Callable[[], None]) -> None:
    """The test adds a key of its own to host root's user keyring; the container tries to find
    it in "its" user keyring and unlink it."""
    desc = b"atk-host-user-" + secrets.token_hex(4).encode()
    key = int(_libc.syscall(SYS_add_key, b"user", desc, b"host-root-key", 13, ctypes.c_long(KEY_SPEC_USER_KEYRING)))
    assert key > 0, os.strerror(ctypes.get_errno())
    try:
        out = arena.attack(mode, "keys_unlink_user", desc.decode())
        still = _keyctl(KEYCTL_SEARCH, ctypes.c_long(KEY_SPEC_USER_KEYRING), b"user", desc, 0)
        if still < 0:
            judge.succeeded(f"{out.text}; host root's user keyring no longer holds key {key}")
        judge(out)
    finally:
        _keyctl(KEYCTL_UNLINK, key, ctypes.c_long(KEY_SPEC_USER_KEYRING))
        _keyctl(KEYCTL_REVOKE, key)
    unaffected()


PROC_SYS = ["kernel/core_pattern", "vm/drop_caches", "kernel/randomize_va_space", "vm/overcommit_memory",
            "kernel/sysrq", "kernel/modprobe", "fs/suid_dumpable"]


@pytest.mark.parametrize("sysctl", PROC_SYS)
@modes()
@pytest.mark.req("OS 05")
def test_modification_proc_sys(arena: Arena, mode: str, sysctl: str, judge: Judge,
                               unaffected: Callable[[], None]) -> None:
    """Open a host setting in /proc/sys for writing: directly, after remounting /proc/sys
    read-write, after unmounting it, through a fresh proc."""
    if not Path("/proc/sys", sysctl).exists():
        pytest.skip(f"/proc/sys/{sysctl}: not in this kernel")
    judge(arena.attack(mode, "openw", f"/proc/sys/{sysctl}", "/proc/sys", "proc"))
    unaffected()


@modes()
def test_modification_sysrq_trigger(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    if not Path("/proc/sysrq-trigger").exists():
        pytest.skip("/proc/sysrq-trigger: not in this kernel (CONFIG_MAGIC_SYSRQ)")
    judge(arena.attack(mode, "openw", "/proc/sysrq-trigger", "/proc/sysrq-trigger", "proc"))
    unaffected()


SYSFS = ["kernel/mm/transparent_hugepage/enabled", "kernel/uevent_helper", "power/state", "kernel/profiling",
         "module/printk/parameters/time"]


@pytest.mark.parametrize("attr", SYSFS)
@modes()
def test_modification_sysfs(arena: Arena, mode: str, attr: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    if not Path("/sys", attr).exists():
        pytest.skip(f"/sys/{attr}: not in this kernel")
    judge(arena.attack(mode, "openw", f"/sys/{attr}", "/sys", "sysfs"))
    unaffected()


@modes()
def test_modification_remount_pseudo_fs_reaches_host(arena: Arena, mode: str, judge: Judge,
                                                     unaffected: Callable[[], None]) -> None:
    """Remount /proc, /sys and /dev read-only from inside (their superblocks, not just the
    mounts): the host's must stay read-write. Run in a container of its own."""
    with arena.throwaway(mode) as name:
        steps = [arena.attack(name, "remount", "ro", path).text for path in ("/proc", "/sys", "/dev")]
        unaffected()  # the host's /proc, /sys, /dev mount options are compared there
        judge.blocked("; ".join(steps) + " -- the host's mounts are unchanged")


@modes()
@pytest.mark.req("TSF Container Isolation")
def test_modification_remount_root_shared_image(arena: Arena, mode: str, judge: Judge,
                                                unaffected: Callable[[], None]) -> None:
    """The root and /opt are the GuestOS's images, shared by every container using it."""
    judge(arena.attack(mode, "remount_root"))
    unaffected()


TIME = ["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"]


@pytest.mark.parametrize("call", TIME)
@modes()
@pytest.mark.req("OS 05", "IAM 02")
def test_modification_system_time(arena: Arena, mode: str, call: str, judge: Judge,
                                  unaffected: Callable[[], None]) -> None:
    """Without allow_system_time, no clock-setting call may succeed (the values given change
    nothing even if one did: the current timezone, offset 0, "now")."""
    judge(arena.attack(mode, "sys", call))
    unaffected()


@modes()
def test_modification_host_name(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    out = arena.attack(mode, "sys", "sethostname")
    assert out.verdict in ("blocked", "done"), out.output
    unaffected()  # the host's name and kernel/hostname are compared there
    judge.blocked(f"{out.text} -- the host's name is unchanged")


@modes()
def test_modification_log_line_forged(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """A newline in a path the container passes to mknod(2) (which cmld's seccomp supervisor
    logs): does a complete, forged log line appear?"""
    token = secrets.token_hex(4)
    forged = f"2099-01-01T00:00:00.000+00:00 [1] CRITICAL forged-by-container-{token}"
    out = arena.attack(mode, "mknod_path", f"/tmp/x\\n{forged}", "1", "1")
    assert out.verdict == "done", out.output
    lines = [ln for ln in arena.d.log_text().splitlines() if ln.startswith(forged)]
    if lines:
        judge.succeeded(f"cmld's log has a line the container wrote: {lines[0]!r}")
    judge.blocked(f"{out.text}; no log line starts with the forged text")
    unaffected()


@modes()
def test_modification_mknod_supervisor_path_escape(arena: Arena, mode: str, judge: Judge,
                                                   unaffected: Callable[[], None]) -> None:
    """cmld's supervisor makes device nodes for the container, in the host's mount namespace:
    paths through /proc magic links, `..` beyond the root, and a directory swapped for a symlink
    to a host directory while the call is in flight, must all stay inside the container."""
    before = sorted(p.name for p in arena.hostdir.iterdir())
    out = arena.attack(mode, "mknod_race", "/tmp/atk-race", str(arena.hostdir), "300")
    assert out.verdict == "done", out.output
    after = sorted(p.name for p in arena.hostdir.iterdir())
    if after != before:
        for p in arena.hostdir.iterdir():
            if p.name not in before:
                p.unlink()
        judge.succeeded(f"device nodes appeared in the host directory: {sorted(set(after) - set(before))}")
    judge.blocked(out.text)
    unaffected()


@modes()
def test_modification_symlink_in_volume_redirects_mount(arena: Arena, mode: str, judge: Judge,
                                                        unaffected: Callable[[], None]) -> None:
    """A container replaces a mount point in its persistent volume (/opt/cache, on its
    OVERLAY_RW /opt) with a symlink to a host directory; at its next start cmld must not mount
    onto the host directory."""
    before = sorted(p.name for p in arena.hostdir.iterdir())
    with arena.throwaway(mode, guestos="racyos") as name:
        plant = arena.attack(name, "plant_symlink", "/opt/cache", str(arena.hostdir))
        if plant.verdict == "blocked":
            judge.blocked(f"the symlink cannot even be planted: {plant.text}")
            unaffected()
            return
        assert plant.verdict == "done", plant.output
        stop = arena.stop_container(name)
        start = arena.start_container(name)
        mounted = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                   if str(arena.hostdir) in ln.split()[4]]
        after = sorted(p.name for p in arena.hostdir.iterdir())
        if mounted or after != before:
            judge.succeeded(f"after the restart: {mounted or after}")
        judge.blocked(f"planted {plant.text}; stop: {stop}; restart: {start}; nothing mounted on the host directory")
    unaffected()


@modes()
def test_modification_exec_helper_binary(arena: Arena, mode: str, judge: Judge,
                                         unaffected: Callable[[], None]) -> None:
    """CVE-2019-5736 (runc): a handle on /proc/<exec helper>/exe is a handle on the host's
    interpreter binary. Only the open is tried, never a write."""
    judge(arena.attack(mode, "helper", "exe"))
    unaffected()


def _host_binfmt_entries() -> set[str]:
    """The host's binfmt_misc registrations, read through a mount in a private mount namespace
    (the host's own mount table stays untouched)."""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              f'mount -t binfmt_misc binfmt_misc "{d}" && ls "{d}"'],
                             capture_output=True, text=True, check=True).stdout
    return set(out.split())


@modes()
def test_modification_binfmt_misc_register(arena: Arena, mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    """Register an interpreter with binfmt_misc: it must not appear in the host's list (it would
    run, as root, for any matching file the host executes)."""
    name = "atk" + secrets.token_hex(3)
    out = arena.attack(mode, "binfmt", name)
    host = _host_binfmt_entries()
    if name in host:
        with contextlib.suppress(OSError), tempfile.TemporaryDirectory() as d:
            subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f'mount -t binfmt_misc binfmt_misc "{d}" && echo -1 > "{d}/{name}"'], check=False)
        judge.succeeded(f"{out.text}; the host's binfmt_misc now has {name}")
    if out.verdict == "done":
        judge.blocked(f"{out.text} (in the container's own binfmt_misc instance); the host's list is unchanged")
    else:
        judge(out)
    unaffected()
