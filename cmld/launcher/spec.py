"""What cmld tells the launcher to build: one JSON document per container start.

Modules in cmld fill a `LaunchSpec`; the launcher executes it. Keeping it plain data makes the
boundary between the privileged daemon and the process that becomes the container auditable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# Sync message codes on the cmld <-> launcher socket (as the original's GO/STOP/SUCCESS/ERROR).
MSG_SPEC = "spec"
MSG_PID = "pid"
MSG_GO = "go"
MSG_SUCCESS = "success"
MSG_ERROR = "error"

# Error kinds the child reports (subset of the original's enum compartment_error).
ERR_GENERIC = 1
ERR_VOL = 2
ERR_INPUT = 3
ERR_CGROUPS = 5
ERR_NET = 6
ERR_SERVICE = 7
ERR_USER = 9
ERR_TIME = 11
ERR_VOL_CORRUPTED = 14


@dataclass
class MountOp:
    """One mount in the container, in order. `kind`:
    image  - loop-mount `source` (a file) at `target`; read-only unless `readonly` is false
    overlay- overlayfs at `target`: `lower` images (top first) over the existing `target` dir when
             `over_existing`; writable with `upper_image` (ext4 image) or `upper_tmpfs`
    tmpfs  - a fresh tmpfs
    bind   - bind `source` (a host file or dir) at `target`
    """

    kind: str
    target: str
    source: str = ""
    fstype: str = ""
    readonly: bool = True
    data: str = ""
    lower: list[str] = field(default_factory=list)
    lower_fstype: str = ""
    over_existing: bool = False
    upper_image: str = ""
    upper_tmpfs: bool = False


@dataclass
class DevNode:
    path: str  # relative to /dev
    type: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o666


@dataclass
class LaunchSpec:
    uuid: str
    name: str
    hostname: str
    root_dir: str  # empty host directory used as the mount point of the container root
    work_dir: str  # empty host directory for staging mounts (image lowers)
    mounts: list[MountOp] = field(default_factory=list)
    devices: list[DevNode] = field(default_factory=list)
    cgroup_procs: list[str] = field(default_factory=list)
    uid_start: int | None = None  # user namespace: container uid 0 = uid_start on the host
    uid_size: int = 65536
    # /proc/sys/user/* of the container's user namespace (its per-user kernel resources)
    userns_limits: dict[str, int] = field(default_factory=dict)
    # resource limits (RLIMIT_<name>: soft = hard) of every container process
    rlimits: dict[str, int] = field(default_factory=dict)
    netns: bool = True
    timens: bool = True
    sysfs_readonly: bool = True
    mask_proc: bool = True
    cap_keep: list[str] = field(default_factory=list)  # names, for the record
    cap_drop: list[int] = field(default_factory=list)  # numbers, computed by cmld from the host kernel
    seccomp_bpf: str = ""  # the compiled filter (base64 of raw BPF); empty: no filter
    allow_system_time: bool = False
    service_socket: bool = True
    # /proc/meminfo as the container sees it (its cgroup's limit as total), first content; cmld
    # keeps it current (modules/meminfo.py). Empty: the kernel's /proc/meminfo.
    meminfo: str = ""
    control_socket: bool = False  # c0 only: cmld's privileged control socket inside
    # argv of init: [GuestOS init_path, *init_param]; if init_path is not an executable file in
    # the container, /sbin/cservice is executed with this same argv (the original's fallback)
    init: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    cservice: str = ""  # host path of the in-container service binary, placed at /sbin/cservice
    cservice_note: str = ""  # why there is none (shown if init needs it)
    setup_mode: bool = False

    def to_json(self) -> bytes:
        return json.dumps({"type": MSG_SPEC, "spec": asdict(self)}).encode()

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LaunchSpec:
        raw = dict(d)
        mounts = [MountOp(**m) for m in raw.pop("mounts", [])]  # type: ignore[attr-defined]
        devices = [DevNode(**n) for n in raw.pop("devices", [])]  # type: ignore[attr-defined]
        return cls(mounts=mounts, devices=devices, **raw)  # type: ignore[arg-type]
