"""The host side of the arena: the sacrificial objects attacks may target (a loop file system, a
sentinel process) and the host state every attack must leave as it was (settings, mounts,
namespaces)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Host settings an attack must not change (read before and after every attack).
WATCHED_SYSCTLS = ("kernel/core_pattern", "kernel/hostname", "kernel/domainname", "kernel/sysrq",
                   "kernel/pid_max", "kernel/perf_event_paranoid", "kernel/unprivileged_bpf_disabled",
                   "kernel/dmesg_restrict", "kernel/kptr_restrict", "fs/inotify/max_user_instances",
                   "fs/inotify/max_user_watches", "kernel/keys/root_maxkeys", "vm/mmap_min_addr",
                   "kernel/randomize_va_space")
WATCHED_MOUNTS = ("/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup")
NS_KINDS = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time")
CAP_SYS_RESOURCE = 24


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
