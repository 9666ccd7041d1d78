"""Network namespace (the original's c_net, without veth and routing yet): a fresh netns with
only `lo` up, bound at /run/netns/<uuid> so `ip netns exec <uuid>` reaches it."""

from __future__ import annotations

import contextlib
import logging
import os

from cmld import linux
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


def unbind_netns(path: str) -> None:
    with contextlib.suppress(OSError):
        linux.umount2(path, linux.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class NetworkModule(Module):
    name = "network"

    def __init__(self) -> None:
        self.bound: str | None = None

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.netns = bool(ctx.container.config.netns)

    async def post_clone(self, ctx: StartContext) -> None:
        if not ctx.spec.netns:
            return
        d = ctx.settings.netns_dir
        path = str(d / ctx.uuid)
        if os.path.lexists(path):
            # Only this container's previous life can have left a binding of its UUID (a stop
            # whose cleanup raced with this start, or a crash): it names no live container.
            log.warning("container %s: removing a stale network namespace binding %s", ctx.container.name, path)
            unbind_netns(path)
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            os.close(fd)
            self.bound = path
            ctx.netns_path = path
            linux.mount(f"/proc/{ctx.init_pid}/ns/net", path, None, linux.MS_BIND)
        except OSError as e:
            raise StartError(f"binding the network namespace at {path}: {e.strerror}") from None

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.bound is not None:
            unbind_netns(self.bound)
            self.bound = None
