"""Time namespace (the original's c_time): the container's monotonic and boot clocks start at 0."""

from __future__ import annotations

from ..runtime.context import StartContext
from .base import Module


class TimeModule(Module):
    name = "time"

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.timens = True
