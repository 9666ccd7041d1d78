"""bpf(2) for cgroup device programs: load, attach, detach (no libbpf)."""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from cmld.linux.libc import syscall

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_ATTR_SIZE = 128  # larger than any field we set; the kernel requires the tail to be zero
_LOG_SIZE = 1 << 16


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf(2): unknown syscall number on {platform.machine()}")
    ret = syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))  # type: ignore[arg-type]
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def load_device_program(insns: bytes, name: bytes = b"cml_devices") -> int:
    """BPF_PROG_LOAD a cgroup device program; returns its fd (O_CLOEXEC by kernel default).

    The first attempt runs without a verifier log (cheaper); on failure it is repeated with
    one so the error says what the verifier disliked.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    for log_level in (0, 1):
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQII", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                         ctypes.addressof(code), ctypes.addressof(license_),
                         log_level, _LOG_SIZE if log_level else 0)
        struct.pack_into("<Q", attr, 32, ctypes.addressof(log) if log_level else 0)
        struct.pack_into("16s", attr, 48, name)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_level == 0:
                continue
            verifier = log.value.decode(errors="replace").strip()
            raise OSError(e.errno, f"BPF_PROG_LOAD of the device program ({len(insns) // 8} insns) failed: "
                                   f"{os.strerror(e.errno or 0)}; verifier log: {verifier or '(empty)'}") from None
    raise AssertionError("unreachable")


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int) -> ctypes.Array[ctypes.c_char]:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    return attr


def attach_device_program(cgroup_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_ATTACH, _attach_attr(cgroup_fd, prog_fd, BPF_F_ALLOW_MULTI))


def detach_device_program(cgroup_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_DETACH, _attach_attr(cgroup_fd, prog_fd, 0))
