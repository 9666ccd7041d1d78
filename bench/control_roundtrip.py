#!/usr/bin/env python3
"""Control-socket round-trip benchmark for cmld, measured against reference floors.

Starts a real cmld (hosted mode, unsigned configs, no TPM) in a temporary directory, creates N
containers over the socket with CREATE_CONTAINER, then measures:

1. LIST_CONTAINERS round-trips on one connection,
2. GET_CONTAINER_STATUS (all containers) on one connection,
3. one `cml-control list` process per call,
4. one new connection per request (connect + LIST_CONTAINERS + close),
5. concurrent clients (processes), each on its own connection.

Every figure is printed next to a reference measured in the same run, so the result is a ratio
rather than an absolute claim about this machine:

* socket benchmarks: a minimal asyncio echo server in its own process that reads a 4-byte length
  and a body and writes back a fixed 2-byte framed reply, driven by the very same client loop
  (the project's ControlClient); the ratio is cmld / echo floor;
* `cml-control list`: `/bin/true` (process spawn floor) and `python -c pass` with the same
  interpreter (interpreter start floor); the ratio is cml-control list / python -c pass.

Target and reference run interleaved (socket benchmarks in alternating blocks, ABBA order; the
spawn benchmark one process of each kind in turn), so background load and drift on the machine
hit both sides alike and the ratio stays meaningful on a busy host.

Every process this script starts (cmld, the echo server, the concurrent clients) is stopped by
its PID at the end, also when a measurement fails.

Usage: .venv/bin/python bench/control_roundtrip.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from benchlib import PACKAGES, git, wait_for_socket

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_control.client import ControlClient

C = ControllerToDaemon
D = DaemonToController

BIN = Path(sys.executable).parent
HOSTED_DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"
# The echo floor's reply body: a valid DaemonToController (code CONTAINERS_LIST, no UUIDs), two
# bytes long, so the same client code (which parses replies) can drive both servers.
ECHO_REPLY_BODY = D(code=D.CONTAINERS_LIST).SerializeToString()
assert len(ECHO_REPLY_BODY) == 2, ECHO_REPLY_BODY
HEADER = struct.Struct(">I")
BLOCKS = 10  # socket benchmarks alternate target and reference in this many blocks
CONCURRENT_ROUNDS = 4  # concurrent runs alternate in this many rounds (per-client count split)
T = TypeVar("T")


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Counts:
    containers: int
    list_n: int
    status_n: int
    cli_n: int
    connect_n: int
    workers: int
    per_worker: int
    warmup: int


FULL = Counts(containers=10, list_n=5000, status_n=2000, cli_n=50, connect_n=2000, workers=8,
              per_worker=500, warmup=200)
QUICK = Counts(containers=3, list_n=300, status_n=200, cli_n=5, connect_n=200, workers=8,
               per_worker=50, warmup=20)


# ---------------------------------------------------------------------------- statistics


@dataclass
class Sample:
    """Per-operation durations (ns) and the wall time of the whole run (ns)."""

    durations: list[int]
    wall_ns: int

    @property
    def n(self) -> int:
        return len(self.durations)

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.durations))

    @property
    def p99_ns(self) -> float:
        if len(self.durations) < 2:
            return float(self.durations[0])
        return float(statistics.quantiles(self.durations, n=100, method="inclusive")[98])

    @property
    def rate(self) -> float:
        return self.n / (self.wall_ns / 1e9) if self.wall_ns else 0.0


@dataclass
class Row:
    name: str
    n: int
    median_ns: float
    p99_ns: float
    rate_per_s: float
    reference: str = ""
    reference_median_ns: float | None = None
    ratio: float | None = None
    ratio_basis: str = ""
    is_reference: bool = False

    @classmethod
    def of(cls, name: str, s: Sample, *, is_reference: bool = False) -> Row:
        return cls(name, s.n, s.median_ns, s.p99_ns, s.rate, is_reference=is_reference)

    def against(self, ref_name: str, ref: Row, *, by_rate: bool = False) -> Row:
        self.reference = ref_name
        self.reference_median_ns = ref.median_ns
        if by_rate:
            # Cost per request at the aggregate rate: reference rate / our rate.
            self.ratio = ref.rate_per_s / self.rate_per_s if self.rate_per_s else None
            self.ratio_basis = "rate"
        else:
            self.ratio = self.median_ns / ref.median_ns if ref.median_ns else None
            self.ratio_basis = "median"
        return self


# ---------------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM by PID, then SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        print(f"warning: {name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(5)




@contextlib.contextmanager
def started(cmd: Sequence[str], sock: Path, name: str, stderr_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    with stderr_file.open("wb") as err:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_socket(sock, proc, name)
        yield proc
    except Exception:
        tail = stderr_file.read_text(errors="replace")[-2000:]
        if tail.strip():
            print(f"--- {name} stderr (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        stop_process(proc, name)


def start_cmld(tmp: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    base = tmp / "base"
    base.mkdir()
    (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    sock = tmp / "cmld.sock"
    cmd = [str(BIN / "cmld"), "--foreground", "--base-dir", str(base), "--socket", str(sock),
           "--log-dir", str(tmp / "logs"), "--scd-socket", str(tmp / "scd.sock"),
           "--tpm2d-socket", str(tmp / "tpm2d.sock")]
    return started(cmd, sock, "cmld", tmp / "cmld.stderr")


def start_echo(tmp: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    sock = tmp / "echo.sock"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(sock)]
    return started(cmd, sock, "echo server", tmp / "echo.stderr")


# ---------------------------------------------------------------------------- echo floor


async def _echo_serve(path: Path) -> None:
    reply = HEADER.pack(len(ECHO_REPLY_BODY)) + ECHO_REPLY_BODY

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                if length:
                    await reader.readexactly(length)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_unix_server(handle, path=str(path))
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def echo_server_main(path: Path) -> None:
    asyncio.run(_echo_serve(path))


# ---------------------------------------------------------------------------- client loops

LIST_REQ = C(command=C.LIST_CONTAINERS)
STATUS_REQ = C(command=C.GET_CONTAINER_STATUS)


def check_reply(reply: D, want: int, expect_items: int | None) -> None:
    if reply.code != want:
        raise RuntimeError(f"unexpected reply {D.Code.Name(reply.code)}, wanted {D.Code.Name(want)}")
    if expect_items is not None:
        got = len(reply.container_uuids) if want == D.CONTAINERS_LIST else len(reply.container_status)
        if got != expect_items:
            raise RuntimeError(f"reply lists {got} containers, expected {expect_items}")


Block = Callable[[int], Sample]  # run k operations, return their durations


def split(n: int, blocks: int) -> list[int]:
    """n as `blocks` near-equal positive parts (fewer parts if n < blocks)."""
    blocks = max(1, min(blocks, n))
    return [n // blocks + (1 if i < n % blocks else 0) for i in range(blocks)]


def paired(target: Block, reference: Block, n: int, blocks: int) -> tuple[Sample, Sample]:
    """Run target and reference alternately in blocks (ABBA order), so that drift and background
    load on the machine hit both alike; the rate uses the sum of each side's own block times."""
    got: dict[str, list[Sample]] = {"t": [], "r": []}
    for i, k in enumerate(split(n, blocks)):
        order = (("t", target), ("r", reference)) if i % 2 == 0 else (("r", reference), ("t", target))
        for key, fn in order:
            got[key].append(fn(k))

    def merge(parts: list[Sample]) -> Sample:
        return Sample([d for p in parts for d in p.durations], sum(p.wall_ns for p in parts))

    return merge(got["t"]), merge(got["r"])


