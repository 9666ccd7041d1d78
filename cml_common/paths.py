"""Default locations and the on-disk layout under the base directory (inventory §1.5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = Path("/var/lib/cml")
DEFAULT_LOG_DIR = Path("/var/log/cml")
SOCKET_DIR = Path("/run/socket")
CONTROL_SOCKET = SOCKET_DIR / "cml-control"
SCD_SOCKET = SOCKET_DIR / "cml-scd_control"
TPM2D_SOCKET = SOCKET_DIR / "cml-tpm2d-control"

C0_UUID = "00000000-0000-0000-0000-000000000000"
SCD_UNIT_UUID = "00000000-0000-0000-0000-000000000001"
TPM2D_UNIT_UUID = "00000000-0000-0000-0000-000000000002"


@dataclass(frozen=True)
class Layout:
    """Every path cmld, scd and tpm2d keep under one base directory."""

    base: Path

    @property
    def device_conf(self) -> Path:
        return self.base / "device.conf"

    @property
    def provisioned_marker(self) -> Path:
        return self.base / "_cml_provisioned_"

    @property
    def containers(self) -> Path:
        return self.base / "containers"

    @property
    def guestos(self) -> Path:
        return self.base / "operatingsystems"

    @property
    def keys(self) -> Path:
        return self.base / "keys"

    @property
    def tokens(self) -> Path:
        return self.base / "tokens"

    @property
    def ca_dir(self) -> Path:
        return self.tokens / "ca"

    @property
    def localca_cert(self) -> Path:
        return self.tokens / "localca_rootca.cert"

    @property
    def shared(self) -> Path:
        return self.base / "shared"

    def container_conf(self, uuid: str) -> Path:
        return self.containers / f"{uuid}.conf"

    def container_dir(self, uuid: str) -> Path:
        return self.containers / uuid

    def container_key(self, uuid: str) -> Path:
        return self.keys / f"{uuid}.key"
