"""Run as a script by test_daemon_robustness: a child subreaper with cmld's orphan reaper, and the
orphans it must and must not take. Prints one JSON object with what it saw.

    python reaper_probe.py [--foreign]

- an orphan in our PID namespace (`sh -c 'sleep 0.3 & exit 0'`: the sleep is re-parented to us):
  reaped once it has been a zombie for the grace time, and not before;
- a claimed child that exits: left alone (its owner reaps it);
- a child run by `subprocess.run` in a thread: its owner gets its real exit status;
- with --foreign (root): a process in another PID namespace whose parent (nsenter) is killed:
  the reaper kills and reaps it at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import cmld.runtime.reaper as reaper_mod
from cmld import linux
from cmld.runtime.reaper import OrphanReaper


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def children() -> list[int]:
    return [pid for pid, _, _ in OrphanReaper().children()]


async def main(foreign: bool) -> dict[str, object]:
    reaper_mod.GRACE = 1.0
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    loop = asyncio.get_running_loop()
    reaper = OrphanReaper()
    reaper.start(loop)
    out: dict[str, object] = {}

    # An orphan of our own namespace.
    before = set(children())
    subprocess.run(["sh", "-c", "sleep 0.3 & exit 0"], check=True)
    orphan = next(iter(set(children()) - before))
    await asyncio.sleep(0.3 + 0.5)
    out["orphan_zombie_in_grace"] = zombie(orphan)
    await asyncio.sleep(1.5)
    out["orphan_reaped_after_grace"] = not exists(orphan)

    # A claimed child stays a zombie until its owner reaps it.
    owned = subprocess.Popen(["true"])
    reaper.claim(owned.pid)
    await asyncio.sleep(2.5)
    out["claimed_left_alone"] = zombie(owned.pid)
    reaper.release(owned.pid)
    owned.wait()

    # subprocess.run in a thread keeps its exit status.
    res = await asyncio.to_thread(subprocess.run, ["sh", "-c", "sleep 0.2; exit 7"], check=False)
    out["owner_status"] = res.returncode

    if foreign:
        init = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sleep", "60"],
                                stdout=subprocess.DEVNULL)
        try:
            ns_init = await _child_of(init.pid)
            helper = subprocess.Popen(["nsenter", "-t", str(ns_init), "-p", "sleep", "61"], stdout=subprocess.DEVNULL)
            inner = await _child_of(helper.pid)
            out["foreign_found"] = inner != 0
            t0 = time.monotonic()
            os.kill(helper.pid, signal.SIGKILL)
            helper.wait()
            while exists(inner) and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            out["foreign_gone_s"] = round(time.monotonic() - t0, 3)
            out["foreign_gone"] = not exists(inner)
            out["killed"] = reaper.killed
        finally:
            init.kill()
            init.wait()
    # What killing the namespace's init orphaned to us (its own child) is the reaper's after the
    # grace. That init may take seconds to become a zombie at all (the kernel first waits for
    # the rest of its namespace), so wait until we have no child left, then nothing may be a
    # zombie: a zombie at the end is one the reaper did not take within the grace.
    deadline = time.monotonic() + reaper_mod.GRACE + 10
    while children() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    out["reaped"] = reaper.reaped
    out["zombies_left"] = [p for p in children() if zombie(p)]
    reaper.stop()
    return out


async def _child_of(parent: int) -> int:
    """The first child of `parent` to appear (0 if none within 4 s)."""
    for _ in range(200):
        found = [p for p in (int(x) for x in os.listdir("/proc") if x.isdigit()) if _ppid(p) == parent]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    return 0


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main("--foreign" in sys.argv))))