def timed_loop(k: int, op: Callable[[], object]) -> Sample:
    durations = [0] * k
    clock = time.perf_counter_ns
    start = clock()
    for i in range(k):
        t0 = clock()
        op()
        durations[i] = clock() - t0
    return Sample(durations, clock() - start)


@contextlib.contextmanager
def one_connection(sock: Path, req: C, warmup: int, want: int, items: int | None) -> Iterator[Block]:
    """A single connection kept open for the whole measurement; each block is k round-trips of
    `req` on it. The first reply is checked, then replies are only parsed (as by any client)."""
    with ControlClient(sock) as client:
        check_reply(client.request(req), want, items)
        for _ in range(warmup):
            client.request(req)
        yield lambda k: timed_loop(k, lambda: client.request(req))


def _connect_list_close(sock: Path) -> None:
    client = ControlClient(sock)
    try:
        client.request(LIST_REQ)
    finally:
        client.close()


def new_connection_each(sock: Path, warmup: int) -> Block:
    """Each operation: connect, one LIST_CONTAINERS, close."""
    for _ in range(warmup):
        _connect_list_close(sock)
    return lambda k: timed_loop(k, lambda: _connect_list_close(sock))


def _worker(sock: str, n: int, warmup: int, barrier: Barrier, out: Connection) -> None:
    """One concurrent client: its own connection, n LIST_CONTAINERS after a common start."""
    try:
        with ControlClient(Path(sock)) as client:
            for _ in range(warmup):
                client.request(LIST_REQ)
            barrier.wait(30)
            clock = time.perf_counter_ns  # CLOCK_MONOTONIC: comparable across processes
            durations = [0] * n
            start = clock()
            for i in range(n):
                t0 = clock()
                client.request(LIST_REQ)
                durations[i] = clock() - t0
            end = clock()
        out.send(("ok", start, end, durations))
    except BaseException as e:
        with contextlib.suppress(Exception):
            barrier.abort()
        out.send(("error", 0, 0, repr(e)))
    finally:
        out.close()


