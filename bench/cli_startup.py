#!/usr/bin/env python3
"""CLI start-up benchmark: what one `cml-control` / `control` call costs a script that polls.

Scripts written for the original client run `control state <c>` in loops, so the start-up of a
client process is the price of every poll. This script starts a real cmld (hosted mode, in a
temporary directory), creates a few containers, and measures, one process of each kind in turn
(so load and drift on the machine hit all alike):

- `cml-control list`, `cml-control state <c>`, `control list`, `control state <c>`: a whole
  process each (spawn, interpreter, imports, connect, requests, print, exit);
- references from the same run: `python -c pass` with the same venv interpreter (the floor of any
  Python console script), `/bin/true` (the spawn floor), and the import floor: `python -c "import
  cml_common.messages.control_pb2"`, the protobuf runtime plus the control messages, which is what
  every call paid before the CLI got its own wire codec.

The target is a median of at most 45 ms for the CLI rows; the table says whether it is met.

With root it also measures a container start/stop cycle on the demo busybox GuestOS: as a script
does it with `--wait` (`cml-control start demo --wait`, then `cml-control stop demo --wait`, two
processes) against the same cycle on one socket connection in this process (START, poll until
RUNNING, STOP, poll until STOPPED, with the CLI's own polling code), interleaved.

Bytecode: an installed package has compiled modules; a checkout run with PYTHONDONTWRITEBYTECODE
(as here) has none and would compile the CLI on every call. The script compiles `cml_control`
and `cml_common` first (into their `__pycache__`, ignored by git) and says so.

Everything it starts is stopped by PID, also on errors; the temporary directory is removed.

Usage: .venv/bin/python bench/cli_startup.py [--quick] [--runs N] [--cycles N] [--json FILE]
"""

from __future__ import annotations

import argparse
import compileall
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
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from benchlib import PACKAGES, REPO, git
from container_start import Cmld, release_leftovers

from cml_control import wire
from cml_control.session import Session
from cml_control.waiting import wait_for_state

BIN = Path(sys.executable).parent
HOSTED_DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"
TARGET_MS = 45.0
FLOOR_IMPORT = "import cml_common.messages.control_pb2"


@dataclass
class Row:
    name: str
    n: int
    median_ms: float
    p90_ms: float
    reference: str = ""
    ref_median_ms: float | None = None
    ratio: float | None = None
    is_reference: bool = False
    cpu_median_ms: float | None = None  # user + system CPU time of the process: less sensitive to load

    @classmethod
    def of(cls, name: str, durations_ns: list[int], *, is_reference: bool = False,
           cpu_ns: list[int] | None = None) -> Row:
        ms = [d / 1e6 for d in durations_ns]
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
        cpu = statistics.median(c / 1e6 for c in cpu_ns) if cpu_ns else None
        return cls(name, len(ms), statistics.median(ms), p90, is_reference=is_reference, cpu_median_ms=cpu)

    def against(self, ref_name: str, ref: Row) -> Row:
        self.reference, self.ref_median_ms = ref_name, ref.median_ms
        self.ratio = self.median_ms / ref.median_ms if ref.median_ms else None
        return self


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def compile_packages() -> None:
    for pkg in ("cml_control", "cml_common"):
        if not compileall.compile_dir(str(REPO / pkg), quiet=1):
            raise RuntimeError(f"compiling {pkg} failed")


def spawn_each(cmds: dict[str, list[str]], n: int, warmup: int,
               errors: Path) -> dict[str, tuple[list[int], list[int]]]:
    """Each command n times, interleaved, the order rotating every round: (wall times, CPU times
    (user + system, from wait4)) in ns."""
    def once(cmd: list[str]) -> tuple[int, int]:
        with errors.open("wb") as err:
            t0 = time.perf_counter_ns()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(p.pid, 0)
            took = time.perf_counter_ns() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {errors.read_text(errors='replace')}")
        return took, int((usage.ru_utime + usage.ru_stime) * 1e9)

    keys = list(cmds)
    for _ in range(warmup):
        for k in keys:
            once(cmds[k])
    got: dict[str, tuple[list[int], list[int]]] = {k: ([], []) for k in keys}
    for i in range(n):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            wall, cpu = once(cmds[k])
            got[k][0].append(wall)
            got[k][1].append(cpu)
    return got


