"""Boots the image once under QEMU with OVMF (measured boot) and an swtpm TPM 2.0, a fresh data
disk and a 9p share, and waits for the guest to power itself off.

Everything lives in one temp dir; swtpm and QEMU are stopped by PID and the temp dir removed on
every path (pass, fail, timeout, KeyboardInterrupt). Only the serial console log is kept, at the
path the caller gives (a CI artefact).

A boot may forward guest TCP ports to the host (QEMU user networking, `restrict=on`: the guest
reaches nothing; only `hostfwd` on 127.0.0.1 reaches the guest) and run a host-side agent in a
thread while the guest runs; the agent talks to the guest's checks through files on the share.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import accel, procs
from .image import Image
from .tools import ToolError, run

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GUEST_CHECKS = Path(__file__).resolve().parent.parent / "guest" / "vmcheck"
DATA_DISK = "1G"


@dataclass
class Boot:
    """What one boot left: the guest's results (None if it wrote none), console and timings."""

    results: dict[str, Any] | None
    console_path: Path
    seconds: float
    qemu_status: int | None
    timed_out: bool
    accel: str
    work: Path  # the temp dir, removed when boot() returns
    pids: list[int]  # swtpm and QEMU, stopped when boot() returns
    agent_result: Any = None  # what the host agent returned
    agent_error: str = ""  # or why it failed
    forwarded: dict[int, int] = field(default_factory=dict)  # guest port -> host port on 127.0.0.1
    run_seconds: list[float] = field(default_factory=list)  # wall time of each QEMU run (boot), in order

    @property
    def console(self) -> str:
        return self.console_path.read_text(errors="replace") if self.console_path.exists() else ""

    def console_tail(self, lines: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


def setup_swtpm(work: Path) -> None:
    """A new TPM (EK and platform certificates): once per scenario, its state kept over reboots."""
    state = work / "tpm"
    state.mkdir()
    run(["swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert", "--create-platform-cert",
         "--lock-nvram", "--pcr-banks", "sha256", "--overwrite"], timeout=120)


def start_swtpm(work: Path) -> subprocess.Popen[bytes]:
    """swtpm on the TPM state of `work` (it ends with QEMU: --terminate); each start is a power-on."""
    sock = work / "swtpm.sock"
    sock.unlink(missing_ok=True)
    log = (work / "swtpm.log").open("ab")
    with log:
        proc = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={work / 'tpm'}",
                                 "--ctrl", f"type=unixio,path={sock}", "--terminate"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            procs.stop(proc)
            raise ToolError(f"swtpm did not come up: {(work / 'swtpm.log').read_text(errors='replace')}")
        time.sleep(0.02)
    return proc


Agent = Callable[[Path, dict[int, int], threading.Event], Any]


RELAY = Path(__file__).resolve().parent / "relay.py"


@dataclass(frozen=True)
class ExtraNic:
    """A further virtio NIC on its own user network (`restrict=on`): the guest reaches exactly
    the `guestfwd` target, e.g. "tcp:10.0.3.100:8080-cmd:..." (see `to_host_port`)."""

    mac: str
    net: str
    guestfwd: str

    @classmethod
    def to_host_port(cls, mac: str, net: str, guest_addr: str, guest_port: int, host_port: int) -> ExtraNic:
        """The guest's connections to guest_addr:guest_port reach 127.0.0.1:host_port on the host,
        one host connection each, closes passed on both ways (relay.py says why not `tcp:`)."""
        for path in (sys.executable, str(RELAY)):
            if "," in path or any(c.isspace() for c in path):
                raise ToolError(f"{path}: QEMU's guestfwd command cannot name this path (comma or space)")
        return cls(mac, net, f"tcp:{guest_addr}:{guest_port}-cmd:{sys.executable} {RELAY} {host_port}")


def net_argv(forwards: dict[int, int], extra: tuple[ExtraNic, ...] = ()) -> list[str]:
    argv = []
    if forwards:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in sorted(forwards.items()))
        argv += ["-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0"]
    for i, nic in enumerate(extra, 1):
        argv += ["-netdev", f"user,id=x{i},restrict=on,net={nic.net},guestfwd={nic.guestfwd}",
                 "-device", f"virtio-net-pci,netdev=x{i},mac={nic.mac}"]
    return argv


