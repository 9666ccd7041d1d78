"""`<base>/sysdata.conf` (JSON, ours): written last by `cml-sysdata setup`, so a device has a system
data volume exactly when this file exists. It names the device and its LUKS UUID (checked before
every open: a swapped disk is refused) and the sealed object tpm2d keeps the volume's secret in.
Nothing in it is secret."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cml_common.fsutil import write_atomic

NAME = "sysdata.conf"
DIRS = ("containers", "keys")
SEAL_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
LUKS_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class SysdataConfig:
    device: str  # the block device (or image file) holding the LUKS2 volume
    luks_uuid: str
    seal_name: str  # tpm2d's sealed object holding the volume's secret
    dirs: tuple[str, ...] = field(default=DIRS)  # under the base dir, bound from the volume

    def save(self, base: Path) -> None:
        write_atomic(base / NAME, (json.dumps(asdict(self), indent=1) + "\n").encode(), mode=0o600)


def load(base: Path) -> SysdataConfig | None:
    """None when the device has no system data volume; ConfigError for a damaged file."""
    path = base / NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        cfg = SysdataConfig(str(raw["device"]), str(raw["luks_uuid"]), str(raw["seal_name"]),
                            tuple(str(d) for d in raw.get("dirs", DIRS)))
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path}: missing or wrong field {e}") from e
    if not cfg.device.startswith("/") or not LUKS_UUID.match(cfg.luks_uuid) or not SEAL_NAME.match(cfg.seal_name):
        raise ConfigError(f"{path}: device, luks_uuid or seal_name is not valid")
    if not cfg.dirs or any(not re.fullmatch(r"[a-z][a-z0-9_-]*", d) for d in cfg.dirs):
        raise ConfigError(f"{path}: dirs must be plain directory names")
    return cfg
