"""Every child of cmld is reaped, also the ones it never started.

cmld is a child subreaper, so that the container inits the exec'd launcher forks become its
children. The price: any process whose parent dies below cmld is re-parented to cmld. The
in-container half of an exec helper that was killed (a `run` client gone, a `halt` that timed
out), or the user-namespace helper of a launcher that died, has nobody waiting for it. A zombie
left in a container's PID namespace keeps that namespace's init from finishing its exit, because
the kernel waits for every task of the namespace to be reaped. The container then stays in
SHUTDOWN for good, and its cgroups and netns binding with it.

Children with an owner are left to it. These are asyncio's child watcher threads, `subprocess.run`
in worker threads, and `InitWatcher` for container inits (through a pidfd; it *claims* its pid
here). The reaper takes the rest, by rules that never race an owner:

- a child in another PID namespace that is not the init of one. cmld never forks into a
  container, so this is the orphan of an exec helper. It is SIGKILLed with its process group (a
  session dies with its helper) and reaped at once;
- any other zombie that nobody claims: reaped once it has been a zombie for `GRACE` seconds.
  Every owner reaps within milliseconds of the exit. A live unclaimed init is never touched:
  between the launcher's exit and the InitWatcher it is briefly nobody's.

It sweeps on SIGCHLD (coalesced), and on a timer while zombies wait out their grace. Children
are found by scanning /proc for our pid as parent (the kernel may lack /proc/<pid>/task/*/children).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from cmld import linux

log = logging.getLogger(__name__)
GRACE = 3.0  # s a zombie nobody claims may stay before the reaper takes it
MIN_INTERVAL = 0.02  # s between two sweeps (a burst of SIGCHLD is one sweep)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw.rsplit(b")", 1)[-1].split()
    try:
        return rest[0].decode(), int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _nspids(pid: int) -> list[int]:
    """The pid in each PID namespace from ours inward ([] if gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


class OrphanReaper:
    def __init__(self) -> None:
        self.claimed: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._zombie_since: dict[tuple[int, int], float] = {}
        self.reaped = 0  # orphans reaped so far (diagnostics, tests)
        self.killed = 0  # live orphans killed so far

    # ------------------------------------------------------------------ owners

    def claim(self, pid: int) -> None:
        """`pid` has an owner that reaps it (a container init's watcher)."""
        self.claimed.add(pid)

    def release(self, pid: int) -> None:
        self.claimed.discard(pid)
        self.poke()  # an owner that let go without reaping leaves the pid to us

    # ------------------------------------------------------------------ life

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            return
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.poke)
        self.poke()

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_signal_handler(signal.SIGCHLD)
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._loop = None

    def poke(self) -> None:
        """Something changed (SIGCHLD, a release): sweep soon, once for a burst."""
        loop = self._loop
        if loop is None or (self._pending is not None and self._pending.when() <= loop.time() + MIN_INTERVAL):
            return
        if self._pending is not None:
            self._pending.cancel()
        delay = max(0.0, self._last + MIN_INTERVAL - time.monotonic())
        self._pending = loop.call_later(delay, self._sweep_now)

    def _sweep_now(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        try:
            wait = self.sweep()
        except Exception:
            log.exception("reaping orphaned children")
            wait = GRACE
        if wait is not None and self._loop is not None:
            self._pending = self._loop.call_later(wait, self._sweep_now)

    # ------------------------------------------------------------------ the sweep

    def children(self) -> list[tuple[int, str, int]]:
        """(pid, state, starttime) of every child of this process."""
        me = os.getpid()
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            st = _stat(int(name))
            if st is not None and st[1] == me:
                found.append((int(name), st[0], st[2]))
        return found

    def sweep(self) -> float | None:
        """Reap or kill what the rules say; returns when to look again (None: on SIGCHLD only)."""
        now = time.monotonic()
        seen: set[tuple[int, int]] = set()
        soonest: float | None = None
        for pid, state, start in self.children():
            if pid in self.claimed:
                continue
            ns = _nspids(pid)
            if not ns:
                continue
            foreign, ns_init = len(ns) > 1, ns[-1] == 1
            if foreign and not ns_init:
                self._take(pid, start, kill=state != "Z", why=f"orphan in a container's PID namespace "
                                                              f"(pid {ns[-1]} there)")
                continue
            if state != "Z":
                continue
            key = (pid, start)
            seen.add(key)
            since = self._zombie_since.setdefault(key, now)
            left = since + GRACE - now
            if left <= 0:
                self._take(pid, start, kill=False, why="zombie nobody reaped")
            else:
                soonest = left if soonest is None else min(soonest, left)
        for key in list(self._zombie_since):
            if key not in seen:
                del self._zombie_since[key]
        return soonest

    def _take(self, pid: int, start: int, *, kill: bool, why: str) -> None:
        """SIGKILL (if alive) and reap one child, through a pidfd checked to be that very process."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            st = _stat(pid)
            if st is None or st[2] != start or st[1] != os.getpid():
                return
            if kill:
                self._kill_group(pid)
                with contextlib.suppress(OSError):
                    linux.pidfd_send_signal(fd, signal.SIGKILL)
                self.killed += 1
            # A SIGKILLed process needs a moment to become a zombie; its SIGCHLD brings us back.
            res = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        finally:
            os.close(fd)
        if res is not None:
            self.reaped += 1
            self._zombie_since.pop((pid, start), None)
            how = f"exit {res.si_status}" if res.si_code == os.CLD_EXITED else f"signal {res.si_status}"
            log.info("reaped pid %d (%s, %s)", pid, why, how)
        elif kill:
            log.info("killed pid %d (%s)", pid, why)


    @staticmethod
    def _kill_group(pid: int) -> None:
        """The rest of an orphan's process group: the exec helper's session (the command a session
        runs without a PTY) dies with it. Never cmld's own group."""
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid > 1 and pgid != os.getpgid(0):
                os.killpg(pgid, signal.SIGKILL)


REAPER = OrphanReaper()
