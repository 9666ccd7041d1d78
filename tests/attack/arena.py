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
import ctypes
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import CliResult, Daemon, cli
from ..host.containers import container_conf, uuid_of
from .daemon import clean_leftovers, control_status, start_cmld, stop_daemon, wait_for_state
from .guestos import ATK, GUESTOS, build_programs, install_attackos, install_installos, install_racyos
from .host import WATCHED_MOUNTS, LoopFs, Sentinel, mount_options, ns_inodes, sysctls
from .outcome import Outcome, parse_outcome

MODES = ("userns", "no-userns")


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
        install_installos(self.base)
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
        rec = json.loads(((run_dir or self.run_dir) / "records" / f"{uuid}.json").read_text())
        return int(rec["init_pid"])

    def init_pid_now(self, uuid: str) -> int | None:
        """The init PID while the container has one; None between a stop and the next start
        (cmld removes the record when it cleans up a stopped container)."""
        try:
            return self.init_pid(uuid)
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ running attacks

    def exec(self, container: str, *argv: str, timeout: float = 60, d: Daemon | None = None) -> CliResult:
        return cli((d or self.d).socket, "run", container, "nopty", *argv, timeout=timeout)

    def attack(self, mode_or_container: str, *argv: str, timeout: float = 60, d: Daemon | None = None) -> Outcome:
        """Runs `/opt/atk ARGV` as root of the attacker container of that mode (or of the named
        container) and returns its outcome."""
        name = self.attackers.get(mode_or_container, mode_or_container)
        return parse_outcome(self.exec(name, ATK, *argv, timeout=timeout, d=d))

    def victim_key(self, desc: str, payload: str) -> Outcome:
        """The victim container puts a key into its session keyring, if containers may use
        keyrings at all (the seccomp policy refuses add_key: then there is no key to steal, and
        the attack still has to be refused)."""
        setup = self.attack(self.victim, "keys_add", desc, payload)
        assert setup.verdict == "done" or "add_key: EPERM" in setup.text, setup.output
        return setup

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
    def dedicated(self, name: str, *extra: str, ctty: str | None = None,
                  device_conf: str | None = None) -> Iterator[Daemon]:
        """A cmld of its own for an attack that would break the arena's (a container stuck for
        good) or needs a different daemon (one on a terminal, another device.conf). Its leftovers
        are cleaned up."""
        base = self.root / f"{name}-base"
        base.mkdir()
        if device_conf is not None:
            (base / "device.conf").write_text(device_conf)
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

    def check_unaffected(self) -> None:
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
