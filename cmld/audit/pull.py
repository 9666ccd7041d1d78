"""The record pull with SHA-512 ACKs over a container's service channel (inventory §2.8), so an
audit reader written for the original works unchanged:

1. after a record is stored for a running container, cmld sends AUDIT_NOTIFY (remaining bytes);
2. the reader answers AUDIT_ACK with the hash of the last record it got (128 zeros at first);
3. if that equals the hash of the record cmld sent last (hex, any case), that record leaves the
   queue; then cmld sends the next one as AUDIT_RECORD and remembers SHA-512 over the exact
   packed CmldToServiceMessage it sent, or AUDIT_COMPLETE when the queue is empty.

An ACK that does not match makes cmld send the oldest record again (at-least-once delivery).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

from cml_common.framing import serialize
from cml_common.messages.c_service_pb2 import CmldToServiceMessage

from .queue import PendingQueue
from .record import from_text

log = logging.getLogger(__name__)
C2S = CmldToServiceMessage
Send = Callable[[bytes], Awaitable[None]]
HASH_HEX = 128


def ack_matches(expected: str, ack: str) -> bool:
    return len(expected) == HASH_HEX and len(ack) == HASH_HEX and expected.lower() == ack.lower()


class PullState:
    """One subject's delivery state; `busy` keeps a second ACK that arrives while one is being
    answered from sending the same record twice (the original's processing_ack)."""

    def __init__(self, queue: PendingQueue) -> None:
        self.queue = queue
        self.last_ack = ""
        self.busy = False

    async def on_ack(self, ack: str, reply: Send, on_popped: Callable[[], None]) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            if ack_matches(self.last_ack, ack):
                self.queue.pop_first()
                self.last_ack = ""
                on_popped()
            elif self.last_ack:
                log.warning("audit ACK does not match the last record sent; sending the oldest again")
            text = self.queue.first()
            if text is None:
                self.last_ack = ""
                await reply(serialize(C2S(code=C2S.AUDIT_COMPLETE)))
                return
            packed = serialize(C2S(code=C2S.AUDIT_RECORD, audit_record=from_text(text)))
            previous, self.last_ack = self.last_ack, hashlib.sha512(packed).hexdigest()
            try:
                await reply(packed)
            except (ConnectionError, OSError):
                self.last_ack = previous
                raise
        finally:
            self.busy = False
