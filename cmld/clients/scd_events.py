"""cmld as scd's event listener, kept registered across scd restarts.

scd sends TOKEN_SE_REMOVED with a token's UUID (a container's UUID) when a hardware token stopped
answering (its watchdog, inventory §4.4); the original cmld then stops that container. The
listener connection is the one scd connection that lives as long as cmld: when scd exits (for
any reason) and comes back, cmld registers again, as the original's unit supervision reconnects
on the unit's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cml_common.messages.scd_pb2 import TokenToDaemon
from cmld.clients.scd import ScdClient, ScdError

log = logging.getLogger(__name__)
RETRY = 0.5  # s between attempts while scd is away


class ScdEventListener:
    def __init__(self, scd: ScdClient, on_token_removed: Callable[[str], Awaitable[None]]) -> None:
        self.scd = scd
        self.on_token_removed = on_token_removed
        self.registrations = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        lost_logged = False
        while True:
            try:
                async with self.scd.events() as queue:
                    self.registrations += 1
                    log.info("registered as scd's event listener%s",
                             f" again (registration {self.registrations})" if self.registrations > 1 else "")
                    lost_logged = False
                    await self._serve(queue)
                log.warning("scd closed the event listener connection: registering again once it is back")
            except (ScdError, OSError) as e:
                if not lost_logged:
                    log.warning("scd event listener: %s; retrying", e)
                    lost_logged = True
            await asyncio.sleep(RETRY)

    async def _serve(self, queue: asyncio.Queue[TokenToDaemon | None]) -> None:
        while (event := await queue.get()) is not None:
            if event.code == TokenToDaemon.TOKEN_SE_REMOVED and event.token_uuid:
                log.warning("scd: token %s removed: stopping its container", event.token_uuid)
                try:
                    await self.on_token_removed(event.token_uuid)
                except Exception:  # the listener must survive a failed stop
                    log.exception("stopping the container of removed token %s failed", event.token_uuid)
            else:
                log.warning("scd event ignored: %s", TokenToDaemon.Code.Name(event.code))
