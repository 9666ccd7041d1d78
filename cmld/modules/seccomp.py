"""Seccomp (the original's c_seccomp): cmld compiles the container's filter (c0's light one, the
strict one for every other container, shaped by the capabilities it keeps), the child loads it
right before exec and hands the listener fd to cmld, whose supervisor emulates mknod of allowed
devices, sysinfo (from the container's cgroup), finit_module under `allow_module`, with
`allow_system_time` the clock-setting calls, and the PID-namespace reboot.

A container without a user namespace also gets an inotify broker (`cmld.seccomp.inotify_broker`):
its inotify instances and watches are charged to its own host UID (the base of the ID range cmld
reserves for it, as for a user-namespaced container) within a budget of `USER_LIMIT_SHARE` of
the host's per-user limits, instead of to host root."""

from __future__ import annotations

import asyncio
import base64
import logging

from cmld.audit import events
from cmld.audit.denials import summary_for
from cmld.cgroups.memory import MemoryUse
from cmld.containers.uid_offsets import allocate, uid_start
from cmld.launcher.spec import MountOp
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.modules.userns import userns_limits
from cmld.seccomp.filter import FilterKind, compiled
from cmld.seccomp.inotify_broker import InotifyBroker, budget
from cmld.seccomp.module_policy import ModuleAllowList, module_loading
from cmld.seccomp.supervisor import SeccompSupervisor

log = logging.getLogger(__name__)


def needs_inotify_broker(ctx: StartContext) -> bool:
    """Not c0 (host root's by design) and no user namespace (the userns module ran before)."""
    return not ctx.container.is_c0 and ctx.spec.uid_start is None


def uevents_allowed(ctx: StartContext) -> bool:
    """A uevent socket in a container without a user namespace hears every uevent of the device:
    its network namespace belongs to the initial user namespace, where the kernel broadcasts them
    (with a user namespace it hears only what cmld forwards for its own devices). Such a
    container may open one only if it has `usb_configs`, whose hotplug it needs; the rest get
    EPERM, the policy's refusal (the original allows it, and the disclosure with it)."""
    return ctx.container.is_c0 or ctx.spec.uid_start is not None or len(ctx.container.config.usb_configs) > 0


def filter_kind(ctx: StartContext) -> FilterKind:
    return FilterKind(light=ctx.container.is_c0, kept=frozenset(ctx.spec.cap_keep),
                      inotify_broker=needs_inotify_broker(ctx), uevents=uevents_allowed(ctx))


class SeccompModule(Module):
    name = "seccomp"

    def __init__(self) -> None:
        self.supervisor: SeccompSupervisor | None = None
        self.ctx: StartContext | None = None
        self.modules: ModuleAllowList | None = None
        self.modules_off = ""
        self.inotify_broker: InotifyBroker | None = None

    async def prepare(self, ctx: StartContext) -> None:
        # libseccomp compiles each kind once per cmld (tens of ms): off the event loop
        bpf = await asyncio.to_thread(compiled, filter_kind(ctx))
        ctx.spec.seccomp_bpf = base64.b64encode(bpf).decode()
        ctx.spec.allow_system_time = bool(ctx.container.config.allow_system_time)
        self.modules, self.modules_off = module_loading(list(ctx.container.config.allow_module))
        if ctx.container.config.allow_module and self.modules is None:
            log.info("container %s: allow_module ignored: %s", ctx.container.name, self.modules_off)
        elif self.modules is not None:
            # the host's module tree, read-only, as the original binds it for modprobe
            ctx.spec.mounts.append(MountOp("bind", "/lib/modules", source="/lib/modules", readonly=True))
        if needs_inotify_broker(ctx):
            await self._start_inotify_broker(ctx)

    async def _start_inotify_broker(self, ctx: StartContext) -> None:
        try:
            uid = uid_start(allocate(ctx.settings.containers_dir, ctx.uuid))
        except OSError as e:
            raise StartError(f"inotify broker: cannot persist the uid offset: {e.strerror}") from None
        instances, watches = budget(userns_limits())
        try:
            self.inotify_broker = await InotifyBroker.start(uid, instances, watches)
        except OSError as e:
            raise StartError(str(e.strerror or e)) from None
        log.debug("container %s: inotify broker %d (uid %d, %d instances, %d watches)", ctx.container.name,
                  self.inotify_broker.pid, uid, instances, watches)

    def _supervisor(self, ctx: StartContext, fd: int) -> SeccompSupervisor:
        def allowed(dev_type: str, major: int, minor: int) -> bool:
            return ctx.devices is not None and ctx.devices.is_allowed(dev_type, major, minor)

        def memory() -> MemoryUse | None:
            return ctx.cgroup.memory_use() if ctx.cgroup is not None else None

        def procs() -> int | None:
            return (ctx.cgroup.pids_current() or len(ctx.cgroup.pids())) if ctx.cgroup is not None else None

        sup = SeccompSupervisor(fd, container_name=ctx.container.name, init_pid=ctx.init_pid,
                                is_device_allowed=allowed, allow_system_time=ctx.spec.allow_system_time,
                                uid_offset=ctx.spec.uid_start, log_budget=ctx.log_budget, memory=memory,
                                procs=procs, modules=self.modules, modules_off=self.modules_off,
                                on_denied=summary_for(ctx.container.uuid, ctx.container.name)
                                if events.enabled() else None,
                                inotify_broker=self.inotify_broker)
        sup.start(asyncio.get_running_loop())
        return sup

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("seccomp")
        if fd is None:
            return
        self.supervisor = self._supervisor(ctx, fd)
        self.ctx = ctx
        ctx.seccomp = self

    def supervise_session(self, fd: int) -> SeccompSupervisor:
        """An exec session runs under the same filter; its listener gets its own supervisor."""
        assert self.ctx is not None
        return self._supervisor(self.ctx, fd)

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        sup = self.supervisor
        if sup is not None:
            sup.close()
            self.supervisor = None
        self.ctx = None
        ctx.seccomp = None
        broker, self.inotify_broker = self.inotify_broker, None
        if broker is not None:
            await broker.close()
