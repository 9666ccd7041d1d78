"""The attack arena: one cmld with an attacker container per user-namespace mode and a victim
container, on a small loop-mounted file system the suite makes, plus sacrificial host objects
(a sentinel process, a secret file, keys) that attacks may target.

Everything an attack could harm belongs to the arena: the cmld base directory, its logs and the
"host" files the attacks aim at live on the arena's own loop file system (so a BIND_FILE mount,
whose superblock an open_by_handle_at attack reaches, leads there and nowhere else; a container
filling a volume fills that file system, not the machine's disk); the host process the eBPF
attacks signal or read is the sentinel the arena started; the key the keyring attacks go for is
one the arena added. cmld runs in a session of its own (no controlling terminal), with a session
keyring of its own and the oom_score_adj of the systemd unit (-900).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cml_common.framing import parse, recv_frame, send_frame, serialize
from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file, to_text

from ..conftest import BIN, HOSTED_DEVICE_CONF, CliResult, Daemon, cli, wait_for_socket
from ..host.containers import container_conf, install_guestos, uuid_of

PROGS = Path(__file__).resolve().parent / "progs"
MODES = ("userns", "no-userns")
GUESTOS = "attackos"
ATK = "/opt/atk"
M = GuestOSMount
# Host settings an attack must not change (read before and after every attack).
WATCHED_SYSCTLS = ("kernel/core_pattern", "kernel/hostname", "kernel/domainname", "kernel/sysrq",
                   "kernel/pid_max", "kernel/perf_event_paranoid", "kernel/unprivileged_bpf_disabled",
                   "kernel/dmesg_restrict", "kernel/kptr_restrict", "fs/inotify/max_user_instances",
                   "fs/inotify/max_user_watches", "kernel/keys/root_maxkeys", "vm/mmap_min_addr",
                   "kernel/randomize_va_space")
WATCHED_MOUNTS = ("/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup")


class AttackSucceeded(AssertionError):
    """The attack did what it set out to do. Raised only with the evidence of that; an xfail
    mark for an open hole names this exception, so a test that breaks for any other reason
    fails instead of passing as "expected to fail"."""


@dataclass
class Outcome:
    verdict: str  # blocked | SUCCEEDED | done | error | none
    text: str
    output: str
    rc: int

    @property
    def notes(self) -> list[str]:
        return [ln[5:] for ln in self.output.splitlines() if ln.startswith("note ")]

    def evidence(self) -> str:
        extra = "; ".join(self.notes)
        return f"{self.text}" + (f" [{extra}]" if extra else "")


def parse_outcome(r: CliResult) -> Outcome:
    for line in reversed(r.out.splitlines()):
        if line.startswith("RESULT "):
            verdict, _, text = line[7:].partition(" ")
            return Outcome(verdict, text, r.out, r.rc)
    return Outcome("none", f"no RESULT line (rc {r.rc}): {r.out[-500:]} {r.err[-300:]}", r.out, r.rc)


def build_programs(out: Path) -> dict[str, Path]:
    """Compiles the attack program (static: the busybox guest has no libc) and the two host
    helpers. About two seconds."""
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, static in (("atk", True), ("sentinel", False), ("daemonwrap", False)):
        dst = out / name
        cmd = ["gcc", "-O2", "-Wall", "-o", str(dst), str(PROGS / f"{name}.c")]
        if static:
            cmd[1:1] = ["-static"]
            cmd.append("-lpthread")
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"gcc {name}.c: {p.stderr}")
        built[name] = dst
    return built


@dataclass
class LoopFs:
    """A small ext4 file system on a loop device, mounted at `mnt`, made and removed by us."""

    image: Path
    mnt: Path
    device: str = ""

    def create(self, size_mb: int) -> None:
        with self.image.open("wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(self.image)], check=True,
                       capture_output=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.device = subprocess.run(["losetup", "--find", "--show", str(self.image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", self.device, str(self.mnt)], check=True, capture_output=True)

    def used_bytes(self) -> int:
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def destroy(self) -> None:
        if self.device:
            for _ in range(50):
                p = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True, check=False)
                if p.returncode == 0 or "not mounted" in p.stderr:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", self.device], capture_output=True, check=False)
            self.device = ""
        self.image.unlink(missing_ok=True)


def ext4_image(img: Path, files: dict[str, bytes], mode: dict[str, int]) -> M:
    staging = img.with_suffix(".d")
    staging.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        if rel.endswith("/"):
            (staging / rel).mkdir(parents=True, exist_ok=True)
            continue
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
        (staging / rel).chmod(mode.get(rel, 0o644))
    size_kb = 1024 + sum(len(d) for d in files.values()) // 1024 * 2
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(staging), "-E", "root_owner=0:0", "-O", "^has_journal",
                    str(img), f"{size_kb}k"], check=True, capture_output=True)
    shutil.rmtree(staging)
    data = img.read_bytes()
    return M(image_file=img.stem, fs_type="ext4", image_size=len(data),
             image_sha2_256=hashlib.sha256(data).hexdigest())


def install_attackos(src: Path, base: Path, atk: Path) -> None:
    """The demo busybox GuestOS plus: the attack program on a SHARED image at /opt, and a
    BIND_FILE and a BIND_FILE_RW of files_shared/ onto files of that image (skipped by cmld for
    user-namespaced containers, as the original does)."""
    install_guestos(src, base, name=GUESTOS)
    conf_path = base / "operatingsystems" / f"{GUESTOS}-1.conf"
    cfg = load_text_file(conf_path, GuestOSConfig)
    img_dir = base / "operatingsystems" / f"{GUESTOS}-1"
    if not (img_dir / "attack.img").exists() or not (base / "files_shared").exists():
        opt = ext4_image(img_dir / "attack.img", {"atk": atk.read_bytes(), "bind-ro.txt": b"image ro\n",
                                                 "bind-rw.txt": b"image rw\n", "cache/": b""},
                         {"atk": 0o755})
        opt.mount_point, opt.mount_type = "/opt", M.SHARED
        cfg.mounts.extend([opt,
                           M(image_file="atk-ro.txt", mount_point="/opt/bind-ro.txt", fs_type="none",
                             mount_type=M.BIND_FILE),
                           M(image_file="atk-rw.txt", mount_point="/opt/bind-rw.txt", fs_type="none",
                             mount_type=M.BIND_FILE_RW)])
        for m in cfg.mounts:
            if m.mount_point == "/data":
                m.def_size = 32  # the disk-filling attack fills it
        conf_path.write_text(to_text(cfg))
        shared = base / "files_shared"
        shared.mkdir(exist_ok=True)
        (shared / "atk-ro.txt").write_text("shared with the host, read-only\n")
        (shared / "atk-rw.txt").write_text("shared with the host, writable\n")


def install_racyos(base: Path) -> None:
    """attackos with the attack image under a writable, persistent overlay (OVERLAY_RW /opt) and
    a tmpfs mounted at /opt/cache: a mount point inside a volume the container writes (the
    symlink attack tries to replace it for the next start)."""
    src = load_text_file(base / "operatingsystems" / f"{GUESTOS}-1.conf", GuestOSConfig)
    cfg = GuestOSConfig()
    cfg.CopyFrom(src)
    cfg.name = "racyos"
    del cfg.mounts[:]
    cfg.mounts.extend(m for m in src.mounts if m.mount_type not in (M.BIND_FILE, M.BIND_FILE_RW))
    cfg.mounts.extend([M(image_file="optrw", mount_point="/opt", fs_type="ext4", mount_type=M.OVERLAY_RW,
                         def_size=8, min_size=8, max_size=16),
                       M(image_file="cache", mount_point="/opt/cache", fs_type="tmpfs", mount_type=M.EMPTY,
                         def_size=1)])
    dst = base / "operatingsystems" / "racyos-1"
    dst.mkdir(exist_ok=True)
    for img in (base / "operatingsystems" / f"{GUESTOS}-1").glob("*.img"):
        if not (dst / img.name).exists():
            os.link(img, dst / img.name)
    (base / "operatingsystems" / "racyos-1.conf").write_text(to_text(cfg))


def control_status(sock: Path, timeout: float = 10.0) -> dict[str, str]:
    """name -> state over the control socket, without spawning a CLI (fast health check)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        send_frame(s, serialize(ControllerToDaemon(command=ControllerToDaemon.GET_CONTAINER_STATUS)))
        body = recv_frame(s)
    if body is None:
        raise AssertionError("cmld closed the control connection without an answer")
    reply = parse(DaemonToController, body)
    return {c.name: ContainerState.Name(c.state) for c in reply.container_status}


