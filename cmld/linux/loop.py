"""Loop devices, attached and configured in one ioctl."""

from __future__ import annotations

import fcntl
import os
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16


def loop_attach(image_fd: int, *, readonly: bool, autoclear: bool = True) -> tuple[str, int]:
    """Attach an open image to a free loop device (LOOP_CONFIGURE: one ioctl, no window in which
    the device is bound but unconfigured). With autoclear the kernel detaches it when the last
    mount and fd go away, so a crashed launcher or a dead container leaves no loop device behind."""
    flags = (LO_FLAGS_READ_ONLY if readonly else 0) | (LO_FLAGS_AUTOCLEAR if autoclear else 0)
    # struct loop_config { __u32 fd; __u32 block_size; struct loop_info64 info; __u64 __reserved[8]; }
    # loop_info64: 8+8+8+8+8+4+4+4+4 + 64 name + 64 crypt name + 32 key + 2*4 = 232 bytes; lo_flags at +52
    info = bytearray(232)
    struct.pack_into("=I", info, 52, flags)
    cfg = struct.pack("=II", image_fd, 0) + bytes(info) + bytes(64)
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):
            num = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{num}"
            try:
                dev = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
            except FileNotFoundError:
                os.mknod(path, 0o660 | 0o060000, os.makedev(7, num))
                dev = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
            try:
                fcntl.ioctl(dev, LOOP_CONFIGURE, cfg)
            except OSError as e:
                os.close(dev)
                if e.errno == 16:  # EBUSY: another process took it between GET_FREE and CONFIGURE
                    continue
                raise OSError(e.errno, f"loop configure {path}: {e.strerror}") from None
            # With autoclear, closing the last fd detaches the device: the caller keeps `dev` open
            # until the mount holds the device, then closes it.
            return path, dev
    finally:
        os.close(ctl)
    raise OSError(16, "no free loop device")


LOOP_GET_STATUS64 = 0x4C05
_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")


def _decode_dev(dev: int) -> tuple[int, int]:
    """The kernel's new_decode_dev: lo_device is a huge_encode_dev'd dev_t."""
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def loop_backings() -> dict[str, tuple[int, int, int]]:
    """Every bound loop device: /dev/loopN -> (major, minor, inode) of its backing file. Read with
    LOOP_GET_STATUS64, since the backing_file path in sysfs is relative to whatever mount namespace
    attached it."""
    found: dict[str, tuple[int, int, int]] = {}
    try:
        names = [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        return found
    for name in names:
        if not os.path.isdir(f"/sys/block/{name}/loop"):
            continue  # not bound
        try:
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            buf = bytearray(_INFO64.size)
            fcntl.ioctl(fd, LOOP_GET_STATUS64, buf, True)
        except OSError:
            continue  # cleared meanwhile
        finally:
            os.close(fd)
        device, inode = _INFO64.unpack_from(buf)[:2]
        found[f"/dev/{name}"] = (*_decode_dev(device), inode)
    return found


def loops_of(paths: list[str]) -> list[str]:
    """The loop devices whose backing file is one of `paths` (compared by device and inode)."""
    want = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        want.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    if not want:
        return []
    return sorted(dev for dev, key in loop_backings().items() if key in want)
