"""Capabilities of a container (the original's c_cap), as an allow list.

An ordinary container keeps the set below and loses every other capability the running kernel
knows, from the bounding, effective, permitted, inheritable and ambient sets (README, Security:
each kept capability with its reason). The list of dropped numbers is computed here, in cmld,
from the kernel's own last capability (`kernel_cap_last`), and handed to the launcher and to
every exec helper: nothing inside a container can change what they drop.

c0 and a container started in setup mode keep what the original keeps (its deny list).
"""

from __future__ import annotations

from cmld.linux import CAP_NAMES, kernel_cap_last
from cmld.modules.base import Module
from cmld.modules.context import StartContext
from cmld.seccomp.module_policy import module_loading

# Docker's default set, minus SETFCAP (the original drops it in every container) and SYS_CHROOT
# (the original drops it in a container without a user namespace; kept with one, below).
ORDINARY = frozenset({"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
                      "NET_BIND_SERVICE", "NET_RAW", "MKNOD", "AUDIT_WRITE"})
# Held in the container's own user namespace only, where they reach its own mounts, namespaces
# and root directory, never the host's.
WITH_USERNS = frozenset({"SYS_ADMIN", "SYS_CHROOT"})

# The original's c_cap deny list, for c0 and setup mode.
ORIGINAL_ALWAYS_DROPPED = frozenset({"LINUX_IMMUTABLE", "IPC_OWNER", "SYS_MODULE", "SYS_PTRACE", "SYS_PACCT", "LEASE",
                                     "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG"})
ORIGINAL_DROPPED_WITHOUT_USERNS = frozenset({"SYS_ADMIN", "IPC_LOCK"})


def kept_caps(*, userns: bool, c0: bool, setup: bool, allow_modules: bool, allow_time: bool,
              own_nics: bool = False) -> frozenset[str]:
    """The capability names a container keeps. `own_nics`: physical NICs are assigned to it
    (`net_ifaces`) in its own network namespace, which nobody but the container configures (cmld
    configures only its veths), so it keeps NET_ADMIN there."""
    if c0 or setup:
        dropped = set(ORIGINAL_ALWAYS_DROPPED)
        if allow_modules:
            dropped.discard("SYS_MODULE")
        if not userns:  # (SYS_CHROOT, SYS_TIME, SYS_TTY_CONFIG: kept by c0 and in setup mode)
            dropped |= ORIGINAL_DROPPED_WITHOUT_USERNS
        return frozenset(CAP_NAMES) - dropped
    kept = set(ORDINARY)
    if userns:
        kept |= WITH_USERNS
    if allow_time:
        kept.add("SYS_TIME")
    if allow_modules:
        kept.add("SYS_MODULE")
    if own_nics:
        kept.add("NET_ADMIN")
    return frozenset(kept)


def drop_list(kept: frozenset[str], last_cap: int) -> list[int]:
    """Every capability number up to the kernel's last one that is not kept (numbers newer than
    our name table are never kept)."""
    return [n for n in range(last_cap + 1) if n >= len(CAP_NAMES) or CAP_NAMES[n] not in kept]


class CapabilitiesModule(Module):
    name = "capabilities"

    async def prepare(self, ctx: StartContext) -> None:
        cfg = ctx.container.config
        modules_on = module_loading(list(cfg.allow_module))[0] is not None  # needs enforced signatures
        kept = kept_caps(userns=ctx.spec.uid_start is not None, c0=ctx.container.is_c0, setup=ctx.setup_mode,
                         allow_modules=modules_on, allow_time=bool(cfg.allow_system_time),
                         own_nics=bool(cfg.net_ifaces) and bool(cfg.netns))
        ctx.spec.cap_keep = sorted(kept)
        ctx.spec.cap_drop = drop_list(kept, kernel_cap_last())
        if "SYS_NICE" not in kept:  # no real-time priority through RLIMIT_RTPRIO either
            ctx.spec.rlimits["RTPRIO"] = 0
