"""The disk-space check of CREATE_CONTAINER and CONTAINER_UPDATE_CONFIG (the original's
mount_get_disk_usage_container and file_disk_space_available): the images a container will make
must fit, and 20 % of the file system must stay free after them.

Required: every EMPTY and OVERLAY_RW image on disk (its size from the container config's
`image_sizes`, else the GuestOS's `def_size`, in MiB) plus 10 % for its dm-integrity metadata, and
the DEVICE and COPY images (`image_size`, bytes). tmpfs mounts take no disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cmld.errors import CmldError

M = GuestOSMount
RESERVE = 0.2  # CMLD_STORAGE_FREE_THRESHOLD
META_FACTOR = 0.1  # MOUNT_DM_INTEGRITY_META_FACTOR
MIB = 1 << 20


def required_bytes(gos: GuestOSConfig, cfg: ContainerConfig) -> int:
    sizes = {s.image_name: s.image_size for s in cfg.image_sizes}
    total = 0.0
    for m in list(gos.mounts):
        if m.mount_type in (M.EMPTY, M.OVERLAY_RW) and m.fs_type != "tmpfs":
            size = sizes.get(m.image_file, m.def_size) * MIB
            total += size * (1 + META_FACTOR)
        elif m.mount_type in (M.DEVICE, M.DEVICE_RW, M.COPY):
            total += m.image_size
    return int(total)


def check(path: Path, required: int, what: str) -> None:
    """CmldError unless `required` bytes fit on the file system of `path` with 20 % of it left."""
    st = os.statvfs(path)
    size, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
    reserve = int(size * RESERVE)
    if required > free or free - required < reserve:
        raise CmldError(f"not enough disk space for {what}: its images need {required / MIB:.1f} MiB, "
                        f"{free / MIB:.1f} MiB are free on {path} and {reserve / MIB:.1f} MiB "
                        f"(20 % of the file system) must stay free")
