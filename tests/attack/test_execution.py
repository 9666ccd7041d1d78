"""Execution: calling functions of the host (the kernel's privileged interfaces, the daemon's
management functions) without the right, or gaining a privileged context (the host's namespaces,
a privileged helper, the operator's terminal)."""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import select
import time
import tty
from collections.abc import Callable
from pathlib import Path

import pytest

from .arena import Arena
from .conftest import Judge, modes
from .host import NS_KINDS, ns_inodes

CAP_NAMES = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
             "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
             "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
             "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
             "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
             "CHECKPOINT_RESTORE")
# Capabilities an ordinary container must not hold over the host (in the initial user
# namespace), with what each gives. A user-namespaced container holds capabilities of its own
# namespace only, which reach none of these.
HOST_CAPS = {
    "DAC_READ_SEARCH": "open_by_handle_at: any inode of a mounted host file system",
    "SYS_RAWIO": "I/O ports (iopl/ioperm), page 0 below mmap_min_addr, raw block commands",
    "SYS_NICE": "real-time and deadline scheduling above every host task",
    "BPF": "loading eBPF programs",
    "PERFMON": "tracing and perf of the whole machine, kernel included",
    "CHECKPOINT_RESTORE": "checkpoint/restore interfaces (map_files, set_tid, ns_last_pid)",
    "SYS_BOOT": "kexec_load of a new kernel where the kernel has kexec",
    "BLOCK_SUSPEND": "keeping the device from suspending (EPOLLWAKEUP)",
    "WAKE_ALARM": "alarms that wake the device from suspend",
    "AUDIT_READ": "reading the audit log over netlink",
    "SYS_RESOURCE": "overriding resource limits, oom_score_adj -1000",
    "SYS_ADMIN": "mount, namespaces of the host, most of the kernel",
    "SYS_MODULE": "loading kernel modules",
    "SYS_PTRACE": "tracing any process",
    "SYS_TIME": "setting the clock",
    "SYSLOG": "the kernel log and kernel addresses",
    "MAC_ADMIN": "changing the LSM policy",
}


@pytest.mark.parametrize("cap", HOST_CAPS)
@modes()
@pytest.mark.req("OS 05")
def test_execution_host_capability(arena: Arena, cap: str, mode: str, judge: Judge,
                                   unaffected: Callable[[], None]) -> None:
    """The root cause of several attacks: which capabilities container root holds in the host's
    user namespace (an allow list: what is not kept, a newer kernel's additions included, is
    dropped)."""
    status = arena.caps(mode)
    uid_map = re.search(r"uid_map\s+(\d+)\s+(\d+)\s+(\d+)", status)
    assert uid_map, status
    eff = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
    held = bool(eff >> CAP_NAMES.index(cap) & 1)
    in_host_ns = uid_map.groups() == ("0", "0", "4294967295")
    if held and in_host_ns:
        judge.succeeded(f"container root holds CAP_{cap} in the host's user namespace: {HOST_CAPS[cap]}")
    why = "not held" if not held else \
        f"held only in the container's own user namespace (uid map {uid_map.group(0)[8:]})"
    judge.blocked(f"CAP_{cap}: {why}")
    unaffected()


@modes()
def test_execution_bpf_prog_load(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "bpf_load"))
    unaffected()


def _kernel_has(syscall: str) -> bool:
    """Whether this kernel has the interface at all (probed without any effect)."""
    if syscall in ("kexec_load", "kexec_file_load"):
        return Path("/proc/sys/kernel/kexec_load_disabled").exists()
    if syscall in ("init_module", "finit_module", "delete_module"):
        return Path("/proc/sys/kernel/modules_disabled").exists()
    if syscall in ("iopl", "ioperm"):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(172, 0) == 0  # iopl(0): the level every process has; ENOSYS without the feature
    return True


SYSCALLS = ("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "swapon", "acct", "iopl",
            "ioperm", "mmap_zero", "personality_zero", "userfaultfd", "io_uring", "x32", "int80")


