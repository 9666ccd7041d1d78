"""What the kernel says when a dm target finds a tampered block (read from /dev/kmsg):

    device-mapper: integrity: dm-3: Checksum failed at sector 0x1a40
    device-mapper: crypt: dm-4: INTEGRITY AEAD ERROR, sector 6720
    device-mapper: verity: 7:3: data block 599 is corrupted

The integrity and crypt lines name the dm device itself (dm-N); the verity line names the data
device below it (major:minor of the loop device)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass

_INTEGRITY = re.compile(
    r"device-mapper: integrity: (?:(?P<dev>[\w:.-]+): )?Checksum failed at sector (?P<s>0x[0-9a-fA-F]+|\d+)")
_AEAD = re.compile(r"device-mapper: crypt: (?:(?P<dev>[\w:.-]+): )?INTEGRITY AEAD ERROR, sector (?P<s>\d+)")
_VERITY = re.compile(r"device-mapper: verity: (?P<dev>\d+:\d+): (?P<kind>data|metadata) block (?P<s>\d+) is corrupted")
KMSG = "/dev/kmsg"


@dataclass(frozen=True)
class DmCorruption:
    target: str  # integrity, crypt, verity
    device: str  # dm-N (integrity, crypt) or major:minor of the data device (verity); "" if not named
    where: str  # "sector 0x1a40", "data block 599"
    line: str  # the kernel's message


def parse(record: str) -> DmCorruption | None:
    """One /dev/kmsg record ("prio,seq,usec,flags;message") or a plain message line."""
    msg = record.split(";", 1)[1] if ";" in record.split("\n", 1)[0] else record
    msg = msg.split("\n", 1)[0].strip()
    if m := _INTEGRITY.search(msg):
        return DmCorruption("integrity", m.group("dev") or "", f"sector {m.group('s')}", msg)
    if m := _AEAD.search(msg):
        return DmCorruption("crypt", m.group("dev") or "", f"sector {m.group('s')}", msg)
    if m := _VERITY.search(msg):
        return DmCorruption("verity", m.group("dev"), f"{m.group('kind')} block {m.group('s')}", msg)
    return None


class KmsgReader:
    """Non-blocking reader of new kernel log records (older ones are skipped at open)."""

    def __init__(self, path: str = KMSG) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read_available(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.EPIPE:  # records were overwritten before we read them
                    continue
                raise
            if not data:
                return out
            out.append(data.decode(errors="replace"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
