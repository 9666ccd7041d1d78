"""User namespace (the original's c_user): container uid 0 is host uid 100000 + k*100000, with
65536 IDs; k is persisted in `<uuid>.uid` in the original's format (`containers/uid_offsets.py`).

Also the per-user kernel resources of a container (inotify instances and watches, fanotify
groups and marks, message-queue bytes, namespaces): the kernel counts them per user of each user
namespace and charges them, up the chain, to the owner of the namespace. The launcher makes the
container's user namespace owned by the container root's host UID, so nothing is charged to
host root, and sets each `/proc/sys/user/max_*` of the namespace to a share of the host's
(`USER_LIMIT_SHARE`). A container without a user namespace *is* host root to the kernel: its
inotify and fanotify use cannot be told apart from the host's; its POSIX message queues are
bounded by RLIMIT_MSGQUEUE (`NO_USERNS_MSGQUEUE`: the kernel refuses a queue that would bring host
root's total above the creating process's limit)."""

from __future__ import annotations

import logging
from pathlib import Path

from cmld.containers.uid_offsets import UID_RANGE, allocate, uid_file, uid_start
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
USER_LIMITS = Path("/proc/sys/user")
USER_LIMIT_SHARE = 8  # a container's users each get 1/8 of the host's per-user limit
NO_USERNS_MSGQUEUE = 64 * 1024  # bytes: RLIMIT_MSGQUEUE of a container without a user namespace


def userns_limits(host_dir: Path = USER_LIMITS, share: int = USER_LIMIT_SHARE) -> dict[str, int]:
    """`max_*` of the container's user namespace: the host's value (read by cmld, in the host's
    namespace) divided by `share`, at least 1. Files this kernel lacks are left out."""
    out: dict[str, int] = {}
    try:
        names = sorted(p.name for p in host_dir.iterdir() if p.name.startswith("max_"))
    except OSError:
        return out
    for name in names:
        try:
            out[name] = max(1, int((host_dir / name).read_text()) // share)
        except (OSError, ValueError):
            continue
    return out


class UserNamespaceModule(Module):
    name = "userns"

    async def prepare(self, ctx: StartContext) -> None:
        if not ctx.container.config.userns or ctx.container.is_c0:
            ctx.spec.uid_start = None
            if not ctx.container.is_c0:
                ctx.spec.rlimits["MSGQUEUE"] = NO_USERNS_MSGQUEUE
            return
        try:
            offset = allocate(ctx.settings.containers_dir, ctx.uuid)
        except OSError as e:
            raise StartError(f"user namespace: cannot persist the uid offset: {e.strerror or e}") from None
        ctx.spec.uid_start = uid_start(offset)
        ctx.spec.uid_size = UID_RANGE
        ctx.spec.userns_limits = userns_limits()

    async def destroy(self, ctx: StartContext) -> None:
        uid_file(ctx.settings.containers_dir, ctx.uuid).unlink(missing_ok=True)
