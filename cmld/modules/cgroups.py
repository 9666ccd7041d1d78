"""cgroups (the original's c_cgroups / c_cgroups_v2): memory, cpuset, pids limit and freezer.

The launcher joins the group before it forks init, so every process of the container is
accounted from its first instruction. The group is removed at cleanup.
"""

from __future__ import annotations

import asyncio
import logging

from cmld.cgroups.driver import CgroupDriver, CgroupLimits, ContainerCgroup
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


class CgroupsModule(Module):
    name = "cgroups"

    def __init__(self, driver: CgroupDriver) -> None:
        self.driver = driver
        self.cgroup: ContainerCgroup | None = None

    async def prepare(self, ctx: StartContext) -> None:
        cfg = ctx.container.config
        limits = CgroupLimits(memory_mb=cfg.ram_limit, cpus=cfg.assign_cpus or None, pids_max=ctx.settings.pids_max)
        stale = self.driver.open_existing(ctx.uuid)
        if stale is not None:  # left over from a crash; nothing may run in it any more
            stale.kill_all()
            stale.remove()
        try:
            self.cgroup = self.driver.create(ctx.uuid, limits)
        except (OSError, RuntimeError, ValueError) as e:
            raise StartError(f"cgroups: {e}") from None
        ctx.cgroup = self.cgroup
        ctx.spec.cgroup_procs = self.cgroup.procs_files()

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        cg = self.cgroup
        if cg is None:
            return

        def sweep() -> None:
            try:
                cg.kill_all()
            finally:
                cg.remove()
        try:
            await asyncio.to_thread(sweep)
        finally:
            self.cgroup = None
            ctx.cgroup = None
