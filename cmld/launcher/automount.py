"""`python -m cmld.launcher.automount PID DEVNAME [UID]`: mount the block device /dev/DEVNAME of the
container whose init is PID at /media/external/<basename> inside it (the original's c_automount),
trying vfat, ext4, btrfs, ext2 and ext3 as the original does, with nosuid and nodev added.

A process of its own because entering a mount namespace needs a single-threaded caller, which
cmld is not. It enters only the container's mount namespace, so paths resolve in the container,
and it refuses anything at /dev/DEVNAME that is not a block device. Exit 0: mounted; 1: not (the
reason on stderr).

UID is the host uid of the container's root: files are made with it as the file system uid (as
the original switches to the container's root), since the host's root is not mapped in a
user-namespaced container's file systems (EOVERFLOW); CAP_SYS_ADMIN for the mount stays."""

from __future__ import annotations

import os
import stat
import sys

from cmld import linux
from cmld.linux.libc import LIBC

FSTYPES = ("vfat", "ext4", "btrfs", "ext2", "ext3")
MS_RELATIME = 1 << 21
MEDIA = "/media/external"


def main(argv: list[str]) -> int:
    if (len(argv) not in (2, 3) or not argv[0].isdigit() or not argv[1] or ".." in argv[1].split("/")
            or (len(argv) == 3 and not argv[2].isdigit())):
        print("usage: automount PID DEVNAME [UID]", file=sys.stderr)
        return 2
    pid, devname = int(argv[0]), argv[1].removeprefix("/dev/")
    uid = int(argv[2]) if len(argv) == 3 else 0
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWNS)
    finally:
        os.close(fd)
    os.chdir("/")  # the container's root (setns of a mount namespace resets root and cwd)
    if uid:
        LIBC.setfsgid(uid)
        LIBC.setfsuid(uid)
    dev = f"/dev/{devname}"
    try:
        st = os.lstat(dev)
    except OSError as e:
        print(f"{dev}: {e.strerror}", file=sys.stderr)
        return 1
    if not stat.S_ISBLK(st.st_mode):
        print(f"{dev} is not a block device", file=sys.stderr)
        return 1
    target = f"{MEDIA}/{os.path.basename(devname)}"
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
    except OSError as e:
        print(f"cannot make {target} in the container: {e.strerror}", file=sys.stderr)
        return 1
    if os.path.islink(target) or not os.path.isdir(target):
        print(f"{target} is not a directory", file=sys.stderr)
        return 1
    errors = []
    for fstype in FSTYPES:
        try:
            linux.mount(dev, target, fstype, MS_RELATIME | linux.MS_NOSUID | linux.MS_NODEV)
        except OSError as e:
            errors.append(f"{fstype}: {e.strerror}")
            continue
        print(f"{dev} mounted at {target} ({fstype})")
        return 0
    print(f"{dev}: no file system to mount ({'; '.join(errors)})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