def qemu_argv(image: Image, work: Path, console: Path, acc: str, memory_mb: int, smp: int,
              forwards: dict[int, int] | None = None, extra_nics: tuple[ExtraNic, ...] = (),
              boot_disk: bool = False) -> list[str]:
    """A guest reboot ends QEMU (-no-reboot), as a kernel panic does (panic=-1): `boot` starts it
    again where a scenario has more boots. The console is appended to over those boots.
    With `boot_disk` the firmware's boot manager starts the guest from the third virtio disk's
    ESP (`work/boot.qcow2`, see bootdisk.py) by its boot entries, instead of `-kernel`."""
    if boot_disk:
        start = ["-drive", f"file={work / 'boot.qcow2'},format=qcow2,if=virtio,cache=unsafe"]
    else:
        start = ["-kernel", str(image.vmlinuz), "-initrd", str(image.initrd),
                 "-append", "console=ttyS0 panic=-1 loglevel=4 cml.share=1 systemd.show_status=1"]
    return [
        "qemu-system-x86_64", *net_argv(forwards or {}, extra_nics),
        "-accel", acc, "-machine", "q35", "-m", str(memory_mb), "-smp", str(smp),
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        "-chardev", f"file,id=con,path={console},append=on", "-serial", "chardev:con",
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={work / 'vars.fd'}",
        "-chardev", f"socket,id=chrtpm,path={work / 'swtpm.sock'}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        "-drive", f"file={work / 'root.qcow2'},format=qcow2,if=virtio,cache=unsafe",
        "-drive", f"file={work / 'data.img'},format=raw,if=virtio,cache=unsafe",
        "-virtfs", f"local,path={work / 'share'},mount_tag=host0,security_model=none,id=host0",
        *start,
    ]


def prepare_share(share: Path, scenario: dict[str, Any], overlay: Path | None, extra: Path | None = None) -> None:
    """The checks, the scenario, the overlay stage 1 copies over the root at every boot, and
    `extra` files the checks read from `<share>/extra` (e.g. updates to push)."""
    shutil.copytree(GUEST_CHECKS, share / "vmcheck", ignore=shutil.ignore_patterns("__pycache__"))
    (share / "scenario.json").write_text(json.dumps(scenario))
    if overlay is not None:
        shutil.copytree(overlay, share / "overlay", symlinks=True)
    if extra is not None:
        shutil.copytree(extra, share / "extra", symlinks=True)