@pytest.mark.parametrize("call", SYSCALLS)
@modes()
def test_execution_syscall(arena: Arena, call: str, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """Privileged system calls, each with arguments that change nothing even if it were allowed
    (an invalid parameter checked after the permission, or undone at once). ENOSYS (the kernel
    lacks the call) counts as refused, and the note says so. The policy for io_uring: refused in
    containers (its submissions do not pass the seccomp filter); userfaultfd: only
    UFFD_USER_MODE_ONLY (see the control)."""
    out = arena.attack(mode, "sys", call)
    if "ENOSYS" in out.text and not _kernel_has(call):
        out.text += " (this kernel does not have it)"
    judge(out)
    unaffected()


@modes()
def test_execution_ptrace_exec_helper(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """The exec helper of `cml-control run` sits in the container with every capability until it
    execs the command: ptrace, process_vm_readv and /proc/<pid>/mem of it must be refused."""
    judge(arena.attack(mode, "helper", "ptrace"))
    unaffected()


@modes()
@pytest.mark.req("OS 05", "TSF Container Isolation")
def test_execution_setns_host_namespaces(arena: Arena, mode: str, judge: Judge,
                                         unaffected: Callable[[], None]) -> None:
    own = ns_inodes()
    if mode == "no-userns":  # such a container shares the host's user namespace by design
        own = [i for i, k in zip(own, NS_KINDS, strict=True) if k != "user"]
    judge(arena.attack(mode, "setns_scan", *(str(i) for i in own)))
    unaffected()


@modes()
def test_execution_unshare_user_namespace(arena: Arena, mode: str, judge: Judge,
                                          unaffected: Callable[[], None]) -> None:
    """A new user namespace gives a full capability set (in it): umount the masks, remount
    /proc/sys, core_pattern, fresh proc/sysfs/devtmpfs/cgroup mounts."""
    judge(arena.attack(mode, "unshare_user"))
    unaffected()


KERNEL_FS = ["devtmpfs", "cgroup", "debugfs", "tracefs", "securityfs", "bpf", "sysfs", "configfs"]


@pytest.mark.parametrize("fstype", KERNEL_FS)
@modes()
@pytest.mark.req("OS 05")
def test_execution_mount_kernel_fs(arena: Arena, mode: str, fstype: str, judge: Judge,
                                   unaffected: Callable[[], None]) -> None:
    """File systems that are the host's own or the kernel's internals (devtmpfs is the host's
    /dev; cgroup v1 has the release_agent escape; debugfs, tracefs, securityfs, bpf, configfs
    expose the kernel). A fresh sysfs would lift the container's read-only one."""
    out = arena.attack(mode, "mount_fs", fstype)
    if out.verdict == "done":
        judge.succeeded(out.text)
    judge(out)
    unaffected()


@modes()
@pytest.mark.req("OS 05", "CR 2.1 (1)")
def test_execution_daemon_sockets_unreachable(arena: Arena, mode: str, judge: Judge,
                                              unaffected: Callable[[], None]) -> None:
    """cmld's control socket (at its host path and at the default path) and scd's must not be
    reachable from an ordinary container; only c0 has the control socket."""
    judge(arena.attack(mode, "unix_path", str(arena.d.socket), "/run/socket/cml-control",
                       "/run/socket/cml-scd_control", "/run/socket/cml-tpm2d-control"))
    unaffected()


@modes()
def test_execution_forged_cap_last_cap(arena: Arena, mode: str, judge: Judge,
                                       unaffected: Callable[[], None]) -> None:
    """A container binds a file saying -1 over its /proc/sys/kernel/cap_last_cap: the next
    `cml-control run` session must still start with the container's bounding set."""
    with arena.throwaway(mode) as name:
        normal = re.search(r"CapBnd:\s*(\w+)", arena.attack(name, "whoami").output)
        forge = arena.attack(name, "forge_cap_last")
        after = re.search(r"CapBnd:\s*(\w+)", arena.attack(name, "whoami").output)
        assert normal and after
        if after.group(1) != normal.group(1):
            judge.succeeded(f"{forge.text}; the next session's bounding set is {after.group(1)} instead of "
                            f"{normal.group(1)} (every capability, CAP_SYS_MODULE and CAP_SYS_PTRACE too)")
        if forge.verdict == "blocked":
            judge(forge)
        else:
            judge.blocked(f"{forge.text}; the next session's bounding set is still {after.group(1)}")
    unaffected()


@modes()
def test_execution_terminal_injection(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """cmld run in the foreground on a terminal (a pty the test made): a container opens
    /dev/tty and pushes keystrokes into that terminal's input with TIOCSTI; what the operator's
    shell would read next is read here from the terminal."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        with arena.dedicated(f"tty-{mode}", ctty=os.ttyname(slave)) as d:
            name = arena.create("ttyatk", userns=(mode == "userns"), d=d)
            assert arena.start_container(name, d=d) == "RUNNING"
            text = f"echo pwned-{secrets.token_hex(3)}\n"
            out = arena.attack(name, "tty", text, d=d)
            injected = _drain(slave)
            screen = _drain(master)
            if text.encode() in injected:
                judge.succeeded(f"{out.text}; the terminal's input now holds {injected!r}, its screen shows "
                                f"{screen[:40]!r}")
            judge(out)
    finally:
        os.close(master)
        os.close(slave)
    unaffected()


def _drain(fd: int) -> bytes:
    data = b""
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            if data:
                break
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