def wait_for_state(d: Daemon, name: str, want: str, timeout: float = 30) -> None:
    """Polls the state over the control socket (no CLI process per poll)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = control_status(d.socket).get(name)
        if last == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed {last}, wanted {want}")


def mount_options(points: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] in points:
            found[f[4]] = f"{f[5]} {line.split(' - ')[1]}"
    return found


def sysctls() -> dict[str, str]:
    vals = {}
    for name in WATCHED_SYSCTLS:
        try:
            vals[name] = Path("/proc/sys", name).read_text()
        except OSError as e:
            vals[name] = f"<{e.strerror}>"
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    vals["binfmt_misc entries"] = " ".join(sorted(p.name for p in binfmt.iterdir())) if binfmt.is_dir() else ""
    return vals


NS_KINDS = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time")


def ns_inodes(pid: int | str = "self") -> list[int]:
    return [os.stat(f"/proc/{pid}/ns/{k}").st_ino for k in NS_KINDS]


@dataclass
class Sentinel:
    """A sacrificial host process: holds a secret, writes it to /dev/null every 20 ms, logs the
    signals it gets. Dies with the test process (PR_SET_PDEATHSIG)."""

    proc: subprocess.Popen[bytes]
    pid: int
    addr: str
    secret: str
    siglog: Path

    @classmethod
    def start(cls, prog: Path, siglog: Path) -> Sentinel:
        secret = "sentinel-secret-" + secrets.token_hex(6)
        siglog.write_text("")
        proc = subprocess.Popen([str(prog), secret, str(siglog), "3600"], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        pid, addr = proc.stdout.readline().decode().split()
        return cls(proc, int(pid), addr, secret, siglog)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def host_caps() -> int:
    """The test process's effective capabilities (some machines' root lacks CAP_SYS_RESOURCE)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


