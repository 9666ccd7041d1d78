#!/usr/bin/env python3
"""Container start/stop benchmark: cmld against runc on the same root filesystem, plus hashing.

Builds the demo busybox GuestOS (scripts/build-guestos.py) into a temporary directory and starts
a real cmld on it (hosted mode, unsigned configs, no TPM, no autostart, every directory private to
the run). Over one control connection it then measures, N times per container:

1. CONTAINER_START request -> reply (cmld answers once init was exec'd, state BOOTING);
2. CONTAINER_START request -> state RUNNING (the in-container service reported boot completed),
   seen by polling GET_CONTAINER_STATUS every 2 ms on the same connection;
3. CONTAINER_STOP request -> state STOPPED, polled the same way;

once for a container with a user namespace (the default) and once for one with `userns: false`.

The reference is runc on the very same root filesystem: the ext4 image's content is unpacked with
`debugfs -R "rdump / DIR"` (no loop device, no mount) and run read-only from an OCI config made by
`runc spec`, with and without a user namespace (the same uid range as cmld's first container):

* `runc run` of /bin/true: create, start, run to exit, tear down (reference for START -> RUNNING);
* `runc run -d` of `sh -c "sleep 1000"`: create + start (reference for START -> reply);
* `runc kill ID KILL` + `runc delete ID` (reference for STOP -> STOPPED);
* `runc run -d` of the GuestOS's own `/sbin/init` (busybox init, with CAP_SYS_BOOT so that its
  halt ends the PID namespace, as in cmld), then `runc kill ID USR1` (busybox init's halt, which
  is what the `halt` that cmld's stop runs in the container sends: the demo GuestOS's init is
  `cservice init`, which keeps no connection for a SHUTDOWN), waiting for init to exit, and
  `runc delete ID`: the graceful reference for STOP -> STOPPED. Both run the GuestOS's inittab
  shutdown actions.

runc gets a private `--root` under the temporary directory, and this process makes itself a child
subreaper that reaps the inits of detached runc containers, as cmld (a child subreaper) does for
its own. Without runc (or debugfs) the reference is skipped with a note.

Finally the SHA-256 throughput of cmld's image check (`cmld.modules.volumes.sha256_file`) is
compared with `sha256sum` on a file of random data (1 GiB by default), written once and deleted
at the end.

All measurements run interleaved (one cycle of each kind in turn), after one unmeasured warm-up
cycle of each kind (cmld's first start also formats the container's data image).

Everything the script creates is removed at the end, also on an error, Ctrl-C or SIGTERM: runc
containers (by their IDs, in the private root), cmld (by PID; it stops its containers), and the
temporary directory. If cmld has to be killed, it is started once more on the same directories so
that it stops what the killed one left behind. Mounts and loop devices that still refer to the
temporary directory afterwards are reported and released.

Usage: .venv/bin/python bench/container_start.py [--runs N] [--hash-size-mb MB] [--profile] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import re
import select
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
from typing import Any

from benchlib import PACKAGES, REPO, git, wait_for_socket

from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_control.client import ControlClient
from cmld.modules.volumes import sha256_file

C = ControllerToDaemon
D = DaemonToController
S = ContainerState

BIN = Path(sys.executable).parent
HOSTED_DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"
POLL_S = 0.002  # GET_CONTAINER_STATUS polling interval
STATE_TIMEOUT_S = 60.0  # longest wait for RUNNING or STOPPED
CMLD_STOP_TIMEOUT_S = 10.0  # cmld's --stop-timeout: SHUTDOWN -> SIGKILL of a container
CMLD_EXIT_WAIT_S = 40.0  # how long cmld may take to stop its containers and exit on SIGTERM
USERNS_HOST_ID = 100000  # cmld's first user-namespace range: host uid 100000, 65536 IDs
USERNS_SIZE = 65536
HASH_REPS = 3  # measured passes per hashing method (after one warm-up pass each)
HASH_CHUNK = 16 << 20
PR_SET_CHILD_SUBREAPER = 36
RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc")


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- statistics


@dataclass
class Sample:
    durations: list[int] = field(default_factory=list)  # ns

    @property
    def n(self) -> int:
        return len(self.durations)

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.durations))

    @property
    def p90_ns(self) -> float:
        if len(self.durations) < 2:
            return float(self.durations[0])
        return float(statistics.quantiles(self.durations, n=10, method="inclusive")[8])


@dataclass
class Row:
    name: str
    n: int
    median_ns: float
    p90_ns: float
    reference: str = ""
    ref_median_ns: float | None = None
    ref_p90_ns: float | None = None
    ratio: float | None = None
    mb_per_s: float | None = None
    ref_mb_per_s: float | None = None

    @classmethod
    def of(cls, name: str, s: Sample, ref_name: str = "", ref: Sample | None = None) -> Row:
        row = cls(name, s.n, s.median_ns, s.p90_ns)
        if ref is not None and ref.n:
            row.reference = ref_name
            row.ref_median_ns = ref.median_ns
            row.ref_p90_ns = ref.p90_ns
            row.ratio = s.median_ns / ref.median_ns if ref.median_ns else None
        return row


# ---------------------------------------------------------------------------- processes


def run_quiet(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          check=False)




class Cmld:
    """A cmld whose every directory (base, run, logs, netns bindings, sockets) is under `tmp`, in
    a network namespace of its own (its containers' veths, routes and firewall live there, never
    in the machine's): made by `start`, removed by `stop`."""

    def __init__(self, tmp: Path, extra: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.extra = extra
        self.netns = f"cml-bench-{os.getpid()}"
        self.base = tmp / "base"
        self.sock = tmp / "cmld.sock"
        self.log_dir = tmp / "logs"
        self.stderr = tmp / "cmld.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def cmd(self) -> list[str]:
        t = self.tmp
        return [str(BIN / "cmld"), "--foreground", "--base-dir", str(self.base), "--socket", str(self.sock),
                "--log-dir", str(self.log_dir), "--run-dir", str(t / "run"), "--netns-dir", str(t / "netns"),
                "--scd-socket", str(t / "scd.sock"), "--tpm2d-socket", str(t / "tpm2d.sock"),
                "--stop-timeout", str(CMLD_STOP_TIMEOUT_S), "--no-autostart", "--netns", f"/run/netns/{self.netns}",
                *self.extra]

    def start(self) -> None:
        if not Path(f"/run/netns/{self.netns}").exists():
            p = run_quiet(["ip", "netns", "add", self.netns])
            if p.returncode != 0:
                raise RuntimeError(f"ip netns add {self.netns}: {p.stderr.strip()}")
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        try:
            wait_for_socket(self.sock, self.proc, "cmld", 20.0)
        except Exception:
            self.print_stderr()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def print_stderr(self) -> None:
        with contextlib.suppress(OSError):
            tail = self.stderr.read_text(errors="replace")[-3000:]
            if tail.strip():
                print(f"--- cmld stderr (tail) ---\n{tail}", file=sys.stderr)

    def stop(self) -> None:
        """SIGTERM by PID (cmld stops its containers first); SIGKILL if it hangs, and then one more
        cmld on the same directories, which stops and cleans up what the killed one left."""
        try:
            self._stop()
        finally:
            run_quiet(["ip", "netns", "del", self.netns])

    def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(CMLD_EXIT_WAIT_S)
            return
        except subprocess.TimeoutExpired:
            print(f"warning: cmld (pid {proc.pid}) did not exit on SIGTERM; killing it", file=sys.stderr)
            proc.kill()
            proc.wait(10)
        log("starting cmld once more to clean up after the killed one")
        self.sock.unlink(missing_ok=True)
        self.start()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(CMLD_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            print(f"warning: recovery cmld (pid {self.proc.pid}) hung too; killing it", file=sys.stderr)
            self.proc.kill()
            self.proc.wait(10)

    def log_lines(self) -> list[str]:
        lines: list[str] = []
        for p in sorted(self.log_dir.glob("cml-daemon.2*")):
            lines += p.read_text(errors="replace").splitlines()
        return lines


def release_leftovers(tmp: Path) -> None:
    """Mounts and loop devices that still refer to `tmp` (there should be none): report and
    release them, so that removing the temporary directory cannot fail or leak."""
    prefix = str(tmp)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if len(line.split()) > 4 and line.split()[4].startswith(prefix)]
    for mp in sorted(mounts, key=len, reverse=True):
        print(f"warning: {mp} is still mounted; unmounting it", file=sys.stderr)
        run_quiet(["umount", "-l", mp])
    losetup = shutil.which("losetup") or "/usr/sbin/losetup"
    if Path(losetup).exists():
        for line in run_quiet([losetup, "-a"]).stdout.splitlines():
            if prefix in line:
                dev = line.split(":", 1)[0]
                print(f"warning: loop device {dev} still backs a file of the run; detaching it",
                      file=sys.stderr)
                run_quiet([losetup, "-d", dev])


# ---------------------------------------------------------------------------- cmld measurements


@dataclass
class Cycle:
    start_reply_ns: int
    start_running_ns: int
    stop_ns: int
    start_wall_ns: int  # CLOCK_REALTIME at the START request, to match cmld's log
    stop_wall_ns: int
    running_seen_wall_ns: int


class Controller:
    """One control connection, kept open for the whole run."""

    def __init__(self, sock: Path) -> None:
        self.client = ControlClient(sock)

    def close(self) -> None:
        self.client.close()

    def create(self, name: str, userns: bool) -> str:
        conf = f'name: "{name}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n'
        if not userns:
            conf += "userns: false\n"
        reply = self.client.request(C(command=C.CREATE_CONTAINER, container_config_file=conf.encode()))
        if reply.code != D.CONTAINER_CONFIG or len(reply.container_uuids) != 1:
            raise RuntimeError(f"CREATE_CONTAINER {name} failed: {reply}")
        return str(reply.container_uuids[0])

    def state(self, uuid: str) -> int:
        reply = self.client.request(C(command=C.GET_CONTAINER_STATUS, container_uuids=[uuid]))
        if reply.code != D.CONTAINER_STATUS or len(reply.container_status) != 1:
            raise RuntimeError(f"GET_CONTAINER_STATUS {uuid} failed: {reply}")
        return int(reply.container_status[0].state)

    def wait_state(self, uuid: str, want: int, fail: tuple[int, ...]) -> int:
        """Polls every POLL_S; returns perf_counter_ns when `want` was first seen."""
        deadline = time.monotonic() + STATE_TIMEOUT_S
        while True:
            st = self.state(uuid)
            if st == want:
                return time.perf_counter_ns()
            if st in fail:
                raise RuntimeError(f"container {uuid} went {S.Name(st)} while waiting for {S.Name(want)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {uuid} stayed {S.Name(st)}, wanted {S.Name(want)}")
            time.sleep(POLL_S)

    def cycle(self, uuid: str) -> Cycle:
        clock = time.perf_counter_ns
        start_wall = time.time_ns()
        t0 = clock()
        reply = self.client.request(C(command=C.CONTAINER_START, container_uuids=[uuid]))
        t1 = clock()
        if reply.response != D.CONTAINER_START_OK:
            raise RuntimeError(f"CONTAINER_START failed: {D.Response.Name(reply.response)} {reply.error_message}")
        t2 = self.wait_state(uuid, S.RUNNING, (S.STOPPED, S.ZOMBIE))
        running_wall = time.time_ns()
        stop_wall = time.time_ns()
        t3 = clock()
        reply = self.client.request(C(command=C.CONTAINER_STOP, container_uuids=[uuid]))
        if reply.response != D.CONTAINER_STOP_OK:
            raise RuntimeError(f"CONTAINER_STOP failed: {D.Response.Name(reply.response)} {reply.error_message}")
        t4 = self.wait_state(uuid, S.STOPPED, (S.ZOMBIE,))
        return Cycle(t1 - t0, t2 - t0, t4 - t3, start_wall, stop_wall, running_wall)


# ---------------------------------------------------------------------------- runc reference


def find_runc() -> str | None:
    found = shutil.which("runc")
    if found:
        return found
    return next((c for c in RUNC_CANDIDATES if os.access(c, os.X_OK)), None)


class Runc:
    """runc with a private state root; every container ID it used is deleted at the end."""

    def __init__(self, exe: str, tmp: Path) -> None:
        self.exe = exe
        self.root = tmp / "runc-root"
        self.stderr = tmp / "runc.stderr"
        self.used: list[str] = []
        self.prefix = f"cml-bench-{os.getpid()}"
        self.seq = 0

    def new_id(self) -> str:
        self.seq += 1
        cid = f"{self.prefix}-{self.seq}"
        self.used.append(cid)
        return cid

    def cmd(self, *args: str) -> list[str]:
        return [self.exe, "--root", str(self.root), *args]

    def _run(self, *args: str) -> int:
        """The container's process inherits runc's stdio: stderr goes to a file, never a pipe
        (a detached container would hold a pipe open)."""
        with self.stderr.open("ab") as err:
            return subprocess.run(self.cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=60, check=False).returncode

    def _fail(self, what: str) -> RuntimeError:
        tail = self.stderr.read_text(errors="replace")[-1500:] if self.stderr.exists() else ""
        return RuntimeError(f"{what} failed; runc said:\n{tail}")

    def run_to_exit(self, bundle: Path) -> int:
        cid = self.new_id()
        t0 = time.perf_counter_ns()
        rc = self._run("run", "-b", str(bundle), cid)
        t1 = time.perf_counter_ns()
        if rc != 0:
            raise self._fail(f"runc run {cid} (exit {rc})")
        return t1 - t0

    def run_detached(self, bundle: Path) -> tuple[str, int]:
        cid = self.new_id()
        t0 = time.perf_counter_ns()
        rc = self._run("run", "-d", "-b", str(bundle), cid)
        t1 = time.perf_counter_ns()
        if rc != 0:
            raise self._fail(f"runc run -d {cid} (exit {rc})")
        return cid, t1 - t0

    def _delete(self, cid: str) -> None:
        """`runc delete ID`, retried while the container has not died yet (runc refuses to delete
        a running one)."""
        deadline = time.monotonic() + 10
        while self._run("delete", cid) != 0:
            if time.monotonic() > deadline:
                raise self._fail(f"runc delete {cid}")
            time.sleep(0.001)

    def kill_delete(self, cid: str) -> int:
        """`runc kill ID KILL` then `runc delete ID` (its retries count), and reaping init."""
        pid = self.init_pid(cid)
        t0 = time.perf_counter_ns()
        if self._run("kill", cid, "KILL") != 0:
            raise self._fail(f"runc kill {cid}")
        self._delete(cid)
        reap(pid)
        return time.perf_counter_ns() - t0

    def init_pid(self, cid: str) -> int:
        p = run_quiet(self.cmd("state", cid))
        if p.returncode != 0:
            raise RuntimeError(f"runc state {cid} failed: {p.stderr}")
        return int(json.loads(p.stdout)["pid"])

    def poweroff_delete(self, cid: str) -> int:
        """`runc kill ID USR1` (busybox init's halt), wait for init to exit (pidfd), then
        `runc delete ID`. Starts only once init is idle (see wait_init_idle)."""
        pid = self.init_pid(cid)
        wait_init_idle(pid)
        fd = os.pidfd_open(pid)
        try:
            t0 = time.perf_counter_ns()
            if self._run("kill", cid, "USR1") != 0:
                raise self._fail(f"runc kill {cid} USR1")
            readable, _, _ = select.select([fd], [], [], STATE_TIMEOUT_S)
            if not readable:
                raise TimeoutError(f"init of runc container {cid} did not exit after SIGUSR1")
            reap(pid)
            self._delete(cid)
            return time.perf_counter_ns() - t0
        finally:
            os.close(fd)

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        listed = run_quiet(self.cmd("list", "-q")).stdout.split()
        for cid in listed:
            if cid in self.used:
                print(f"  removing leftover runc container {cid}", file=sys.stderr)
                run_quiet(self.cmd("delete", "--force", cid))


def set_child_subreaper() -> None:
    """The inits of detached runc containers are orphaned when `runc run -d` exits. As cmld (a
    child subreaper) does for its containers, this process adopts and reaps them: otherwise they
    go to PID 1, and how soon that reaps them becomes part of the stop time (up to a second more
    on the VM this was written on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        print(f"warning: PR_SET_CHILD_SUBREAPER failed: {os.strerror(err)}", file=sys.stderr)


def reap(pid: int) -> None:
    """Reaps an adopted container init (see set_child_subreaper)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def wait_init_idle(pid: int, timeout: float = 10.0) -> None:
    """Until busybox init `pid` has run its sysinit actions and waits for signals (in
    sigtimedwait): the state init is in when cmld stops a container. A SIGUSR1 sent earlier
    would find init still starting up, and its halt would take a second longer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if wchan.startswith("do_sigtimedwait") and not children:
            return
        time.sleep(0.001)
    raise TimeoutError(f"init {pid} of a runc container did not settle (waiting for signals, sysinit done)")


def make_bundle(runc: Runc, rootfs: Path, bundle: Path, args: list[str], userns: bool,
                extra_caps: tuple[str, ...] = ()) -> None:
    """`runc spec`, then: our args, no terminal, the shared rootfs read-only (as cmld mounts the
    image), optionally a user namespace with cmld's uid range and extra capabilities."""
    bundle.mkdir()
    p = run_quiet([runc.exe, "spec", "--bundle", str(bundle)])
    if p.returncode != 0:
        raise RuntimeError(f"runc spec failed: {p.stderr}")
    path = bundle / "config.json"
    cfg: dict[str, Any] = json.loads(path.read_text())
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = False
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["hostname"] = "bench"
    for kind in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][kind] += list(extra_caps)
    if userns:
        linux = cfg["linux"]
        linux["namespaces"].append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": USERNS_HOST_ID, "size": USERNS_SIZE}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
    path.write_text(json.dumps(cfg, indent=2))


def unpack_rootfs(image: Path, dest: Path) -> None:
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    if not Path(debugfs).exists():
        raise FileNotFoundError("debugfs (e2fsprogs) is not installed")
    dest.mkdir()
    p = run_quiet([debugfs, "-R", f"rdump / {dest}", str(image)], timeout=120)
    if p.returncode != 0 or not (dest / "bin" / "busybox").exists():
        raise RuntimeError(f"debugfs rdump of {image} failed: {p.stderr[-1000:]}")


# ---------------------------------------------------------------------------- hashing


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(HASH_CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def sha256sum(path: Path) -> str:
    p = subprocess.run(["sha256sum", str(path)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       check=True, timeout=600)
    return p.stdout.split()[0]


def bench_hash(path: Path, reps: int) -> tuple[Sample, Sample]:
    """cmld's sha256_file (in this process) and `sha256sum` (a process each), interleaved; one
    unmeasured pass of each first, so both read from the page cache."""
    ours_digest, ref_digest = sha256_file(path), sha256sum(path)
    if ours_digest != ref_digest:
        raise RuntimeError(f"digests differ: sha256_file {ours_digest}, sha256sum {ref_digest}")
    ours, ref = Sample(), Sample()
    clock = time.perf_counter_ns
    for _ in range(reps):
        t0 = clock()
        sha256_file(path)
        ours.durations.append(clock() - t0)
        t0 = clock()
        sha256sum(path)
        ref.durations.append(clock() - t0)
    return ours, ref


# ---------------------------------------------------------------------------- cmld log profile

LOG_LINE = re.compile(r"^(\S+) \[\d+\] \w+ (.*)$")


def log_events(lines: list[str], name: str) -> dict[str, list[int]]:
    """Wall-clock times (ns, millisecond resolution) of cmld's log lines for container `name`."""
    patterns = {
        "starting": re.compile(rf"^container {re.escape(name)} \(.*\): STOPPED -> STARTING$"),
        "booting": re.compile(rf"^container {re.escape(name)} \(.*\): STARTING -> BOOTING$"),
        "replied": re.compile(rf"^control client .*: started {re.escape(name)}$"),
        "boot_completed": re.compile(rf"^container {re.escape(name)}: service reports boot completed$"),
        "running": re.compile(rf"^container {re.escape(name)} \(.*\): BOOTING -> RUNNING$"),
        "shutdown": re.compile(rf"^container {re.escape(name)} \(.*\): RUNNING -> SHUTDOWN$"),
        "init_ended": re.compile(rf"^container {re.escape(name)}: init \d+ ended"),
        "stopped": re.compile(rf"^container {re.escape(name)} \(.*\): SHUTDOWN -> STOPPED$"),
    }
    events: dict[str, list[int]] = {k: [] for k in patterns}
    for line in lines:
        m = LOG_LINE.match(line)
        if not m:
            continue
        for key, pat in patterns.items():
            if pat.search(m.group(2)):
                when = dt.datetime.fromisoformat(m.group(1))
                events[key].append(int(when.timestamp() * 1000) * 1_000_000)
    return events


PHASES = (
    ("START sent -> STARTING logged", "sent", "starting"),
    ("STARTING -> BOOTING (modules, launcher, init exec)", "starting", "booting"),
    ("BOOTING -> reply logged", "booting", "replied"),
    ("BOOTING -> service reports boot completed", "booting", "boot_completed"),
    ("boot completed -> RUNNING", "boot_completed", "running"),
    ("RUNNING logged -> seen by the client poll", "running", "seen"),
    ("STOP sent -> SHUTDOWN logged", "stop_sent", "shutdown"),
    ("SHUTDOWN -> init ended (in-container shutdown)", "shutdown", "init_ended"),
    ("init ended -> STOPPED (cleanup)", "init_ended", "stopped"),
)


def profile(lines: list[str], name: str, cycles: list[Cycle], skip: int) -> list[tuple[str, Sample]]:
    """Per-phase durations of the measured cycles (the first `skip` cycles were warm-ups)."""
    ev = log_events(lines, name)
    ev["sent"] = [c.start_wall_ns for c in cycles]
    ev["seen"] = [c.running_seen_wall_ns for c in cycles]
    ev["stop_sent"] = [c.stop_wall_ns for c in cycles]
    for key in ("sent", "seen", "stop_sent"):
        ev[key] = [0] * skip + ev[key]
    out = []
    for label, a, b in PHASES:
        s = Sample()
        for i in range(skip, skip + len(cycles)):
            if i < len(ev[a]) and i < len(ev[b]):
                s.durations.append(max(0, ev[b][i] - ev[a][i]))
        if s.n:
            out.append((label, s))
    return out


# ---------------------------------------------------------------------------- output


def fmt_time(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:.0f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def render(header: list[str], cells: list[list[str]], right: set[int]) -> str:
    rows = [header, *cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i])
                               for i, v in enumerate(r)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def timing_table(rows: list[Row]) -> str:
    header = ["measurement", "n", "median", "p90", "reference (same run)", "ref median", "ref p90", "ratio"]
    cells = [[r.name, str(r.n), fmt_time(r.median_ns), fmt_time(r.p90_ns), r.reference or "-",
              fmt_time(r.ref_median_ns), fmt_time(r.ref_p90_ns),
              "-" if r.ratio is None else f"{r.ratio:.2f}x"] for r in rows]
    return render(header, cells, {1, 2, 3, 5, 6, 7})


def hash_table(rows: list[Row]) -> str:
    header = ["measurement", "n", "median", "MB/s", "reference (same run)", "ref median", "ref MB/s", "ratio"]
    cells = [[r.name, str(r.n), fmt_time(r.median_ns), f"{r.mb_per_s or 0:,.0f}", r.reference or "-",
              fmt_time(r.ref_median_ns), "-" if r.ref_mb_per_s is None else f"{r.ref_mb_per_s:,.0f}",
              "-" if r.ratio is None else f"{r.ratio:.2f}x"] for r in rows]
    return render(header, cells, {1, 2, 3, 5, 6, 7})


def profile_table(sections: list[tuple[str, list[tuple[str, Sample]]]]) -> str:
    cells = []
    for title, phases in sections:
        for label, s in phases:
            cells.append([title, label, str(s.n), fmt_time(s.median_ns), fmt_time(s.p90_ns)])
    return render(["container", "phase (from cmld's log, 1 ms resolution)", "n", "median", "p90"], cells,
                  {2, 3, 4})




# ---------------------------------------------------------------------------- main


@dataclass
class Variant:
    label: str  # "userns" / "no userns"
    userns: bool
    name: str = ""
    uuid: str = ""
    cycles: list[Cycle] = field(default_factory=list)
    runc_true: Sample = field(default_factory=Sample)
    runc_start: Sample = field(default_factory=Sample)
    runc_stop: Sample = field(default_factory=Sample)
    runc_poweroff: Sample = field(default_factory=Sample)
    bundle_true: Path | None = None
    bundle_sleep: Path | None = None
    bundle_init: Path | None = None


@dataclass
class Result:
    rows: list[Row]
    hash_rows: list[Row]
    profile: list[tuple[str, list[tuple[str, Sample]]]]
    runc_version: str
    notes: list[str]


def measure_containers(tmp: Path, stack: contextlib.ExitStack, runs: int, want_profile: bool,
                       notes: list[str]) -> tuple[list[Row], list[tuple[str, list[tuple[str, Sample]]]], str]:
    log("building the demo GuestOS ...")
    os_dir = tmp / "guestos"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(os_dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"build-guestos.py failed: {p.stderr[-2000:]}")
    image = os_dir / "busybox-1" / "root.img"

    variants = [Variant("userns", True), Variant("no userns", False)]

    runc: Runc | None = None
    runc_version = ""
    exe = find_runc()
    if exe is None:
        msg = "runc not found (PATH, /usr/sbin, /usr/bin, /usr/local): the runc reference is skipped"
        print(f"NOTE: {msg}", file=sys.stderr)
        notes.append(msg)
    else:
        try:
            rootfs = tmp / "rootfs"
            unpack_rootfs(image, rootfs)
            runc = Runc(exe, tmp)
            stack.callback(runc.cleanup)
            runc_version = run_quiet([exe, "--version"]).stdout.splitlines()[0]
            for v in variants:
                tag = "userns" if v.userns else "nouserns"
                v.bundle_true = tmp / f"bundle-true-{tag}"
                v.bundle_sleep = tmp / f"bundle-sleep-{tag}"
                v.bundle_init = tmp / f"bundle-init-{tag}"
                make_bundle(runc, rootfs, v.bundle_true, ["/bin/true"], v.userns)
                make_bundle(runc, rootfs, v.bundle_sleep, ["/bin/sh", "-c", "sleep 1000"], v.userns)
                make_bundle(runc, rootfs, v.bundle_init, ["/sbin/init"], v.userns, ("CAP_SYS_BOOT",))
        except (OSError, RuntimeError) as e:
            msg = f"runc reference skipped: {e}"
            print(f"NOTE: {msg}", file=sys.stderr)
            notes.append(msg)
            runc = None

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
    ctl = Controller(cmld.sock)
    stack.callback(ctl.close)
    for v in variants:
        v.name = "bench-" + ("userns" if v.userns else "nouserns")
        v.uuid = ctl.create(v.name, v.userns)

    def one_round(measured: bool) -> None:
        for v in variants:
            try:
                c = ctl.cycle(v.uuid)
            except Exception:
                print("--- cmld log (tail) ---\n" + "\n".join(cmld.log_lines()[-30:]), file=sys.stderr)
                raise
            v.cycles.append(c)
        if runc is None:
            return
        for v in variants:
            assert v.bundle_true is not None and v.bundle_sleep is not None and v.bundle_init is not None
            t = runc.run_to_exit(v.bundle_true)
            cid, start = runc.run_detached(v.bundle_sleep)
            stop = runc.kill_delete(cid)
            cid, _ = runc.run_detached(v.bundle_init)
            poweroff = runc.poweroff_delete(cid)
            if measured:
                v.runc_true.durations.append(t)
                v.runc_start.durations.append(start)
                v.runc_stop.durations.append(stop)
                v.runc_poweroff.durations.append(poweroff)

    log("warm-up round (cmld formats each container's data image on its first start) ...")
    one_round(measured=False)
    for i in range(runs):
        log(f"round {i + 1}/{runs} ...")
        one_round(measured=True)
    if not cmld.alive():
        raise RuntimeError("cmld exited during the benchmark")

    rows: list[Row] = []
    for v in variants:
        measured = v.cycles[1:]
        reply = Sample([c.start_reply_ns for c in measured])
        running = Sample([c.start_running_ns for c in measured])
        stop = Sample([c.stop_ns for c in measured])
        rows += [
            Row.of(f"START -> reply (init exec'd), {v.label}", reply, f"runc run -d (create+start), {v.label}",
                   v.runc_start),
            Row.of(f"START -> RUNNING, {v.label}", running, f"runc run /bin/true, {v.label}", v.runc_true),
            Row.of(f"STOP -> STOPPED, {v.label}", stop, f"runc kill KILL + delete, {v.label}", v.runc_stop),
        ]
        if v.runc_poweroff.n:
            rows.append(Row.of(f"STOP -> STOPPED, {v.label}", stop,
                               f"runc kill USR1 (init halt) + delete, {v.label}", v.runc_poweroff))
    sections: list[tuple[str, list[tuple[str, Sample]]]] = []
    if want_profile:
        lines = cmld.log_lines()
        for v in variants:
            sections.append((v.label, profile(lines, v.name, v.cycles[1:], skip=1)))
    return rows, sections, runc_version


def measure_hash(tmp: Path, size_mb: int) -> list[Row]:
    path = tmp / "hash.bin"
    log(f"writing {size_mb} MiB of random data ...")
    try:
        write_random(path, size_mb << 20)
        log("hashing ...")
        ours, ref = bench_hash(path, HASH_REPS)
    finally:
        path.unlink(missing_ok=True)
    mb = size_mb * (1 << 20) / 1e6
    row = Row.of(f"SHA-256 {size_mb} MiB: cmld sha256_file", ours, "sha256sum (process)", ref)
    row.mb_per_s = mb / (ours.median_ns / 1e9)
    row.ref_mb_per_s = mb / (ref.median_ns / 1e9)
    return [row]


def run(runs: int, hash_mb: int, want_profile: bool) -> Result:
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="cml-bench-start-"))
        # Registered first, so it runs last: after cmld, runc and the control connection are gone.
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        stack.callback(release_leftovers, tmp)
        # runc with a user namespace maps container root to an unprivileged host uid, which must
        # be able to traverse to the unpacked rootfs (mkdtemp makes the directory 0700).
        tmp.chmod(0o755)
        inner = stack.enter_context(contextlib.ExitStack())
        rows, sections, runc_version = measure_containers(tmp, inner, runs, want_profile, notes)
        inner.close()  # stop cmld and remove runc containers before the hashing run
        hash_rows = measure_hash(tmp, hash_mb)
    return Result(rows, hash_rows, sections, runc_version, notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cmld container start/stop benchmark against runc, plus hashing")
    ap.add_argument("--runs", type=int, default=10, help="measured cycles per kind (default %(default)s)")
    ap.add_argument("--hash-size-mb", type=int, default=1024,
                    help="size of the random file hashed (MiB, default %(default)s)")
    ap.add_argument("--profile", action="store_true",
                    help="also print where cmld's time goes, from its log timestamps")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON to FILE")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.hash_size_mb < 1:
        ap.error("--runs and --hash-size-mb must be at least 1")
    if os.geteuid() != 0:
        print("container_start.py needs root (cmld and runc create namespaces, cgroups, mounts)",
              file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanups

    signal.signal(signal.SIGTERM, on_term)
    set_child_subreaper()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    src_dirty = bool(git("status", "--porcelain", "--", *PACKAGES))
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = time.monotonic()
    res = run(args.runs, args.hash_size_mb, args.profile)
    elapsed = time.monotonic() - t0

    print(f"cmld container start benchmark  {when.isoformat()}  commit {commit}"
          f"{' (src modified)' if src_dirty else ''}  {os.cpu_count()} CPUs  Python {platform.python_version()}"
          f"  kernel {platform.release()}  {res.runc_version or 'no runc'}  {args.runs} runs, {elapsed:.0f} s")
    print(timing_table(res.rows))
    print("ratio = median / reference median; > 1 means slower than runc.")
    print()
    print(hash_table(res.hash_rows))
    print("ratio = median time / reference median time; > 1 means slower than sha256sum.")
    for note in res.notes:
        print(f"note: {note}")
    if res.profile:
        print()
        print(profile_table(res.profile))

    if args.json:
        doc = {
            "date": when.isoformat(), "commit": commit, "src_modified": src_dirty, "cpus": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release(), "runc": res.runc_version,
            "runs": args.runs, "hash_size_mb": args.hash_size_mb, "elapsed_s": round(elapsed, 3),
            "results": [asdict(r) for r in res.rows], "hash": [asdict(r) for r in res.hash_rows],
            "profile": {title: [{"phase": label, "median_ns": s.median_ns, "p90_ns": s.p90_ns, "n": s.n}
                                for label, s in phases] for title, phases in res.profile},
            "notes": res.notes,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
