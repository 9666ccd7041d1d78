"""/proc/meminfo inside the container shows the container (the original mounts lxcfs's view over
it): MemTotal is its ram_limit, MemFree/MemAvailable/Cached come from its cgroup.

No FUSE and no host procfs: the launcher puts a regular file (on the container's own /run tmpfs,
owned by the host's root, so a user-namespaced container cannot write it) read-only over
/proc/meminfo and hands cmld a writable fd of it, opened before the bind; cmld rewrites it
every REFRESH seconds while the container runs. A container that unmounts it sees the kernel's
file of its own procfs mount, never a superblock it shares with the host. sysinfo(2) (busybox
`free`) is answered from the same cgroup values by the seccomp supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat

from cmld.cgroups.memory import MemoryUse, host_meminfo, meminfo_text, view
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
REFRESH = 1.0  # s


class MeminfoModule(Module):
    name = "meminfo"

    def __init__(self) -> None:
        self.fd = -1
        self.task: asyncio.Task[None] | None = None

    async def prepare(self, ctx: StartContext) -> None:
        limit = ctx.container.config.ram_limit << 20 if ctx.container.config.ram_limit else None
        first = MemoryUse(limit=limit, usage=0, file=0, inactive_file=0, shmem=0, swap_limit=0 if limit else None,
                          swap_usage=0)
        ctx.spec.meminfo = meminfo_text(view(first, host_meminfo()))

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("meminfo")  # opened by the launcher as the host's root, before the bind
        if fd is None:
            raise StartError("meminfo: the launcher did not hand over the /proc/meminfo view")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:  # procfs files have size 0: not our file
            os.close(fd)
            raise StartError("meminfo: the /proc/meminfo view handed over is not a regular file")
        self.fd = fd
        self.task = asyncio.ensure_future(self._refresh(ctx))

    def write(self, text: str) -> None:
        data = text.encode()
        os.pwrite(self.fd, data, 0)  # in place: a reader never finds the file empty
        os.ftruncate(self.fd, len(data))

    async def _refresh(self, ctx: StartContext) -> None:
        while True:
            use = ctx.cgroup.memory_use() if ctx.cgroup is not None else None
            if use is not None:
                try:
                    self.write(meminfo_text(view(use, host_meminfo())))
                except OSError as e:
                    log.warning("container %s: /proc/meminfo view not refreshed: %s", ctx.container.name, e)
            await asyncio.sleep(REFRESH)

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
