"""The auditor: where every record goes, in order.

1. The journal (hash chain): always, so the history is complete whatever happens next.
2. The subject's pending queue (the original's `<uuid>.log`, `audit_size` MB): when it fits.
3. AUDIT_NOTIFY to the subject's container when it runs and has a service connected.

Capacity (CR 2.9(1)): when a queue gets to `audit_warn_percent` of its capacity, an
`audit-storage-threshold` record is stored and the container notified, once until the queue goes
below the threshold again. When a record does not fit, the policy is *keep in the journal, count,
tell*: the record stays in the journal (never dropped), an `audit-storage-full` record is
journaled once per episode, the container gets AUDIT_NOTIFY with what remains, and as soon as the
queue has room again an `audit-records-not-queued` record names the count and the journal
sequence range the reader missed (readable with `cml-control audit`).

Records whose subject is no known container go to c0's queue (the original's default file
`00000000-0000-0000-0000-000000000000.log`, which is also c0's UUID).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cml_common.messages.audit_pb2 import AuditRecord
from cml_common.messages.c_service_pb2 import CmldToServiceMessage
from cml_common.paths import C0_UUID

from .checkpoints import Checkpointer, Signer
from .journal import Journal, JournalError
from .pull import PullState, Send
from .queue import PendingQueue
from .record import make_record, to_text
from .syncer import Syncer

log = logging.getLogger(__name__)
C2S = CmldToServiceMessage
MIB = 1024 * 1024


@dataclass
class Policy:
    capacity: int  # bytes per queue (device.conf audit_size MB)
    warn_percent: int = 80
    checkpoint_records: int = 100
    checkpoint_seconds: float = 60.0


@dataclass
class _Subject:
    queue: PendingQueue
    pull: PullState
    warned: bool = False
    not_queued: int = 0
    first_missed: int = 0
    last_missed: int = 0
    port: Send | None = None  # the container's service connection for unsolicited messages
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Auditor:
    def __init__(self, directory: Path, policy: Policy, *, signer: Signer | None,
                 known: Callable[[str], bool], running: Callable[[str], bool]) -> None:
        self.dir = directory
        self.policy = policy
        self.known = known
        self.running = running
        self.syncer = Syncer()
        self.journal = Journal(directory, self.syncer.mark)
        self.checkpoints = Checkpointer(self.journal, signer, policy.checkpoint_records, policy.checkpoint_seconds,
                                        self._checkpoint_failed)
        self.subjects: dict[str, _Subject] = {}
        self.changed = asyncio.Event()
        self.listeners: list[Callable[[], None]] = []  # e.g. the forwarder's wake-up
        self.closers: list[Callable[[], Awaitable[None]]] = []  # run after the last checkpoint
        self.stoppers: list[Callable[[], None]] = []  # run before it (sources of records, e.g. the kernel)
        self.write_failures = 0

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.journal.open()
        if self.journal.torn:
            torn = self.journal.torn
            self.log_event("FSA", "GENERIC", "journal-repaired", None,
                           {"torn_bytes": str(len(torn)), "torn_hex": torn[:1024].hex()})
        if self.journal.unreadable:
            self.log_event("FSA", "GENERIC", "journal-damaged", None,
                           {"lines": ",".join(map(str, self.journal.unreadable[:100]))})

    def start(self) -> None:
        self.syncer.start()
        self.checkpoints.start()

    async def close(self) -> None:
        for stop in self.stoppers:
            stop()
        await self.checkpoints.close()
        await self.syncer.close()
        for close in self.closers:
            await close()

    # ------------------------------------------------------------------ storing

    def subject_of(self, uuid: str | None) -> str:
        return uuid if uuid and self.known(uuid) else C0_UUID

    def subject(self, uuid: str) -> _Subject:
        s = self.subjects.get(uuid)
        if s is None:
            q = PendingQueue(self.dir / f"{uuid}.log", self.policy.capacity, self.syncer.mark)
            s = self.subjects[uuid] = _Subject(q, PullState(q))
        return s

    def log_event(self, category: str, evclass: str, event: str, subject: str | None,
                  meta: dict[str, str]) -> None:
        self.store(make_record(category, evclass, event, subject, meta), subject)

    def store(self, record: AuditRecord, uuid: str | None) -> int:
        """Store one record; its journal sequence number (0 when even the journal failed)."""
        where = self.subject_of(uuid)
        try:
            entry = self.journal.append_record(where, record.SerializeToString(deterministic=True))
        except JournalError as e:
            self.write_failures += 1
            log.error("audit record %s NOT stored (%d so far): %s", record.type, self.write_failures, e)
            return 0
        self.checkpoints.record_added()
        s = self.subject(where)
        self._queue(s, where, record, entry.seq)
        self._notify(s, where)
        self.changed.set()
        self.changed = asyncio.Event()
        for wake in self.listeners:
            wake()
        return entry.seq

    def _journal_only(self, where: str, record: AuditRecord) -> None:
        try:
            self.journal.append_record(where, record.SerializeToString(deterministic=True))
            self.checkpoints.record_added()
        except JournalError as e:
            log.error("audit record %s NOT stored: %s", record.type, e)

    def _queue(self, s: _Subject, where: str, record: AuditRecord, seq: int) -> None:
        if s.not_queued:
            gap = make_record("FSA", "GENERIC", "audit-records-not-queued", where, {
                "count": str(s.not_queued), "first_seq": str(s.first_missed), "last_seq": str(s.last_missed)})
            if s.queue.fits(to_text(gap) + to_text(record)):
                s.queue.append(to_text(gap))
                self._journal_only(where, gap)
                log.warning("audit queue %s has room again; %d record(s) were kept in the journal only",
                            where, s.not_queued)
                s.not_queued = 0
        if s.not_queued or not s.queue.append(to_text(record)):
            if s.not_queued == 0:
                s.first_missed = seq
                full = make_record("FSA", "GENERIC", "audit-storage-full", where, {
                    "capacity": str(self.policy.capacity), "remaining": str(s.queue.remaining()),
                    "first_seq": str(seq)})
                self._journal_only(where, full)
                log.error("audit queue %s is full (%d bytes): records are kept in the journal only until "
                          "its reader catches up", where, self.policy.capacity)
                self._send_notify(s, where)
            s.not_queued += 1
            s.last_missed = seq
            return
        self._check_threshold(s, where)

    def _check_threshold(self, s: _Subject, where: str) -> None:
        used = s.queue.size()
        over = used * 100 >= self.policy.warn_percent * self.policy.capacity
        if over and not s.warned:
            s.warned = True
            warn = make_record("FSA", "GENERIC", "audit-storage-threshold", where, {
                "used": str(used), "capacity": str(self.policy.capacity),
                "remaining": str(s.queue.remaining()), "threshold_percent": str(self.policy.warn_percent)})
            if s.queue.fits(to_text(warn)):
                s.queue.append(to_text(warn))
            self._journal_only(where, warn)
            log.warning("audit queue %s reached %d%% of %d bytes", where, self.policy.warn_percent,
                        self.policy.capacity)
            self._send_notify(s, where)
        elif not over:
            s.warned = False

    # ------------------------------------------------------------------ the container's reader

    def attach(self, uuid: str, port: Send) -> None:
        """The container's first service connection, for AUDIT_NOTIFY; queued records announce
        themselves at once."""
        s = self.subject(uuid)
        s.port = port
        if s.queue.size():
            self._send_notify(s, uuid)

    def detach(self, uuid: str) -> None:
        s = self.subjects.get(uuid)
        if s is not None:
            s.port = None
            s.pull.last_ack = ""
            for t in list(s.tasks):
                t.cancel()

    def _notify(self, s: _Subject, where: str) -> None:
        if not s.pull.busy and self.running(where):
            self._send_notify(s, where)

    def _send_notify(self, s: _Subject, where: str) -> None:
        port = s.port
        if port is None:
            return
        body = C2S(code=C2S.AUDIT_NOTIFY, audit_remaining_storage=s.queue.remaining()).SerializeToString()

        async def send() -> None:
            try:
                await port(body)
            except (ConnectionError, OSError) as e:
                log.info("audit: AUDIT_NOTIFY to %s not delivered: %s", where, e)

        task = asyncio.ensure_future(send())
        s.tasks.add(task)
        task.add_done_callback(s.tasks.discard)

    async def on_ack(self, uuid: str, ack: str, reply: Send) -> None:
        s = self.subject(uuid)
        await s.pull.on_ack(ack, reply, lambda: self._check_threshold(s, uuid))

    # ------------------------------------------------------------------ readers

    async def read(self, after: int, limit: int, subject: str | None, wait: float) -> list[str]:
        lines = self.journal.read_after(after, limit, subject)
        deadline = asyncio.get_running_loop().time() + wait
        while not lines and wait > 0:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                break
            lines = self.journal.read_after(after, limit, subject)
        return lines

    def _checkpoint_failed(self, why: str) -> None:
        self.log_event("FSA", "GENERIC", "checkpoint-failed", None, {"reason": why})


def capacity_bytes(audit_size_mb: int) -> int:
    return audit_size_mb * MIB
