"""Secure-element watchdog (inventory §4.4): hardware tokens are checked every `interval`
seconds (every second while one is failing); after 5 failed reconnects scd locks the token and
sends TOKEN_SE_REMOVED with its UUID to the event listener (cmld then stops the container)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cml_common.messages.scd_pb2 import TokenToDaemon

from .tokenmgr import Key, TokenManager

log = logging.getLogger(__name__)
MAX_FAILURES = 5


async def watch(mgr: TokenManager, send: Callable[[TokenToDaemon], Awaitable[bool]], interval: float,
                retry: float = 1.0) -> None:
    failures: dict[Key, int] = {}
    reported: set[Key] = set()
    while True:
        await asyncio.sleep(retry if failures else interval)
        for key, entry in list(mgr.entries.items()):
            if not entry.token.removable:
                continue
            async with entry.lock:
                ok = await asyncio.to_thread(entry.token.present)
            if ok:
                failures.pop(key, None)
                reported.discard(key)
                continue
            n = failures.get(key, 0) + 1
            failures[key] = n
            log.warning("token %s: secure element not answering (%d of %d)", key[1], n, MAX_FAILURES)
            if n >= MAX_FAILURES and key not in reported:
                entry.token.lock()
                reported.add(key)
                sent = await send(TokenToDaemon(code=TokenToDaemon.TOKEN_SE_REMOVED, token_uuid=key[1]))
                log.warning("token %s removed; TOKEN_SE_REMOVED %s", key[1],
                            "sent" if sent else "not sent (no listener)")
