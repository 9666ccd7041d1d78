"""Time namespace (the original's c_time): the container's monotonic and boot clocks start at 0."""

from __future__ import annotations

from cmld.modules.base import Module
from cmld.modules.context import StartContext


class TimeModule(Module):
    name = "time"

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.timens = True
