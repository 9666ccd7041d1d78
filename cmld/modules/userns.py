"""User namespace (the original's c_user): container uid 0 is host uid 100000 + k*100000, with
65536 IDs; k is the lowest offset not used by another container, persisted in `<uuid>.uid`."""

from __future__ import annotations

import logging
from pathlib import Path

from cml_common.fsutil import write_atomic
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
UID_BASE = 100000
UID_RANGE = 65536
MAX_OFFSET = 40000  # keeps every range below 2^32


def uid_file(containers_dir: Path, uuid: str) -> Path:
    return containers_dir / f"{uuid}.uid"


def read_offset(path: Path) -> int | None:
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if 0 <= value < MAX_OFFSET else None


def allocate_offset(containers_dir: Path, uuid: str) -> int:
    mine = uid_file(containers_dir, uuid)
    existing = read_offset(mine)
    if existing is not None:
        return existing
    used = {o for p in containers_dir.glob("*.uid") if p != mine and (o := read_offset(p)) is not None}
    offset = next(k for k in range(MAX_OFFSET) if k not in used)
    write_atomic(mine, f"{offset}\n".encode(), mode=0o600)
    return offset


def uid_start(offset: int) -> int:
    return UID_BASE + offset * UID_BASE


class UserNamespaceModule(Module):
    name = "userns"

    async def prepare(self, ctx: StartContext) -> None:
        if not ctx.container.config.userns or ctx.container.is_c0:
            ctx.spec.uid_start = None
            return
        try:
            offset = allocate_offset(ctx.settings.containers_dir, ctx.uuid)
        except OSError as e:
            raise StartError(f"user namespace: cannot persist the uid offset: {e.strerror}") from None
        ctx.spec.uid_start = uid_start(offset)
        ctx.spec.uid_size = UID_RANGE

    async def destroy(self, ctx: StartContext) -> None:
        uid_file(ctx.settings.containers_dir, ctx.uuid).unlink(missing_ok=True)
