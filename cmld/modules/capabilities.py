"""Capability bounding set of a container, as the original's c_cap."""

from __future__ import annotations

from cmld.linux import CAP
from cmld.modules.base import Module
from cmld.modules.context import StartContext
from cmld.seccomp.module_policy import module_loading

ALWAYS_DROPPED = ("LINUX_IMMUTABLE", "IPC_OWNER", "SYS_MODULE", "SYS_PTRACE", "SYS_PACCT", "LEASE",
                  "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG")
# Without a user namespace container root is host root: these would reach the host.
DROPPED_WITHOUT_USERNS = ("SYS_ADMIN", "IPC_LOCK")
# Not for the management container c0, and not in setup mode.
DROPPED_UNLESS_PRIVILEGED = ("SYS_CHROOT", "SYS_TIME", "SYS_TTY_CONFIG")


def dropped_caps(*, userns: bool, c0: bool, setup: bool, allow_modules: bool, allow_time: bool) -> list[str]:
    names = [n for n in ALWAYS_DROPPED if not (n == "SYS_MODULE" and allow_modules)]
    if not userns:
        names += DROPPED_WITHOUT_USERNS
        if not c0 and not setup:
            names += [n for n in DROPPED_UNLESS_PRIVILEGED if not (n == "SYS_TIME" and allow_time)]
    return names


class CapabilitiesModule(Module):
    name = "capabilities"

    async def prepare(self, ctx: StartContext) -> None:
        cfg = ctx.container.config
        modules_on = module_loading(list(cfg.allow_module))[0] is not None  # needs enforced signatures
        names = dropped_caps(userns=ctx.spec.uid_start is not None, c0=ctx.container.is_c0, setup=ctx.setup_mode,
                             allow_modules=modules_on, allow_time=cfg.allow_system_time)
        ctx.spec.cap_drop = [CAP[n] for n in names]