def concurrent(sock: Path, workers: int, per_worker: int, warmup: int) -> Sample:
    """`workers` client processes, each on its own connection; rate over the common wall time."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers)
    procs: list[tuple[Any, Connection]] = []
    try:
        for _ in range(workers):
            recv_end, send_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(str(sock), per_worker, warmup, barrier, send_end), daemon=True)
            p.start()
            send_end.close()
            procs.append((p, recv_end))
        results = []
        for p, conn in procs:
            if not conn.poll(120):
                raise TimeoutError(f"client process {p.pid} did not report within 120 s")
            results.append(conn.recv())
        errors = [r[3] for r in results if r[0] != "ok"]
        if errors:
            raise RuntimeError(f"client process failed: {errors[0]}")
        durations = [d for r in results for d in r[3]]
        wall = max(r[2] for r in results) - min(r[1] for r in results)
        return Sample(durations, wall)
    finally:
        for p, conn in procs:
            conn.close()
            p.join(10)
            if p.is_alive():
                p.terminate()  # by PID (multiprocessing sends SIGTERM to p.pid)
                p.join(5)


def spawn_each(cmds: dict[str, list[str]], n: int, warmup: int) -> dict[str, Sample]:
    """Run each command n times, interleaved (A B C A B C ...) so drift hits all alike."""
    for _ in range(warmup):
        for cmd in cmds.values():
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
    durations: dict[str, list[int]] = {k: [] for k in cmds}
    clock = time.perf_counter_ns
    for _ in range(n):
        for key, cmd in cmds.items():
            t0 = clock()
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            durations[key].append(clock() - t0)
    return {k: Sample(v, sum(v)) for k, v in durations.items()}


# ---------------------------------------------------------------------------- setup


def create_containers(sock: Path, count: int) -> list[str]:
    uuids = []
    with ControlClient(sock) as client:
        for i in range(count):
            conf = f'name: "bench-{i}"\nguest_os: "bench-os"\ncolor: 0\n'.encode()
            reply = client.request(C(command=C.CREATE_CONTAINER, container_config_file=conf))
            if reply.code != D.CONTAINER_CONFIG or len(reply.container_uuids) != 1:
                raise RuntimeError(f"CREATE_CONTAINER bench-{i} failed: {reply}")
            uuids.append(reply.container_uuids[0])
        check_reply(client.request(LIST_REQ), D.CONTAINERS_LIST, count)
        check_reply(client.request(STATUS_REQ), D.CONTAINER_STATUS, count)
    return uuids


def check_cli(sock: Path, count: int) -> None:
    p = subprocess.run([str(BIN / "cml-control"), "-s", str(sock), "list"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, check=False, timeout=60)
    if p.returncode != 0 or p.stdout.count("container_status {") != count:
        raise RuntimeError(f"cml-control list failed (rc {p.returncode}): {p.stderr or p.stdout}")




# ---------------------------------------------------------------------------- output


def fmt_time(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}/s" if r >= 100 else f"{r:.1f}/s"


COLUMNS = ("measurement", "n", "median", "p99", "rate", "reference", "ref median", "ratio")


def table(rows: list[Row]) -> str:
    cells = [list(COLUMNS)]
    for r in rows:
        name = f"  ref: {r.name}" if r.is_reference else r.name
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x" + (" (rate)" if r.ratio_basis == "rate" else "")
        cells.append([name, str(r.n), fmt_time(r.median_ns), fmt_time(r.p99_ns), fmt_rate(r.rate_per_s),
                      r.reference or "-", fmt_time(r.reference_median_ns), ratio])
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {1, 2, 3, 4, 6, 7}
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i])
                               for i, v in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def step(label: str, fn: Callable[[], T]) -> T:
    print(f"  running: {label} ...", file=sys.stderr, flush=True)
    return fn()


def run(counts: Counts) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cml-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with start_cmld(tmp) as cmld, start_echo(tmp) as echo:
            sock = tmp / "cmld.sock"
            esock = tmp / "echo.sock"
            print(f"  cmld pid {cmld.pid}, echo server pid {echo.pid}, temp dir {tmp}", file=sys.stderr)
            create_containers(sock, counts.containers)
            check_cli(sock, counts.containers)
            w = counts.warmup

            # 1. LIST_CONTAINERS on one connection, and the echo floor with the same loop
            with one_connection(sock, LIST_REQ, w, D.CONTAINERS_LIST, counts.containers) as target, \
                    one_connection(esock, LIST_REQ, w, D.CONTAINERS_LIST, 0) as ref:
                t, r = step("LIST_CONTAINERS vs echo floor, one connection",
                            lambda: paired(target, ref, counts.list_n, BLOCKS))
            echo1 = Row.of("echo floor, one connection", r, is_reference=True)
            rows += [Row.of("LIST_CONTAINERS, one connection", t).against("echo floor", echo1), echo1]

            # 2. GET_CONTAINER_STATUS (all) on one connection
            with one_connection(sock, STATUS_REQ, w, D.CONTAINER_STATUS, counts.containers) as target, \
                    one_connection(esock, STATUS_REQ, w, D.CONTAINERS_LIST, 0) as ref:
                t, r = step("GET_CONTAINER_STATUS vs echo floor, one connection",
                            lambda: paired(target, ref, counts.status_n, BLOCKS))
            echo2 = Row.of("echo floor, one connection", r, is_reference=True)
            rows += [Row.of("GET_CONTAINER_STATUS all, one conn.", t).against("echo floor", echo2), echo2]

            # 3. a cml-control process per call, /bin/true and python -c pass interleaved
            print("  running: process spawns ...", file=sys.stderr, flush=True)
            spawns = spawn_each({
                "true": ["/bin/true"],
                "python": [sys.executable, "-c", "pass"],
                "cli": [str(BIN / "cml-control"), "-s", str(sock), "list"],
            }, counts.cli_n, max(1, min(3, counts.cli_n // 10)))
            true_row = Row.of("/bin/true (spawn floor)", spawns["true"], is_reference=True)
            py_row = Row.of("python -c pass (interp. floor)", spawns["python"], is_reference=True)
            py_row.against("/bin/true", true_row)
            r3 = Row.of("cml-control list (process/call)", spawns["cli"])
            rows += [r3.against("python -c pass", py_row), py_row, true_row]

            # 4. a new connection per request
            t, r = step("new connection per request vs echo floor", lambda: paired(
                new_connection_each(sock, w), new_connection_each(esock, w), counts.connect_n, BLOCKS))
            echo4 = Row.of("echo floor, new conn. per request", r, is_reference=True)
            rows += [Row.of("connect+LIST_CONTAINERS+close", t).against("echo floor", echo4), echo4]

            # 5. concurrent clients (rounds alternate between cmld and the echo floor, too)
            label = f"{counts.workers} procs x {counts.per_worker}"
            t, r = step(f"concurrent, {label}, vs echo floor", lambda: paired(
                lambda k: concurrent(sock, counts.workers, k, w // 10),
                lambda k: concurrent(esock, counts.workers, k, w // 10),
                counts.per_worker, CONCURRENT_ROUNDS))
            echo5 = Row.of(f"echo floor, {label}", r, is_reference=True)
            rows += [Row.of(f"LIST_CONTAINERS, {label}", t).against("echo floor", echo5, by_rate=True), echo5]

            if cmld.poll() is not None:
                raise RuntimeError(f"cmld exited with {cmld.returncode} during the benchmark")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cmld control-socket round-trip benchmark with reference floors")
    ap.add_argument("--quick", action="store_true", help="small counts (a few seconds), for smoke tests")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON to FILE")
    ap.add_argument("--containers", type=int, help="containers to create first (default 10)")
    ap.add_argument("--list-n", type=int, help="LIST_CONTAINERS round-trips on one connection (default 5000)")
    ap.add_argument("--status-n", type=int, help="GET_CONTAINER_STATUS round-trips (default 2000)")
    ap.add_argument("--cli-n", type=int, help="cml-control list processes (default 50)")
    ap.add_argument("--connect-n", type=int, help="new connections, one request each (default 2000)")
    ap.add_argument("--workers", type=int, help="concurrent client processes (default 8)")
    ap.add_argument("--per-worker", type=int, help="requests per concurrent client (default 500)")
    ap.add_argument("--echo-server", metavar="SOCKET", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.echo_server is not None:
        echo_server_main(args.echo_server)
        return 0

    base = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("containers", "list_n", "status_n", "cli_n", "connect_n",
                                                "workers", "per_worker") if getattr(args, k) is not None}
    if any(v < 1 for v in overrides.values()):
        ap.error("counts must be at least 1")
    counts = Counts(**{**asdict(base), **overrides})

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop our processes

    signal.signal(signal.SIGTERM, on_term)

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    src_dirty = bool(git("status", "--porcelain", "--", *PACKAGES))
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = time.monotonic()
    rows = run(counts)
    elapsed = time.monotonic() - t0

    print(f"cmld control round-trip benchmark  {when.isoformat()}  commit {commit}"
          f"{' (src modified)' if src_dirty else ''}  {os.cpu_count()} CPUs  Python {platform.python_version()}"
          f"  {'quick' if args.quick else 'full'} mode, {counts.containers} containers, {elapsed:.1f} s")
    print(table(rows))
    print("ratio = median / reference median (\"(rate)\": reference rate / rate, i.e. cost per request at "
          "the aggregate rate); > 1 means slower than the floor.")

    if args.json:
        doc = {
            "date": when.isoformat(), "commit": commit, "src_modified": src_dirty, "cpus": os.cpu_count(),
            "python": platform.python_version(), "quick": args.quick, "counts": asdict(counts),
            "elapsed_s": round(elapsed, 3), "results": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
