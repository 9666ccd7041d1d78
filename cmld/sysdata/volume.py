"""The system data volume itself, through cryptsetup: LUKS2 with one keyslot whose passphrase is the
32-byte secret tpm2d unseals (high entropy, so PBKDF2 with few iterations, as systemd-cryptenroll
does for TPM keys: no 2 s Argon2 at every boot). Opened as `/dev/mapper/cml-sysdata`, mounted at
`<base>/sysdata` (nodev, nosuid, noexec), and each data directory of cmld bound from there over
`<base>/<dir>`. The secret travels on cryptsetup's stdin only."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from cmld import linux
from cmld.crypt import dm, tools
from cmld.crypt.tools import ToolError
from cmld.sysdata.config import SysdataConfig

DM_NAME = "cml-sysdata"
MOUNT_DIR = "sysdata"
LUKS_ARGS = ["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--cipher",
             "aes-xts-plain64", "--key-size", "512"]


def mount_point(base: Path) -> Path:
    return base / MOUNT_DIR


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def is_open() -> bool:
    return dm.find(DM_NAME) is not None


def luks_uuid(device: str) -> str:
    return tools.run(["cryptsetup", "luksUUID", device]).strip()


def format_volume(device: str, secret: bytes) -> str:
    """A new LUKS2 header (everything on `device` is lost); returns its UUID."""
    tools.run(["cryptsetup", "luksFormat", "--batch-mode", *LUKS_ARGS, "--key-file", "-", device], stdin=secret,
              timeout=600)
    return luks_uuid(device)


def unlock(cfg: SysdataConfig, secret: bytes) -> None:
    """/dev/mapper/cml-sysdata (skipped if it is there already)."""
    if is_open():
        return
    found = luks_uuid(cfg.device)
    if found != cfg.luks_uuid:
        raise ToolError(f"{cfg.device} holds LUKS volume {found}, not the system data volume {cfg.luks_uuid}")
    tools.run(["cryptsetup", "open", "--type", "luks2", "--key-file", "-", cfg.device, DM_NAME], stdin=secret)


def open_volume(cfg: SysdataConfig, base: Path, secret: bytes) -> None:
    """Unlock, mount and bind (each step skipped if done already)."""
    unlock(cfg, secret)
    mount(cfg, base)


def make_filesystem() -> None:
    tools.run(["mkfs.ext4", "-q", "-F", "-L", "cml-sysdata", str(dm.path(DM_NAME))], timeout=600)


def mount(cfg: SysdataConfig, base: Path) -> None:
    mnt = mount_point(base)
    mnt.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not is_mounted(mnt):
        linux.mount(str(dm.path(DM_NAME)), str(mnt), "ext4", linux.MS_NODEV | linux.MS_NOSUID | linux.MS_NOEXEC)
    for d in cfg.dirs:
        src, dst = mnt / d, base / d
        src.mkdir(mode=0o700, exist_ok=True)
        dst.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not is_mounted(dst):
            linux.mount(str(src), str(dst), None, linux.MS_BIND)


def close_volume(cfg: SysdataConfig, base: Path) -> None:
    """Unbind, unmount and lock; fails (nothing forced) while cmld or a container uses it."""
    for d in reversed(cfg.dirs):
        _umount(base / d)
    _umount(mount_point(base))
    if is_open():
        tools.run(["cryptsetup", "close", DM_NAME])


def _umount(path: Path) -> None:
    while is_mounted(path):
        try:
            linux.umount2(str(path))
        except OSError as e:
            why = os.strerror(e.errno or errno.EIO)
            raise ToolError(f"unmounting {path}: {why} (is cmld still running?)") from None


def erase(cfg: SysdataConfig) -> None:
    """Destroy every keyslot (cryptsetup erase): the volume's key is gone, recovery key or not.
    An open volume keeps working until it is closed or the device restarts."""
    tools.run(["cryptsetup", "erase", "--batch-mode", cfg.device])


def dirs_in_use(base: Path, dirs: tuple[str, ...]) -> list[str]:
    """Data directories that are not empty (setup refuses to hide data under the volume)."""
    busy = []
    for d in dirs:
        p = base / d
        with contextlib.suppress(FileNotFoundError):
            if any(p.iterdir()):
                busy.append(str(p))
    return busy
