"""The hooks a container module may implement (the original's compartment_module_t).

Order of a start: `prepare` (before the container exists; fills the launch spec), `post_clone`
(the init process exists, not yet set up), `pre_exec` (the child finished its setup and handed
over its fds), `post_exec` (init runs). `stop` asks the container to end; `cleanup` runs after init
has exited, also after a failed start, in reverse module order, and must tolerate a `prepare`
that never ran or ran only partly. `destroy` removes what a module keeps on disk for a container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmld.errors import StartError

if TYPE_CHECKING:
    from cmld.modules.context import StartContext


__all__ = ["Module", "StartError"]


class Module:
    name = "module"

    async def prepare(self, ctx: StartContext) -> None:
        """Before the launcher runs."""

    async def post_clone(self, ctx: StartContext) -> None:
        """The container's init process exists (ctx.init_pid) and waits for GO."""

    async def pre_exec(self, ctx: StartContext) -> None:
        """The child is set up and about to exec init."""

    async def post_exec(self, ctx: StartContext) -> None:
        """Init runs."""

    async def stop(self, ctx: StartContext) -> bool:
        """Ask the container to shut down; True if this module took care of it."""
        return False

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        """Init has exited (or the start failed)."""

    async def destroy(self, ctx: StartContext) -> None:
        """The container is removed or wiped."""
