"""Seccomp (the original's c_seccomp): the child installs the filter before exec and hands the
notify fd to cmld, whose supervisor emulates mknod of allowed devices and, with
`allow_system_time`, the clock-setting calls."""

from __future__ import annotations

import asyncio
import logging

from ..runtime.context import StartContext
from .base import Module

log = logging.getLogger(__name__)


class SeccompModule(Module):
    name = "seccomp"

    def __init__(self) -> None:
        self.supervisor: object | None = None

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.seccomp = True
        ctx.spec.allow_system_time = bool(ctx.container.config.allow_system_time)

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("seccomp")
        if fd is None:
            return
        from ..seccomp.supervisor import SeccompSupervisor
        from .devices import DevicesModule

        devices = ctx.data.get("devices")

        def allowed(dev_type: str, major: int, minor: int) -> bool:
            return isinstance(devices, DevicesModule) and devices.is_allowed(dev_type, major, minor)

        sup = SeccompSupervisor(fd, container_name=ctx.container.name, init_pid=ctx.init_pid,
                                is_device_allowed=allowed, allow_system_time=ctx.spec.allow_system_time,
                                uid_offset=ctx.spec.uid_start)
        sup.start(asyncio.get_running_loop())
        self.supervisor = sup

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        sup = self.supervisor
        if sup is not None:
            sup.close()  # type: ignore[attr-defined]
            self.supervisor = None