def boot(image: Image, scenario: dict[str, Any], console: Path, *, overlay: Path | None = None,
         timeout: float = 600, memory_mb: int = 1536, smp: int = 2, tmp_base: Path | None = None,
         forwards: dict[int, int] | None = None, agent: Agent | None = None,
         extra_nics: tuple[ExtraNic, ...] = (), boot_disk: Path | None = None,
         extra_share: Path | None = None) -> Boot:
    """Boot once, run `scenario` (see guest/vmcheck/run.py) in the guest, return its results.
    `forwards` maps guest TCP ports to host ports on 127.0.0.1; `agent(share, forwards, stop)`
    runs in a thread while the guest is up (stop is set when QEMU has exited). `boot_disk`: a
    disk with an ESP (bootdisk.py) the firmware boots from, written by the guest through a
    copy-on-write layer kept over the scenario's reboots, as vars.fd and the TPM state are.
    `scenario["reboots_first"]`: how many times the guest reboots on its own before its checks
    start (e.g. cmld's A/B set-up); QEMU is started again after each. `scenario["failed_boots"]`:
    boots between two check lists that end before any check (a kernel update that panics)."""
    console.parent.mkdir(parents=True, exist_ok=True)
    console.unlink(missing_ok=True)
    acc = accel.choose()
    work = Path(tempfile.mkdtemp(prefix="cml-vm-", dir=tmp_base))
    swtpm: subprocess.Popen[bytes] | None = None
    qemu: subprocess.Popen[bytes] | None = None
    pids: list[int] = []
    t0 = time.monotonic()
    try:
        (work / "share").mkdir()
        prepare_share(work / "share", scenario, overlay, extra_share)
        shutil.copyfile(OVMF_VARS, work / "vars.fd")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image.disk, work / "root.qcow2"])
        # The system data volume's disk: raw and sparse (cml-sysdata setup formats it as LUKS2).
        run(["qemu-img", "create", "-q", "-f", "raw", work / "data.img", DATA_DISK])
        if boot_disk is not None:
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", boot_disk, work / "boot.qcow2"])
        setup_swtpm(work)
        stop = threading.Event()
        agent_out: dict[str, Any] = {}

        def run_agent() -> None:
            assert agent is not None
            try:
                agent_out["result"] = agent(work / "share", dict(forwards or {}), stop)
            except Exception as e:
                agent_out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"

        thread = threading.Thread(target=run_agent, daemon=True) if agent is not None else None
        timed_out = False
        status: int | None = None
        boots = 1 + len(scenario.get("after_reboot") or [])
        reboots_first = int(scenario.get("reboots_first", 0))
        failed_boots = int(scenario.get("failed_boots", 0))  # boots expected to die before any check (a panic)
        # A guest reboot ends QEMU; the next boot is a power cycle on the same disks, firmware
        # variables and TPM state (PCRs reset), started here (OVMF under TCG did not come back from
        # a warm reset). At most one boot more than the scenario has: one to settle a check an
        # unexpected reboot interrupted.
        run_seconds: list[float] = []
        for n in range(reboots_first + boots + failed_boots + 1):
            t_run = time.monotonic()
            swtpm = start_swtpm(work)
            pids.append(swtpm.pid)
            # The host port forwards only on the first boot: a connection the agent made leaves the
            # port in TIME_WAIT, and QEMU cannot bind it again (it exits at once).
            with (work / "qemu.log").open("ab") as qlog:
                qemu = subprocess.Popen(qemu_argv(image, work, console, acc, memory_mb, smp,
                                                  forwards if n == 0 else None, extra_nics,
                                                  boot_disk is not None),
                                        stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
            pids.append(qemu.pid)
            if thread is not None and n == 0:
                thread.start()
            try:
                status = qemu.wait(max(1.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                timed_out = True
                status = None
                break
            run_seconds.append(round(time.monotonic() - t_run, 1))
            procs.stop(swtpm)
            results_now = work / "share" / "results.json"
            if status == 0 and n < reboots_first and not results_now.exists():
                continue  # the guest rebooted before its checks, as the scenario expects
            if status != 0 or boots == 1 or not results_now.exists():
                break
            so_far = json.loads(results_now.read_text())
            if so_far.get("boot", 0) + 1 >= boots and not any(c.get("running") for c in so_far["checks"].values()):
                break
        stop.set()
        if thread is not None:
            thread.join(60)
        seconds = time.monotonic() - t0
        qemu_err = (work / "qemu.log").read_text(errors="replace").strip()
        if status not in (0, None) and not (work / "share" / "results.json").exists():
            raise ToolError(f"qemu-system-x86_64 exited with {status}: {qemu_err}")
        results_file = work / "share" / "results.json"
        results = json.loads(results_file.read_text()) if results_file.exists() else None
        if results is not None and status not in (0, None):
            # a later boot of the scenario failed to start: the checks after it did not run
            results["host_error"] = f"qemu-system-x86_64 exited with {status}: {qemu_err[-2000:]}"
        return Boot(results, console, seconds, status, timed_out, acc, work, pids,
                    agent_out.get("result"), agent_out.get("error", ""), dict(forwards or {}), run_seconds)
    finally:
        if qemu is not None:
            procs.stop(qemu)
        if swtpm is not None:
            procs.stop(swtpm)
        shutil.rmtree(work, ignore_errors=True)
