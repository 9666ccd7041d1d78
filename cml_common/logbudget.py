"""How much one source may write to a daemon's log: token buckets per kind of message.

A container decides how often cmld has something to say about it. Every refused mknod, every
malformed frame on its service socket and every exec session is a log line. Unbounded, that is
a way to fill the disk under /var/log and to slow the daemon, since writing is work in the event
loop. Each source (a container, a control connection) gets one `LogBudget`. Each kind of message
gets a bucket of `burst` lines that refills at `rate` lines per second. A line over the budget is
not written but counted. The count comes out as one summary line per kind: before the next line of
that kind that is allowed again, or `SUMMARY_AFTER` seconds after the suppression began, or when
the source goes away (`flush`).

    container web: 1980 'mknod' log lines suppressed in 12.4 s (limit 0.5/s, burst 20)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("cml.logbudget")
RATE = 0.5  # lines per second and kind, once the burst is spent
BURST = 20  # lines a kind may write at once
SUMMARY_AFTER = 10.0  # s after the first suppressed line: the summary, even if nothing follows


@dataclass
class _Bucket:
    tokens: float
    last: float
    suppressed: int = 0
    since: float = 0.0


class LogBudget:
    def __init__(self, source: str, *, rate: float = RATE, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.suppressed_total = 0

    def allow(self, kind: str) -> bool:
        """True if a line of `kind` may be written now (it is counted); False if it must be dropped."""
        now = self.clock()
        b = self._buckets.get(kind)
        if b is None:
            b = self._buckets[kind] = _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.last) * self.rate)
        b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            if b.suppressed:
                self._summary(kind, b, now)
            return True
        if not b.suppressed:
            b.since = now
        b.suppressed += 1
        self.suppressed_total += 1
        self._schedule_flush()
        return False

    def flush(self) -> None:
        """A summary line for every kind with suppressed lines (also when the source goes away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock()
        for kind, b in self._buckets.items():
            if b.suppressed:
                self._summary(kind, b, now)

    def _summary(self, kind: str, b: _Bucket, now: float) -> None:
        log.warning("%s: %d '%s' log line(s) suppressed in %.1f s (limit %g/s, burst %d)", self.source,
                    b.suppressed, kind, now - b.since, self.rate, self.burst)
        b.suppressed = 0

    def _schedule_flush(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a thread, a tool): the summary comes with the next allowed line or flush
        self._timer = loop.call_later(SUMMARY_AFTER, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()
