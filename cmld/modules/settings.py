"""Runtime options of cmld that apply to every container."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BOOT_TIMEOUT = 800.0  # s, BOOTING -> killed if the service never reports (original value)
STOP_TIMEOUT = 45.0  # s, SHUTDOWN -> SIGKILL
FREEZE_TIMEOUT = 5.0  # s, FREEZING -> back to RUNNING
DEFAULT_PIDS_MAX = 2048


@dataclass
class RuntimeSettings:
    base_dir: Path
    run_dir: Path
    containers_dir: Path
    guestos_dir: Path
    shared_files_dir: Path
    netns_dir: Path = Path("/run/netns")
    hosted: bool = True
    # device.conf signed_configs: a container runs exactly the GuestOS version its config pins.
    signed_configs: bool = False
    boot_timeout: float = BOOT_TIMEOUT
    stop_timeout: float = STOP_TIMEOUT
    freeze_timeout: float = FREEZE_TIMEOUT
    pids_max: int = DEFAULT_PIDS_MAX
    host_dns: str = ""
    cservice: Path | None = None  # the in-container service binary placed at /sbin/cservice
    cservice_note: str = ""  # why there is none
    # tpm2d's socket when device.conf has tpm_enabled: every GuestOS image is measured into
    # PCR 11 before its container runs; None: no TPM, nothing measured.
    tpm2d_socket: Path | None = None
    # Why container volumes cannot use device-mapper here ("" where they can): without it, writable
    # volumes are plain and GuestOS images are hashed in full instead of opened with dm-verity.
    crypt_unavailable: str = "not checked"
    # Refuse to start a container whose writable volumes would not be encrypted (a device policy).
    require_encryption: bool = False
    sysfs: Path = Path("/sys")  # where USB devices are looked up (a fixture tree in tests)
    uevent_netns: str | None = None  # listen for uevents there instead of cmld's netns (see usb_hub)
    # Link kinds counted as physical NICs besides real hardware (tests and VMs: "veth").
    nic_kinds: frozenset[str] = frozenset()
