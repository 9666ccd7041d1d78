#!/usr/bin/env python3
"""Soak: does cmld keep what it takes? Many start/stop cycles, with its resources sampled.

Builds the demo busybox GuestOS (scripts/build-guestos.py) into a temporary directory and starts a
real cmld on it. It runs in hosted mode, with no autostart and every directory private to the run
(container_start.py's `Cmld`). Then two phases:

1. `--cycles` (default 1000) start/stop cycles of one container: CONTAINER_START, wait for RUNNING,
   CONTAINER_STOP, wait for STOPPED;
2. `--parallel-cycles` (default 100) cycles of `--parallel` (default 10) containers at once: all
   started together, all RUNNING, all stopped together, all STOPPED. One control connection per
   container, each in its own thread.

After every cycle, with every container STOPPED, it samples cmld's:
- open fds (/proc/PID/fd), RSS (VmRSS), threads;
- children and zombie children;
- and what the containers had on the host: mounts, cgroup directories, loop devices and netns
  bindings. These count only the run's own (paths under the temp dir, the containers' UUIDs),
  because other processes on the machine mount and unmount too.

It prints every figure at the first and last sample, its minimum and maximum, and the slope of a
linear fit per 100 cycles. The fit leaves out the first third of each phase, the warm-up (imports,
the thread pool, the first mkfs). The run fails (exit 1) if a resource grows:
- mounts, cgroups, loop devices, netns bindings, children and zombies must be 0 at every sample;
- open fds and threads must never exceed, in the last third, the maximum of the middle third
  (threads: unless still within the default thread pool's cap, whose workers start lazily);
- RSS must not grow by more than RSS_SLOPE_MAX KiB per 100 cycles, unless the last third's mean
  stays within RSS_NOISE_KB of the middle third's (plus THREAD_RSS_KB for each worker thread the
  last third has beyond the middle's: a new thread's malloc arena and stack).

Everything is removed at the end, also on an error, Ctrl-C or SIGTERM (container_start.py's
cleanup: cmld by PID, leftover mounts and loop devices released, the temp dir removed).

Usage: .venv/bin/python bench/soak.py [--cycles N] [--parallel K] [--parallel-cycles M] [--json FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from benchlib import PACKAGES, REPO, git
from container_start import HOSTED_DEVICE_CONF, Cmld, Controller, log, release_leftovers

from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cmld.linux.loop import loop_backings

C = ControllerToDaemon
D = DaemonToController
S = ContainerState
ZERO = ("mounts", "cgroups", "loops", "netns", "children", "zombies")
BOUNDED = ("fds", "threads")
RSS_SLOPE_MAX = 1024  # KiB per 100 cycles
RSS_NOISE_KB = 1024
# A worker thread started late (threads are judged on their own, against THREAD_CAP) brings its own
# glibc malloc arena and stack: about 1 MiB of RSS at once, a step rather than a trend. It was the
# whole of a smoke run's "growth" on a loaded machine (threads 4 -> 5, RSS +1159 KiB).
THREAD_RSS_KB = 1024
RSS_MIN_CYCLES = 20  # fewer samples: a warm-up step extrapolated to 100 cycles, not a trend
# cmld's threads: the main one, and asyncio's default executor, which starts its workers lazily (as
# concurrent to_thread calls need them) up to min(32, CPUs + 4). Reaching that cap late is no leak.
THREAD_CAP = 1 + min(32, (os.cpu_count() or 1) + 4)


# ---------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    cycle: int
    fds: int
    rss_kb: int
    threads: int
    children: int
    zombies: int
    mounts: int
    cgroups: int
    loops: int
    netns: int


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _children(pid: int) -> tuple[int, int]:
    live = zombies = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:
            if rest[0] == "Z":
                zombies += 1
            else:
                live += 1
    return live, zombies


def _cgroup_dirs(pid: int) -> list[Path]:
    """cmld's own group in each hierarchy, and its parent (v2: cmld sits in a leaf)."""
    dirs: list[Path] = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        names = [ctrls, ctrls.removeprefix("name=")] if ctrls else ["unified", ""]
        for n in names:
            d = Path("/sys/fs/cgroup") / n / path.lstrip("/")
            if d.is_dir():
                dirs += [d, d.parent]
                break
    return dirs


