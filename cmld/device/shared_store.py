"""`files_shared/_store.img`: the original keeps the files of BIND_FILE mounts in a 100 MB ext4
image mounted over `files_shared/` (loop, nodev, noexec, noatime) at the first start of a
container that needs one. A data directory written by the C CML has its files inside that image,
so when `_store.img` exists it is mounted the same way before the bind; without it, the files are
taken from the `files_shared/` directory itself (this cmld does not create the image: see the
README's compatibility notes). cmld unmounts what it mounted when it exits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cmld import linux
from cmld.errors import StartError

log = logging.getLogger(__name__)
STORE = "_store.img"
_mounted: set[Path] = set()


def ensure_mounted(shared_dir: Path) -> None:
    """Mount `_store.img` over `shared_dir` if it exists and nothing is mounted there yet."""
    store = shared_dir / STORE
    if os.path.ismount(shared_dir) or not store.is_file():
        return
    try:
        fd = os.open(store, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise StartError(f"{store} cannot be opened: {e.strerror}") from None
    try:
        dev, dev_fd = linux.loop_attach(fd, readonly=False, autoclear=True)
        try:
            flags = linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_NOATIME | linux.MS_NOSUID
            linux.mount(dev, str(shared_dir), "ext4", flags)
        finally:
            os.close(dev_fd)
    except OSError as e:
        raise StartError(f"{store} cannot be mounted on {shared_dir} (an ext4 image is expected): "
                         f"{e.strerror or e}") from None
    finally:
        os.close(fd)
    _mounted.add(shared_dir)
    log.info("BIND_FILE store %s mounted on %s (%s)", store, shared_dir, dev)


def unmount_all() -> None:
    """At exit: detach the stores this cmld mounted (the loop device goes with the last user)."""
    for d in list(_mounted):
        try:
            linux.umount2(str(d), 0)
        except OSError:
            try:
                linux.umount2(str(d), linux.MNT_DETACH)  # busy: detached now, gone with its last user
            except OSError as e:
                log.warning("cannot unmount the BIND_FILE store on %s: %s", d, e.strerror)
        _mounted.discard(d)
