"""Seccomp denials, summarised: the first refusal of each syscall in a container is recorded at
once (`FSA.CMLD.CONTAINER_ISOLATION.seccomp-denied`), further ones are counted and recorded as one
`seccomp-denied-summary` per minute, so a container hammering a refused syscall cannot flood the
audit store, yet no refusal goes uncounted."""

from __future__ import annotations

import asyncio
from collections import Counter

from . import events

NAMES = {133: "mknod", 259: "mknodat", 227: "clock_settime", 305: "clock_adjtime", 159: "adjtimex",
         164: "settimeofday", 169: "reboot"}
WINDOW = 60.0


class DenialSummary:
    def __init__(self, uuid: str, name: str, window: float = WINDOW) -> None:
        self.uuid = uuid
        self.name = name
        self.window = window
        self.seen: set[int] = set()
        self.counts: Counter[int] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, nr: int) -> None:
        if nr not in self.seen:
            self.seen.add(nr)
            events.emit("FSA", "CONTAINER_ISOLATION", "seccomp-denied", self.uuid, with_client=False,
                        name=self.name, syscall=NAMES.get(nr, str(nr)), nr=str(nr))
        else:
            self.counts[nr] += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> None:
        self._timer = None
        self.seen.clear()
        if self.counts:
            summary = {NAMES.get(nr, str(nr)): str(n) for nr, n in sorted(self.counts.items())}
            events.emit("FSA", "CONTAINER_ISOLATION", "seccomp-denied-summary", self.uuid, with_client=False,
                        name=self.name, window_s=f"{self.window:g}", **summary)
            self.counts.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()


_SUMMARIES: dict[str, DenialSummary] = {}


def summary_for(uuid: str, name: str) -> DenialSummary:
    """One summary per container, shared by its init's supervisor and those of its exec sessions."""
    s = _SUMMARIES.get(uuid)
    if s is None:
        s = _SUMMARIES[uuid] = DenialSummary(uuid, name)
    return s
