"""A real pcscd with the vpcd driver in a private network + mount namespace (machine.md §5):
the host's /run/pcscd and network are never touched. The card emulator runs in the same netns.
Everything is stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

EMULATOR = Path(__file__).with_name("vpcd_card.py")
SCRIPT = ("mount --make-rprivate / && mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/pcscd && "
          "ip link set lo up && { pcscd --foreground --info > \"$1/pcscd.log\" 2>&1 & echo $! > \"$1/pcscd.pid\"; "
          "wait; }")


def available() -> str | None:
    """Why the PC/SC stack cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces)"
    for tool in ("pcscd", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists():
        return "vsmartcard-vpcd is not installed"
    return None


@dataclass
class PcscNamespace:
    work: Path
    shell: subprocess.Popen[bytes] | None = None
    pcscd_pid: int = 0
    cards: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return Path(f"/proc/{self.pcscd_pid}/root/run/pcscd/pcscd.comm")

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.shell = subprocess.Popen(["unshare", "--net", "--mount", "--fork", "sh", "-c", SCRIPT, "sh",
                                       str(self.work)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        pidfile = self.work / "pcscd.pid"
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                self.pcscd_pid = int(pidfile.read_text())
                if self.socket.exists():
                    return
            if self.shell.poll() is not None:
                break
            time.sleep(0.02)
        log = (self.work / "pcscd.log").read_text(errors="replace") if (self.work / "pcscd.log").exists() else ""
        raise RuntimeError(f"pcscd did not come up: {log}")

    def insert_card(self, transport_pin: str = "648219") -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["nsenter", f"--net=/proc/{self.pcscd_pid}/ns/net", sys.executable, str(EMULATOR),
                              "--transport-pin", transport_pin], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert p.stdout is not None
        line = p.stdout.readline()
        if b"card inserted" not in line:
            p.kill()
            p.wait()
            raise RuntimeError("card emulator failed to connect to vpcd")
        self.cards.append(p)
        return p

    def remove_card(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.kill()
        p.wait(5)

    def stop(self) -> None:
        for p in self.cards:
            self.remove_card(p)
        if self.pcscd_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pcscd_pid, signal.SIGTERM)
        if self.shell is not None:
            try:
                self.shell.wait(10)
            except subprocess.TimeoutExpired:
                self.shell.kill()
                self.shell.wait(5)
