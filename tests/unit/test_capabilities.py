"""The capability allow list (modules/capabilities.py): what each kind of container keeps, that
the drop list covers every capability the kernel knows and nothing a container may keep, and
that the kernel's last capability is asked of the kernel, not of a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmld.linux import CAP, CAP_NAMES, kernel_cap_last
from cmld.modules.capabilities import ORDINARY, drop_list, kept_caps

pytestmark = pytest.mark.unit

DOCKER_DEFAULT = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                  "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
NEVER_FOR_ORDINARY = {"DAC_READ_SEARCH", "SYS_RAWIO", "SYS_NICE", "BPF", "PERFMON", "CHECKPOINT_RESTORE", "SYS_BOOT",
                      "BLOCK_SUSPEND", "WAKE_ALARM", "AUDIT_READ", "SYS_RESOURCE", "SYS_PTRACE", "SYSLOG", "MAC_ADMIN",
                      "MAC_OVERRIDE", "NET_ADMIN", "IPC_LOCK", "IPC_OWNER", "LINUX_IMMUTABLE", "SYS_PACCT", "LEASE",
                      "AUDIT_CONTROL", "SETFCAP", "SYS_TTY_CONFIG", "NET_BROADCAST"}


def kept(**kw: bool) -> frozenset[str]:
    args = {"userns": False, "c0": False, "setup": False, "allow_modules": False, "allow_time": False, **kw}
    return kept_caps(**args)


def test_ordinary_containers_keep_the_allow_list_only() -> None:
    assert kept() == ORDINARY
    assert ORDINARY <= DOCKER_DEFAULT  # never more than Docker's default set
    assert {"SETFCAP", "SYS_CHROOT"} == DOCKER_DEFAULT - ORDINARY  # the original drops these two
    assert kept(userns=True) == ORDINARY | {"SYS_ADMIN", "SYS_CHROOT"}
    assert kept(allow_time=True) == ORDINARY | {"SYS_TIME"}
    assert kept(allow_modules=True) == ORDINARY | {"SYS_MODULE"}
    for userns in (False, True):
        assert not kept(userns=userns) & NEVER_FOR_ORDINARY
    assert "SYS_ADMIN" not in kept(userns=False, allow_time=True, allow_modules=True)


def test_c0_and_setup_mode_keep_the_originals_set() -> None:
    c0 = kept(c0=True)
    for cap in ("SYS_TIME", "SYS_CHROOT", "SYS_TTY_CONFIG", "NET_ADMIN", "SYS_BOOT", "SYS_NICE"):
        assert cap in c0, cap
    for cap in ("SYS_MODULE", "SYS_PTRACE", "SETFCAP", "MAC_ADMIN", "SYSLOG", "SYS_ADMIN", "IPC_LOCK", "LEASE"):
        assert cap not in c0, cap
    assert "SYS_MODULE" in kept(c0=True, allow_modules=True)
    assert kept(setup=True) == c0
    assert {"SYS_ADMIN", "IPC_LOCK"} <= kept(setup=True, userns=True)


def test_drop_list_covers_every_capability_of_the_kernel() -> None:
    future = len(CAP_NAMES) + 4  # a kernel with four capabilities we have no name for
    for k in (kept(), kept(userns=True), kept(c0=True)):
        drops = drop_list(k, future)
        assert set(drops) | {CAP[n] for n in k} == set(range(future + 1))
        assert not set(drops) & {CAP[n] for n in k}
        assert set(range(len(CAP_NAMES), future + 1)) <= set(drops)  # unknown ones: dropped, c0 too


def test_last_capability_is_the_kernels() -> None:
    last = kernel_cap_last()
    assert last >= CAP["AUDIT_READ"]
    # the host's /proc agrees here; the point is that nothing reads it where a container could forge it
    assert last == int(Path("/proc/sys/kernel/cap_last_cap").read_text())


def test_net_admin_only_with_nics_of_its_own() -> None:
    """NET_ADMIN is kept only by a container with assigned NICs (net_ifaces), which it configures
    itself in its own network namespace; cmld configures every other interface from outside."""
    assert "NET_ADMIN" not in kept_caps(userns=True, c0=False, setup=False, allow_modules=False, allow_time=False)
    assert "NET_ADMIN" not in kept_caps(userns=False, c0=False, setup=False, allow_modules=False, allow_time=False)
    for userns in (True, False):
        assert "NET_ADMIN" in kept_caps(userns=userns, c0=False, setup=False, allow_modules=False, allow_time=False,
                                        own_nics=True)
