"""User namespace (the original's c_user): container uid 0 is host uid 100000 + k*100000, with
65536 IDs; k is persisted in `<uuid>.uid` in the original's format (`containers/uid_offsets.py`)."""

from __future__ import annotations

import logging

from cmld.containers.uid_offsets import UID_RANGE, allocate, uid_file, uid_start
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


class UserNamespaceModule(Module):
    name = "userns"

    async def prepare(self, ctx: StartContext) -> None:
        if not ctx.container.config.userns or ctx.container.is_c0:
            ctx.spec.uid_start = None
            return
        try:
            offset = allocate(ctx.settings.containers_dir, ctx.uuid)
        except OSError as e:
            raise StartError(f"user namespace: cannot persist the uid offset: {e.strerror or e}") from None
        ctx.spec.uid_start = uid_start(offset)
        ctx.spec.uid_size = UID_RANGE

    async def destroy(self, ctx: StartContext) -> None:
        uid_file(ctx.settings.containers_dir, ctx.uuid).unlink(missing_ok=True)