def check_output(cmd: list[str], want: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if p.returncode != 0 or want not in p.stdout:
        raise RuntimeError(f"{' '.join(cmd)}: rc {p.returncode}: {p.stdout[-500:]} {p.stderr[-500:]}")


# ---------------------------------------------------------------------------- cold start


def cold_start(sock: Path, runs: int, tmp: Path) -> list[Row]:
    s = str(sock)
    cmds = {
        "true": ["/bin/true"],
        "pass": [sys.executable, "-c", "pass"],
        "floor": [sys.executable, "-c", FLOOR_IMPORT],
        "list": [str(BIN / "cml-control"), "-s", s, "list"],
        "state": [str(BIN / "cml-control"), "-s", s, "state", "bench-0"],
        "control list": [str(BIN / "control"), "-s", s, "list"],
        "control state": [str(BIN / "control"), "-s", s, "state", "bench-0"],
    }
    check_output(cmds["list"], 'name: "bench-0"')
    check_output(cmds["control state"], 'name: "bench-0"')
    got = spawn_each(cmds, runs, max(1, min(3, runs // 10)), tmp / "spawn.stderr")

    def row(key: str, label: str, *, is_reference: bool = False) -> Row:
        return Row.of(label, got[key][0], cpu_ns=got[key][1], is_reference=is_reference)

    true_row = row("true", "/bin/true (spawn floor)", is_reference=True)
    pass_row = row("pass", "python -c pass (interpreter floor)", is_reference=True).against("/bin/true", true_row)
    floor_row = row("floor", "import floor: protobuf + control_pb2", is_reference=True).against(
        "python -c pass", pass_row)
    rows = [row(key, label).against("python -c pass", pass_row) for key, label in (
        ("list", "cml-control list"), ("state", "cml-control state <c>"), ("control list", "control list"),
        ("control state", "control state <c>"))]
    return [*rows, pass_row, floor_row, true_row]


# ---------------------------------------------------------------------------- start/stop cycle


def cycle_processes(sock: Path) -> tuple[int, int]:
    """(start, stop) durations in ns, each a `cml-control ... --wait` process."""
    out = []
    for verb in ("start", "stop"):
        t0 = time.perf_counter_ns()
        p = subprocess.run([str(BIN / "cml-control"), "-s", str(sock), verb, "demo", "--wait"],
                           capture_output=True, text=True, check=False, timeout=120)
        out.append(time.perf_counter_ns() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"cml-control {verb} demo --wait: rc {p.returncode}: {p.stdout} {p.stderr}")
    return out[0], out[1]


def cycle_connection(session: Session, uuid: str) -> tuple[int, int]:
    """The same cycle on one open connection: START, poll to RUNNING, STOP, poll to STOPPED."""
    out = []
    for command, want in (("CONTAINER_START", wire.STATE["RUNNING"]), ("CONTAINER_STOP", wire.STATE["STOPPED"])):
        t0 = time.perf_counter_ns()
        reply = session.request(command, container_uuids=[uuid], container_start_params={})
        if reply.response not in (wire.R["CONTAINER_START_OK"], wire.R["CONTAINER_STOP_OK"]):
            raise RuntimeError(f"{command}: {reply.response_name}")
        outcome, state = wait_for_state(session, uuid, want, 120)
        out.append(time.perf_counter_ns() - t0)
        if outcome != "reached":
            raise RuntimeError(f"{command}: {outcome}, state {state}")
    return out[0], out[1]


def start_stop(tmp: Path, cmld: Cmld, cycles: int) -> list[Row]:
    conf = tmp / "demo.conf"
    conf.write_text('name: "demo"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n'
                    "ram_limit: 128\n")
    p = subprocess.run([str(BIN / "cml-control"), "-s", str(cmld.sock), "create", str(conf)], capture_output=True,
                       text=True, check=False, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"create demo: {p.stdout} {p.stderr}")
    uuid = p.stdout.split('container_uuids: "', 1)[1].split('"', 1)[0]
    session = Session(str(cmld.sock), 120)
    try:
        log("warm-up cycle (the first start formats the container's data image) ...")
        cycle_connection(session, uuid)
        procs: list[tuple[int, int]] = []
        conns: list[tuple[int, int]] = []
        for i in range(cycles):
            log(f"cycle {i + 1}/{cycles} ...")
            if i % 2 == 0:
                procs.append(cycle_processes(cmld.sock))
                conns.append(cycle_connection(session, uuid))
            else:
                conns.append(cycle_connection(session, uuid))
                procs.append(cycle_processes(cmld.sock))
    finally:
        session.close()
    rows = []
    for label, idx in (("start -> RUNNING", 0), ("stop -> STOPPED", 1)):
        ref = Row.of(f"{label}, one connection", [c[idx] for c in conns], is_reference=True)
        rows += [Row.of(f"{label}, cml-control --wait", [c[idx] for c in procs]).against("one connection", ref), ref]
    ref = Row.of("cycle, one connection", [a + b for a, b in conns], is_reference=True)
    rows += [Row.of("cycle, 2 cml-control --wait processes", [a + b for a, b in procs]).against(
        "one connection", ref), ref]
    return rows


# ---------------------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    cols = ("measurement", "n", "median", "p90", "CPU", "reference", "ref median", "ratio")
    cells = [list(cols)]
    for r in rows:
        cells.append([("  ref: " if r.is_reference else "") + r.name, str(r.n), f"{r.median_ms:.2f} ms",
                      f"{r.p90_ms:.2f} ms", "-" if r.cpu_median_ms is None else f"{r.cpu_median_ms:.1f} ms",
                      r.reference or "-", "-" if r.ref_median_ms is None else f"{r.ref_median_ms:.2f} ms",
                      "-" if r.ratio is None else f"{r.ratio:.2f}x"])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(v.rjust(widths[i]) if i in (1, 2, 3, 4, 6, 7) else v.ljust(widths[i])
                               for i, v in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cml-control / control start-up, and start/stop cycles")
    ap.add_argument("--quick", action="store_true", help="small counts, for the smoke test")
    ap.add_argument("--runs", type=int, help="processes of each kind (default 40, quick 5)")
    ap.add_argument("--cycles", type=int, help="start/stop cycles of each kind (default 6, quick 1; root only)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    runs = args.runs or (5 if args.quick else 40)
    cycles = args.cycles or (1 if args.quick else 6)
    if runs < 2 or cycles < 1:
        ap.error("--runs must be at least 2 and --cycles at least 1")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop cmld

    signal.signal(signal.SIGTERM, on_term)
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", *PACKAGES))
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    notes: list[str] = []
    compile_packages()
    notes.append("bytecode of cml_control and cml_common compiled first (as an installed package has it)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cml-cli-bench-") as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        stack.callback(release_leftovers, tmp)
        log(f"temp dir {tmp}")
        base = tmp / "base"
        (base / "operatingsystems").mkdir(parents=True)
        (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
        root = os.geteuid() == 0
        if root:
            subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(tmp / "os")], check=True,
                           capture_output=True, timeout=120)
            shutil.copy2(tmp / "os" / "busybox-1.conf", base / "operatingsystems" / "busybox-1.conf")
            shutil.copytree(tmp / "os" / "busybox-1", base / "operatingsystems" / "busybox-1")
        cmld = Cmld(tmp)
        stack.callback(cmld.stop)
        cmld.start()
        assert cmld.proc is not None
        log(f"cmld pid {cmld.proc.pid}")
        for i in range(3):
            conf = tmp / f"bench-{i}.conf"
            conf.write_text(f'name: "bench-{i}"\nguest_os: "busybox"\ncolor: 0\n')
            check_output([str(BIN / "cml-control"), "-s", str(cmld.sock), "create", str(conf)], f'"bench-{i}"')
        log(f"cold start: {runs} processes of each kind, interleaved ...")
        rows = cold_start(cmld.sock, runs, tmp)
        if root:
            rows += start_stop(tmp, cmld, cycles)
        else:
            notes.append("start/stop cycles skipped: they need root (namespaces, cgroups, mounts)")
        if not cmld.alive():
            raise RuntimeError("cmld exited during the benchmark")
    elapsed = time.monotonic() - t0
    load = os.getloadavg()[0]

    print(f"CLI start-up benchmark  {when.isoformat()}  commit {commit}{' (src modified)' if dirty else ''}  "
          f"{os.cpu_count()} CPUs  Python {platform.python_version()}  {runs} runs, {cycles} cycles, "
          f"{elapsed:.1f} s, load average {load:.2f}")
    print(table(rows))
    floor = next(r for r in rows if r.name.startswith("import floor"))
    for r in rows[:4]:
        verdict = "met" if r.median_ms <= TARGET_MS else "NOT met"
        print(f"target {r.name}: median {r.median_ms:.1f} ms <= {TARGET_MS:.0f} ms: {verdict}; "
              f"{r.median_ms / floor.median_ms:.2f}x the import floor ({floor.median_ms:.1f} ms)")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": when.isoformat(), "commit": commit, "src_modified": dirty, "cpus": os.cpu_count(),
            "python": platform.python_version(), "runs": runs, "cycles": cycles, "notes": notes, "load": load,
            "target_ms": TARGET_MS, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