class Sampler:
    def __init__(self, cmld: Cmld, tmp: Path) -> None:
        assert cmld.proc is not None
        self.pid = cmld.proc.pid
        self.tmp = tmp
        self.cgroup_dirs = _cgroup_dirs(self.pid)
        self.uuids: list[str] = []

    def images(self) -> set[tuple[int, int, int]]:
        keys = set()
        for p in (self.tmp / "base").rglob("*.img"):
            st = p.stat()
            keys.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
        return keys

    def sample(self, cycle: int) -> Sample:
        st = _status(self.pid)
        live, zombies = _children(self.pid)
        marks = [str(self.tmp), *self.uuids]
        mounts = sum(1 for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines()
                     if any(m in line for m in marks))
        cgroups = 0
        for d in set(self.cgroup_dirs):
            for u in self.uuids:
                g = d / u
                if g.is_dir():
                    cgroups += 1 + sum(len(sub) for _, sub, _ in os.walk(g))
        images = self.images()
        loops = sum(1 for key in loop_backings().values() if key in images)
        netns_dir = self.tmp / "netns"
        netns = len(list(netns_dir.iterdir())) if netns_dir.is_dir() else 0
        return Sample(cycle, len(os.listdir(f"/proc/{self.pid}/fd")), int(st["VmRSS"].split()[0]),
                      int(st["Threads"]), live, zombies, mounts, cgroups, loops, netns)


# ---------------------------------------------------------------------------- the verdict


@dataclass
class Figure:
    name: str
    first: float
    last: float
    lo: float
    hi: float
    slope_per_100: float
    grows: bool
    why: str = ""


