"""UEFI variables through efivarfs, and the boot entries (load options) the A/B update keeps.

What the original does with libefivar (common/efivars.c), in Python and without the library: an
efivarfs file is 4 bytes of attributes (little-endian u32) followed by the variable's data, written
in a single write(2); existing variable files carry the immutable flag, which has to be cleared
first. A load option (UEFI spec 3.1.3, `Boot####`) is attributes u32, the device path's length
u16, the description in NUL-terminated UTF-16LE, the device path, then optional data.

The device path of a boot entry is the one efibootmgr and the original write for a file on an
ESP: HD(partition, GPT, partition GUID, start, size)/File(\\EFI\\...)/End. The partition is
described by `blkid -p` (util-linux), which reads the GPT entry itself, so it does not depend on
udev's symlinks being there yet.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

EFIVARS = Path("/sys/firmware/efi/efivars")
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
NV_BS_RT = 0x1 | 0x2 | 0x4  # NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
LOAD_OPTION_ACTIVE = 0x1
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10
MAX_VAR = 64 << 10  # far above any boot variable: a bigger file is not one of ours


class EfiError(Exception):
    """A variable could not be read or written, or a partition not described; the text says which."""


# ---------------------------------------------------------------------------- device paths

END = bytes([0x7F, 0xFF, 4, 0])


def _node(typ: int, sub: int, payload: bytes) -> bytes:
    return struct.pack("<BBH", typ, sub, 4 + len(payload)) + payload


@dataclass(frozen=True)
class EspPartition:
    """A GPT partition as the HD() node of a device path names it (LBAs of 512 bytes)."""

    number: int
    start: int
    size: int
    guid: uuid.UUID


def hd_node(p: EspPartition) -> bytes:
    # MEDIA_DEVICE_PATH / HARDDRIVE: number, start, size, signature (GUID, mixed endian), GPT, GUID
    return _node(4, 1, struct.pack("<IQQ16sBB", p.number, p.start, p.size, p.guid.bytes_le, 2, 2))


def file_node(path: str) -> bytes:
    return _node(4, 4, (path + "\0").encode("utf-16-le"))


def file_device_path(p: EspPartition, path: str) -> bytes:
    """HD(...)/File(path)/End: what the original's efi_generate_file_device_path_from_esp with
    EFIBOOT_ABBREV_HD makes."""
    if not path.startswith("\\"):
        raise EfiError(f"EFI file path {path!r} must start with a backslash")
    return hd_node(p) + file_node(path) + END


def describe_device_path(dp: bytes) -> str:
    """The device path as efibootmgr prints it, for logs and errors (HD, File, End; others raw)."""
    out, i = [], 0
    while i + 4 <= len(dp):
        typ, sub, length = struct.unpack_from("<BBH", dp, i)
        if length < 4 or i + length > len(dp):
            out.append("<malformed>")
            break
        body = dp[i + 4:i + length]
        if (typ, sub) == (0x7F, 0xFF):
            break
        if (typ, sub) == (4, 1) and len(body) == 38:
            num, start, size, sig, _, _ = struct.unpack("<IQQ16sBB", body)
            out.append(f"HD({num},GPT,{uuid.UUID(bytes_le=sig)},{start:#x},{size:#x})")
        elif (typ, sub) == (4, 4):
            out.append(f"File({body.decode('utf-16-le', errors='replace').rstrip(chr(0))})")
        else:
            out.append(f"Node({typ},{sub},{body.hex()})")
        i += length
    return "/".join(out)


def esp_partition(device: Path) -> EspPartition:
    """The GPT entry of the ESP's partition device (the original: /dev/disk/by-label/boot)."""
    try:
        p = subprocess.run(["blkid", "-p", "-o", "export", str(device)], capture_output=True, text=True,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EfiError(f"blkid {device}: {e}") from None
    info = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if p.returncode != 0 or info.get("PART_ENTRY_SCHEME") != "gpt":
        raise EfiError(f"{device} is not a GPT partition (blkid: {p.stderr.strip() or info or 'nothing'})")
    try:
        return EspPartition(int(info["PART_ENTRY_NUMBER"]), int(info["PART_ENTRY_OFFSET"]),
                            int(info["PART_ENTRY_SIZE"]), uuid.UUID(info["PART_ENTRY_UUID"]))
    except (KeyError, ValueError) as e:
        raise EfiError(f"{device}: blkid gave no usable partition entry ({e})") from None


# ---------------------------------------------------------------------------- load options

@dataclass(frozen=True)
class LoadOption:
    attributes: int
    description: str
    device_path: bytes
    optional_data: bytes = b""

    def encode(self) -> bytes:
        desc = (self.description + "\0").encode("utf-16-le")
        return struct.pack("<IH", self.attributes, len(self.device_path)) + desc + self.device_path + \
            self.optional_data

    @classmethod
    def decode(cls, data: bytes) -> LoadOption:
        if len(data) < 6:
            raise EfiError(f"load option of {len(data)} bytes")
        attributes, dp_len = struct.unpack_from("<IH", data)
        i = 6
        while True:
            if i + 2 > len(data):
                raise EfiError("load option description is not terminated")
            if data[i:i + 2] == b"\0\0":
                break
            i += 2
        desc = data[6:i].decode("utf-16-le", errors="replace")
        dp = data[i + 2:i + 2 + dp_len]
        if len(dp) != dp_len:
            raise EfiError(f"load option device path is {len(dp)} bytes, the header says {dp_len}")
        return cls(attributes, desc, dp, data[i + 2 + dp_len:])


# ---------------------------------------------------------------------------- variables

def _clear_immutable(fd: int) -> None:
    """efivarfs marks existing variables immutable (so `rm -rf` cannot brick a machine)."""
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf[:4], "little")
        if flags & FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags & ~FS_IMMUTABLE_FL).to_bytes(4, "little") + bytes(4))
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            raise