CAP_SYS_RESOURCE = 24
# The systemd unit's OOMScoreAdjust. Lowering it needs CAP_SYS_RESOURCE; where root lacks that,
# cmld gets a positive value instead, which shows the inheritance just as well.
DAEMON_OOM_ADJ = "-900" if host_caps() >> CAP_SYS_RESOURCE & 1 else "500"


def start_cmld(tmp: Path, base: Path, wrap: Path, *extra: str, name: str = "cmld", ctty: str | None = None,
               key: tuple[str, str] | None = None, oom: str = DAEMON_OOM_ADJ) -> Daemon:
    """cmld in the foreground through daemonwrap: new session (or `ctty` as its terminal), own
    session keyring with `key`, the unit's oom_score_adj. Stopped by PID."""
    sock = tmp / f"{name}.sock"
    log_dir = base.parent / f"{name}-logs"
    run_dir = tmp / f"{name}-run"
    netns_dir = tmp / f"{name}-netns"
    netns_dir.mkdir(parents=True, exist_ok=True)
    if not (base / "device.conf").exists():
        (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    cmd = [str(wrap)]
    if ctty:
        cmd += ["--ctty", ctty]
    if key:
        cmd += ["--key", *key]
    cmd += ["--oom", oom, "--", str(BIN / "cmld"), "--foreground", "--base-dir", str(base), "--socket", str(sock),
            "--log-dir", str(log_dir), "--scd-socket", str(tmp / "scd.sock"), "--tpm2d-socket",
            str(tmp / "tpm2d.sock"), "--run-dir", str(run_dir), "--netns-dir", str(netns_dir), *extra]
    stderr_file = tmp / f"{name}.stderr"
    with stderr_file.open("ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd="/")
    d = Daemon(proc, sock, base, log_dir)
    try:
        wait_for_socket(sock, proc, stderr_file=stderr_file, timeout=30)
    except BaseException:
        stop_daemon(d)
        raise
    return d


def stop_daemon(d: Daemon, timeout: float = 30) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait(10)


def log_size(d: Daemon) -> int:
    return sum(p.stat().st_size for p in d.log_dir.glob("cml-*.2*"))


def host_leftovers(run_dir: Path, netns_dir: Path, uuids: list[str]) -> list[str]:
    """What containers of a stopped cmld left on the host (cgroups, netns bindings, mounts)."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    for u in uuids:
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            found += [f"cgroup {p}" for p in ctrl.glob(f"**/{u}")]
        if (netns_dir / u).exists():
            found.append(f"netns {netns_dir / u}")
        if any(u in line.split()[4] and str(netns_dir) not in line.split()[4] for line in mounts.splitlines()):
            found.append(f"mount of {u}")
        if (run_dir / "records" / f"{u}.json").exists():
            found.append(f"record {u}")
    return found


def clean_leftovers(run_dir: Path, netns_dir: Path, uuids: list[str]) -> None:
    """Removes what host_leftovers finds: kills what still runs in the groups, removes them,
    unmounts the netns bindings."""
    for u in uuids:
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            for grp in sorted(ctrl.glob(f"**/{u}"), key=lambda p: -len(p.parts)):
                for sub in [*sorted(grp.rglob("*"), key=lambda p: -len(p.parts)), grp]:
                    if not sub.is_dir():
                        continue
                    with contextlib.suppress(OSError):
                        for pid in (sub / "cgroup.procs").read_text().split():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(int(pid), signal.SIGKILL)
                    for _ in range(50):
                        try:
                            sub.rmdir()
                            break
                        except FileNotFoundError:
                            break
                        except OSError:
                            time.sleep(0.05)
        ns = netns_dir / u
        if ns.exists():
            subprocess.run(["umount", "-l", str(ns)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                ns.unlink()


@dataclass
class Arena:
    tmp: Path
    guestos_src: Path
    progs: dict[str, Path] = field(default_factory=dict)
    fs: LoopFs | None = None
    cmld: Daemon | None = None
    sentinel: Sentinel | None = None
    attackers: dict[str, str] = field(default_factory=dict)
    victim: str = "victim"
    victim_pid: int = 0
    victim_uuid: str = ""
    canary: str = ""
    cmld_key: tuple[str, str] = ("", "")
    host_secret: str = ""
    host_file_text: str = ""
    baseline: dict[str, object] = field(default_factory=dict)
    throwaways: int = 0
    victim_sleeper: tuple[int, int, str, str] = (0, 0, "", "")  # host pid, its pid in the victim, addr, secret
    caps_cache: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ set-up

    @property
    def root(self) -> Path:
        assert self.fs is not None
        return self.fs.mnt

    @property
    def base(self) -> Path:
        return self.root / "cmld-base"

    @property
    def hostdir(self) -> Path:
        """The host's files on the arena file system (the targets of the file attacks)."""
        return self.root / "host"

    @property
    def run_dir(self) -> Path:
        return self.tmp / "cmld-run"

    @property
    def netns_dir(self) -> Path:
        return self.tmp / "cmld-netns"

    @property
    def d(self) -> Daemon:
        assert self.cmld is not None
        return self.cmld

    def setup(self) -> None:
        self.progs = build_programs(self.tmp / "bin")
        self.fs = LoopFs(self.tmp / "arena.img", self.tmp / "arena")
        self.fs.create(768)
        self.hostdir.mkdir()
        self.host_secret = "host-secret-" + secrets.token_hex(8)
        (self.hostdir / "secret.txt").write_text(self.host_secret + "\n")
        (self.hostdir / "secret.txt").chmod(0o600)
        self.host_file_text = "host file, keep me " + secrets.token_hex(8) + "\n"
        (self.hostdir / "victim.txt").write_text(self.host_file_text)
        self.base.mkdir()
        install_attackos(self.guestos_src, self.base, self.progs["atk"])
        install_racyos(self.base)
        self.sentinel = Sentinel.start(self.progs["sentinel"], self.tmp / "sentinel.signals")
        self.cmld_key = ("atk-cmld-key", "cmld-secret-" + secrets.token_hex(8))
        self.cmld = start_cmld(self.tmp, self.base, self.progs["daemonwrap"], "--stop-timeout", "5",
                               "--pids-max", "256", key=self.cmld_key)
        for mode, name in (("userns", "atk-u"), ("no-userns", "atk-n")):
            self.create(name, userns=(mode == "userns"), ram_limit=96)
            self.attackers[mode] = name
        self.create(self.victim, userns=True, ram_limit=64)
        for name in (*self.attackers.values(), self.victim):
            r = cli(self.d.socket, "start", name)
            assert r.rc == 0, f"start {name}: {r.out} {r.err}"
        for name in (*self.attackers.values(), self.victim):
            wait_for_state(self.d, name, "RUNNING", timeout=30)
        self.victim_uuid = uuid_of(self.d, self.victim)
        self.victim_pid = self.init_pid(self.victim_uuid)
        self.canary = "victim-canary-" + secrets.token_hex(8)
        self.exec(self.victim, "sh", "-c", f"echo {self.canary} > /data/canary && sync")
        secret = "victim-secret-" + secrets.token_hex(6)
        r = self.exec(self.victim, "sh", "-c", f"{ATK} sleeper {secret} >/tmp/sleeper.out 2>&1 </dev/null &")
        assert r.rc == 0, r.out + r.err
        out = Path(f"/proc/{self.victim_pid}/root/tmp/sleeper.out")
        for _ in range(100):
            if out.exists() and out.read_text().strip():
                break
            time.sleep(0.05)
        f = out.read_text().split()
        self.victim_sleeper = (self.find_host_pid(rf"atk sleeper {secret}"), int(f[2]), f[4], secret)
        self.baseline = {"sysctls": sysctls(), "mounts": mount_options(WATCHED_MOUNTS),
                         "hostname": os.uname().nodename, "ns": ns_inodes()}

    def teardown(self) -> None:
        try:
            if self.cmld is not None:
                stop_daemon(self.cmld)
        finally:
            if self.sentinel is not None:
                self.sentinel.stop()
            uuids = [p.name for p in (self.base / "containers").iterdir() if p.is_dir()] \
                if self.fs is not None and (self.base / "containers").is_dir() else []
            clean_leftovers(self.run_dir, self.netns_dir, uuids)
            if self.fs is not None:
                self.fs.destroy()

    def create(self, name: str, *, userns: bool, guestos: str = GUESTOS, d: Daemon | None = None,
               **fields: object) -> str:
        conf = self.tmp / f"{name}.conf"
        conf.write_text(container_conf(name, guestos, userns=userns, **fields))
        r = cli((d or self.d).socket, "create", str(conf))
        assert r.rc == 0, f"create {name}: {r.out} {r.err}"
        return name

    def stop_container(self, name: str, d: Daemon | None = None, timeout: float = 20) -> str:
        """stop, then wait for STOPPED; returns what happened (for the evidence)."""
        d = d or self.d
        r = cli(d.socket, "stop", name, timeout=timeout)
        try:
            wait_for_state(d, name, "STOPPED", timeout=timeout)
        except AssertionError:
            return f"stop answered {r.out.strip().splitlines()[-1] if r.out.strip() else r.err.strip()}, " \
                   f"state stays {control_status(d.socket).get(name)}"
        return "STOPPED"

    def start_container(self, name: str, d: Daemon | None = None) -> str:
        d = d or self.d
        r = cli(d.socket, "start", name, timeout=60)
        text = " ".join(r.out.split())
        if r.rc != 0:
            return f"refused: {text} {r.err.strip()}"
        wait_for_state(d, name, "RUNNING", timeout=30)
        return "RUNNING"

    def uuid(self, name: str, d: Daemon | None = None) -> str:
        return uuid_of(d or self.d, name)

    def cli(self, d: Daemon, *args: str, timeout: float = 60) -> CliResult:
        return cli(d.socket, *args, timeout=timeout)

    def init_pid(self, uuid: str, run_dir: Path | None = None) -> int:
        import json

        rec = json.loads(((run_dir or self.run_dir) / "records" / f"{uuid}.json").read_text())
        return int(rec["init_pid"])

    # ------------------------------------------------------------------ running attacks

    def exec(self, container: str, *argv: str, timeout: float = 60, d: Daemon | None = None) -> CliResult:
        return cli((d or self.d).socket, "run", container, "nopty", *argv, timeout=timeout)

    def attack(self, mode_or_container: str, *argv: str, timeout: float = 60, d: Daemon | None = None) -> Outcome:
        """Runs `/opt/atk ARGV` as root of the attacker container of that mode (or of the named
        container) and returns its outcome."""
        name = self.attackers.get(mode_or_container, mode_or_container)
        return parse_outcome(self.exec(name, ATK, *argv, timeout=timeout, d=d))

    def attacker_pid(self, mode: str) -> int:
        return self.init_pid(uuid_of(self.d, self.attackers[mode]))

    @contextlib.contextmanager
    def throwaway(self, mode: str, guestos: str = GUESTOS, **fields: object) -> Iterator[str]:
        """A fresh container of that mode for an attack that damages its own container (a
        remount, a forged file, killing its processes); removed afterwards."""
        self.throwaways += 1
        name = f"tw{self.throwaways}-{'u' if mode == 'userns' else 'n'}"
        self.create(name, userns=(mode == "userns"), guestos=guestos, **fields)
        try:
            r = cli(self.d.socket, "start", name)
            assert r.rc == 0, f"start {name}: {r.out} {r.err}"
            wait_for_state(self.d, name, "RUNNING", timeout=30)
            yield name
        finally:
            cli(self.d.socket, "remove", name, timeout=60)

    @contextlib.contextmanager
    def dedicated(self, name: str, *extra: str, ctty: str | None = None) -> Iterator[Daemon]:
        """A cmld of its own for an attack that would break the arena's (a container stuck for
        good) or needs a different daemon (one on a terminal). Its leftovers are cleaned up."""
        base = self.root / f"{name}-base"
        base.mkdir()
        subprocess.run(["cp", "-al", str(self.base / "operatingsystems"), str(base / "operatingsystems")], check=True)
        shutil.copytree(self.base / "files_shared", base / "files_shared")
        d = start_cmld(self.tmp, base, self.progs["daemonwrap"], *(extra or ("--stop-timeout", "3")), name=name,
                       ctty=ctty, key=(f"atk-{name}-key", secrets.token_hex(8)))
        try:
            yield d
        finally:
            stop_daemon(d)
            uuids = [p.name for p in (base / "containers").iterdir() if p.is_dir()] \
                if (base / "containers").is_dir() else []
            clean_leftovers(self.tmp / f"{name}-run", self.tmp / f"{name}-netns", uuids)
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(base.parent / f"{name}-logs", ignore_errors=True)

    def caps(self, mode: str) -> str:
        """The attacker's /proc/self/status capability lines and uid map (read once per mode)."""
        if mode not in self.caps_cache:
            out = self.attack(mode, "whoami")
            assert out.verdict == "done", out.output
            self.caps_cache[mode] = out.output
        return self.caps_cache[mode]

    # ------------------------------------------------------------------ is everything else intact?

    def check_unaffected(self, *, victim_key: bool = False) -> None:
        """The daemon answers, the victim container still runs with its data, and the host's
        files, processes, settings and mounts are as they were."""
        assert self.cmld is not None and self.cmld.alive(), "cmld died"
        states = control_status(self.d.socket)
        assert states.get(self.victim) == "RUNNING", f"victim is {states.get(self.victim)}"
        for name in self.attackers.values():
            assert states.get(name) in ("RUNNING", "REBOOTING", "STARTING", "BOOTING"), (name, states.get(name))
        assert Path(f"/proc/{self.victim_pid}").exists(), "victim's init is gone"
        assert self.init_pid(self.victim_uuid) == self.victim_pid, "victim was restarted"
        canary = Path(f"/proc/{self.victim_pid}/root/data/canary").read_text().strip()
        assert canary == self.canary, f"victim's data changed: {canary!r}"
        assert self.sentinel is not None
        assert self.sentinel.alive(), f"host sentinel process died: {self.sentinel.proc.returncode}"
        got = self.sentinel.siglog.read_text()
        assert not got, f"host sentinel received signals: {got!r}"
        assert (self.hostdir / "secret.txt").read_text().strip() == self.host_secret, "host secret changed"
        assert (self.hostdir / "victim.txt").read_text() == self.host_file_text, "host file changed"
        assert sysctls() == self.baseline["sysctls"], "host settings changed"
        assert mount_options(WATCHED_MOUNTS) == self.baseline["mounts"], "host mounts changed"
        assert os.uname().nodename == self.baseline["hostname"], "host name changed"
        assert ns_inodes() == self.baseline["ns"], "the test process's namespaces changed"
        assert not [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                    if str(self.hostdir) in ln.split()[4]], "something is mounted on the host's files"
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
        assert fd >= 0, f"root on the host cannot make an inotify instance: {os.strerror(ctypes.get_errno())}"
        os.close(fd)

    def restore_sentinel(self) -> None:
        """A new sentinel after an attack that killed or signalled it (xfail path)."""
        assert self.sentinel is not None
        self.sentinel.stop()
        self.sentinel = Sentinel.start(self.progs["sentinel"], self.tmp / "sentinel.signals")

    def find_host_pid(self, pattern: str) -> int:
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if re.search(pattern, (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")):
                    return int(p.name)
        raise AssertionError(f"no host process matches {pattern}")