def slope(xs: list[int], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def judge(samples: list[Sample]) -> list[Figure]:
    third = max(1, len(samples) // 3)
    steady = samples[third:]
    middle, last = samples[third:2 * third] or steady, samples[2 * third:] or steady
    figures = []
    for name in ("fds", "rss_kb", "threads", *ZERO):
        ys = [float(getattr(s, name)) for s in samples]
        fit = slope([s.cycle for s in steady], [float(getattr(s, name)) for s in steady]) * 100
        grows, why = False, ""
        if name in ZERO and max(ys) > 0:
            grows, why = True, f"not 0 after a stop (max {max(ys):g})"
        elif name in BOUNDED:
            hi_mid = max(getattr(s, name) for s in middle)
            hi_last = max(getattr(s, name) for s in last)
            if hi_last > hi_mid and (name != "threads" or hi_last > THREAD_CAP):
                grows, why = True, f"last third reaches {hi_last}, middle third {hi_mid}"
        elif name == "rss_kb" and len(samples) < RSS_MIN_CYCLES:
            why = f"not judged: {len(samples)} cycles < {RSS_MIN_CYCLES}"
        elif name == "rss_kb":
            rise = statistics.fmean(s.rss_kb for s in last) - statistics.fmean(s.rss_kb for s in middle)
            new_threads = max(0, max(s.threads for s in last) - max(s.threads for s in middle))
            if fit > RSS_SLOPE_MAX and rise > RSS_NOISE_KB + THREAD_RSS_KB * new_threads:
                grows, why = True, f"{fit:.0f} KiB per 100 cycles, last third {rise:.0f} KiB above the middle"
        figures.append(Figure(name, ys[0], ys[-1], min(ys), max(ys), fit, grows, why))
    return figures


def table(title: str, figures: list[Figure]) -> str:
    head = f"  {'resource':<9} {'first':>9} {'last':>9} {'min':>9} {'max':>9} {'slope/100 cycles':>17}  verdict"
    lines = [title, head]
    for f in figures:
        lines.append(f"  {f.name:<9} {f.first:>9g} {f.last:>9g} {f.lo:>9g} {f.hi:>9g} {f.slope_per_100:>17.2f}  "
                     + (f"GROWS: {f.why}" if f.grows else f.why or "flat"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the phases


@dataclass
class Phase:
    title: str
    samples: list[Sample] = field(default_factory=list)
    cycle_s: list[float] = field(default_factory=list)


def cycle_one(ctl: Controller, uuid: str) -> None:
    ctl.cycle(uuid)


def start_then(ctl: Controller, uuid: str, want: int) -> None:
    cmd = C.CONTAINER_START if want == S.RUNNING else C.CONTAINER_STOP
    reply = ctl.client.request(C(command=cmd, container_uuids=[uuid]))
    ok = D.CONTAINER_START_OK if want == S.RUNNING else D.CONTAINER_STOP_OK
    if reply.response != ok:
        raise RuntimeError(f"{C.Command.Name(cmd)} {uuid}: {D.Response.Name(reply.response)} {reply.error_message}")
    ctl.wait_state(uuid, want, (S.ZOMBIE,) if want == S.STOPPED else (S.STOPPED, S.ZOMBIE))


def soak(tmp: Path, stack: contextlib.ExitStack, cycles: int, parallel: int, parallel_cycles: int) -> list[Phase]:
    log("building the demo GuestOS ...")
    os_dir = tmp / "guestos"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(os_dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"build-guestos.py failed: {p.stderr[-2000:]}")
    base = tmp / "base"
    (base / "operatingsystems").mkdir(parents=True)
    (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    shutil.copy2(os_dir / "busybox-1.conf", base / "operatingsystems" / "busybox-1.conf")
    shutil.copytree(os_dir / "busybox-1", base / "operatingsystems" / "busybox-1")
    cmld = Cmld(tmp)
    stack.callback(cmld.stop)
    cmld.start()
    assert cmld.proc is not None
    log(f"cmld pid {cmld.proc.pid}, temp dir {tmp}")
    sampler = Sampler(cmld, tmp)
    ctls = [Controller(cmld.sock) for _ in range(max(parallel, 1))]
    for c in ctls:
        stack.callback(c.close)
    uuids = [ctls[0].create(f"soak{i}", userns=i % 2 == 0) for i in range(max(parallel, 1))]
    sampler.uuids = uuids
    phases = []

    one = Phase(f"{cycles} start/stop cycles of one container")
    for i in range(cycles):
        t0 = time.monotonic()
        try:
            cycle_one(ctls[0], uuids[0])
        except Exception:
            print("--- cmld log (tail) ---\n" + "\n".join(cmld.log_lines()[-30:]), file=sys.stderr)
            raise
        one.cycle_s.append(time.monotonic() - t0)
        one.samples.append(sampler.sample(i + 1))
        if (i + 1) % 50 == 0 or i + 1 == cycles:
            s = one.samples[-1]
            log(f"one container: cycle {i + 1}/{cycles}: fds {s.fds}, RSS {s.rss_kb} KiB, threads {s.threads}")
    if cycles:
        phases.append(one)

    # cmld disconnects a control connection that sent nothing for 10 minutes (framed_server's
    # idle_timeout): phase 1 uses only the first, so the others are opened anew for phase 2.
    for c in ctls[1:]:
        c.close()
    ctls[1:] = [Controller(cmld.sock) for _ in ctls[1:]]
    for c in ctls[1:]:
        stack.callback(c.close)
    many = Phase(f"{parallel_cycles} cycles of {parallel} containers at once")
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        for i in range(parallel_cycles):
            t0 = time.monotonic()
            for want in (S.RUNNING, S.STOPPED):
                for f in [pool.submit(start_then, c, u, want) for c, u in zip(ctls, uuids, strict=True)]:
                    f.result()
            many.cycle_s.append(time.monotonic() - t0)
            many.samples.append(sampler.sample(i + 1))
            if (i + 1) % 10 == 0 or i + 1 == parallel_cycles:
                s = many.samples[-1]
                log(f"{parallel} containers: cycle {i + 1}/{parallel_cycles}: fds {s.fds}, RSS {s.rss_kb} KiB, "
                    f"threads {s.threads}")
    if parallel_cycles and parallel:
        phases.append(many)
    if not cmld.alive():
        raise RuntimeError("cmld exited during the soak")
    return phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cmld soak: start/stop cycles with its resources sampled")
    ap.add_argument("--cycles", type=int, default=1000, help="cycles of one container (default %(default)s)")
    ap.add_argument("--parallel", type=int, default=10, help="containers of the second phase (default %(default)s)")
    ap.add_argument("--parallel-cycles", type=int, default=100,
                    help="cycles of the second phase (default %(default)s)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write every sample and figure as JSON")
    args = ap.parse_args(argv)
    if min(args.cycles, args.parallel, args.parallel_cycles) < 0:
        ap.error("counts must not be negative")
    if os.geteuid() != 0:
        print("soak.py needs root (cmld creates namespaces, cgroups, mounts)", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanups

    signal.signal(signal.SIGTERM, on_term)
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    src_dirty = bool(git("status", "--porcelain", "--", *PACKAGES))
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="cml-soak-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        stack.callback(release_leftovers, tmp)
        inner = stack.enter_context(contextlib.ExitStack())
        phases = soak(tmp, inner, args.cycles, args.parallel, args.parallel_cycles)
        inner.close()
    elapsed = time.monotonic() - t0

    print(f"cmld soak  {when.isoformat()}  commit {commit}{' (src modified)' if src_dirty else ''}  "
          f"{os.cpu_count()} CPUs  Python {platform.python_version()}  kernel {platform.release()}  {elapsed:.0f} s")
    verdicts = []
    for ph in phases:
        figures = judge(ph.samples)
        verdicts += figures
        med = statistics.median(ph.cycle_s)
        print(table(f"{ph.title} (cycle: median {med:.2f} s, max {max(ph.cycle_s):.2f} s)", figures))
    grown = [f.name for f in verdicts if f.grows]
    print("verdict: " + (f"GROWS ({', '.join(grown)})" if grown else "flat"))
    if args.json:
        doc = {"date": when.isoformat(), "commit": commit, "src_modified": src_dirty, "elapsed_s": round(elapsed, 1),
               "phases": [{"title": ph.title, "cycle_s": ph.cycle_s, "samples": [asdict(s) for s in ph.samples],
                           "figures": [asdict(f) for f in judge(ph.samples)]} for ph in phases]}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if grown else 0


if __name__ == "__main__":
    sys.exit(main())