class EfiVars:
    """The EFI variables of the global vendor GUID, as the boot manager reads them."""

    def __init__(self, root: Path = EFIVARS) -> None:
        self.root = root

    def available(self) -> bool:
        return self.root.is_dir()

    def path(self, name: str) -> Path:
        return self.root / f"{name}-{EFI_GLOBAL}"

    def get(self, name: str) -> bytes | None:
        """The variable's data (no attributes), or None if it does not exist."""
        try:
            with open(self.path(name), "rb") as f:
                raw = f.read(MAX_VAR + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise EfiError(f"EFI variable {name}: {e.strerror}") from None
        if len(raw) < 4 or len(raw) > MAX_VAR:
            raise EfiError(f"EFI variable {name} is {len(raw)} bytes: not an efivarfs variable")
        return raw[4:]

    def set(self, name: str, data: bytes, attributes: int = NV_BS_RT) -> None:
        buf = struct.pack("<I", attributes) + data
        path = self.path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise EfiError(f"EFI variable {name}: {e.strerror}") from None
        try:
            _clear_immutable(fd)
            if os.write(fd, buf) != len(buf):  # efivarfs takes one write as the whole variable
                raise EfiError(f"EFI variable {name}: short write")
            if os.fstat(fd).st_size > len(buf):  # a plain file (an offline tree), never efivarfs
                os.ftruncate(fd, len(buf))
        except OSError as e:
            raise EfiError(f"EFI variable {name}: {e.strerror}") from None
        finally:
            os.close(fd)

    def _u16(self, name: str) -> int | None:
        data = self.get(name)
        if data is None:
            return None
        if len(data) != 2:
            raise EfiError(f"EFI variable {name} has {len(data)} data bytes, not 2")
        value: int = struct.unpack("<H", data)[0]
        return value

    def boot_current(self) -> int | None:
        return self._u16("BootCurrent")

    def boot_next(self) -> int | None:
        return self._u16("BootNext")

    def set_boot_next(self, entry: int) -> None:
        self.set("BootNext", struct.pack("<H", entry))

    def boot_order(self) -> list[int]:
        data = self.get("BootOrder") or b""
        if len(data) % 2:
            raise EfiError(f"EFI BootOrder has an odd length ({len(data)} bytes)")
        return list(struct.unpack(f"<{len(data) // 2}H", data))

    def set_boot_order(self, order: list[int]) -> None:
        self.set("BootOrder", struct.pack(f"<{len(order)}H", *order))

    def load_option(self, entry: int) -> LoadOption | None:
        data = self.get(f"Boot{entry:04X}")
        return None if data is None else LoadOption.decode(data)

    def set_load_option(self, entry: int, option: LoadOption) -> None:
        self.set(f"Boot{entry:04X}", option.encode())
