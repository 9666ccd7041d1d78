"""Periodic checkpoints: the device key signs the journal's head (CR 3.9).

A checkpoint is due after `every_records` new records, or `every_seconds` after the first record
it does not cover yet. The signature comes from scd (CRYPTO_SIGN_DEVICE), which signs with the
TPM's device key when tpm_enabled; a failed signature is recorded (`checkpoint-failed`) and tried
again at the next period, so unsigned stretches are visible, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cml_common.auditlog.seal import statement

from .journal import Journal, JournalError

log = logging.getLogger(__name__)
Signer = Callable[[bytes], Awaitable[tuple[bytes, bytes]]]  # data -> (signature, signer cert PEM)


class Checkpointer:
    def __init__(self, journal: Journal, signer: Signer | None, every_records: int, every_seconds: float,
                 on_failure: Callable[[str], None]) -> None:
        self.journal = journal
        self.signer = signer
        self.every_records = max(1, every_records)
        self.every_seconds = max(0.1, every_seconds)
        self.on_failure = on_failure
        self.pending = 0
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self.last_error = ""

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def record_added(self) -> None:
        self.pending += 1
        if self.pending >= self.every_records:
            self._due.set()

    async def _run(self) -> None:
        # Ended by a flag, not by cancel(): asyncio.wait_for in 3.11 can swallow a cancellation
        # that arrives together with the event (bpo-42130), which would leave this loop running.
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.every_seconds)
            self._due.clear()
            if self.pending and not self._closing:
                await self.checkpoint()

    async def checkpoint(self) -> bool:
        """Sign the current head now; True when a checkpoint was written."""
        if self.signer is None:
            return False
        async with self._lock:
            covers, covers_hash, when = self.journal.checkpoint_statement_args()
            if covers == 0:
                return False
            try:
                sig, cert = await self.signer(statement(covers, covers_hash, when))
            except Exception as err:  # any signer failure is recorded; cmld goes on
                why = str(err) or type(err).__name__
                if why != self.last_error:
                    log.error("audit checkpoint not signed: %s", why)
                    self.last_error = why
                    self.on_failure(why)
                return False
            try:
                e = self.journal.append_checkpoint(covers, covers_hash, when, sig, cert.decode())
            except JournalError as err:
                log.error("audit checkpoint not written: %s", err)
                return False
            if e is None:
                self._due.set()  # records came in while signing: sign the new head
                return False
            self.pending = 0
            self.last_error = ""
            return True

    async def close(self) -> None:
        """The last checkpoint: a journal of a cmld that stopped cleanly ends sealed."""
        self._closing = True
        self._due.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.pending:
            await self.checkpoint()
