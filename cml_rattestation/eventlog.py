"""The UEFI TCG2 (crypto-agile) event log: parsed strictly and replayed into the SHA-256 bank.

Replay comes first and parsing is strict (go-attestation's lesson, peers.md §2.3): every event
must fit the log, a cut-off log is reported with the byte where it ends, and only a log whose
replay equals the quoted PCRs is used for the reference policy.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
ALG_SHA256 = 0x000B
SPEC_ID = b"Spec ID Event03\0"
STARTUP_LOCALITY = b"StartupLocality\0"
EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")  # 8BE4DF61-93CA-11D2-AA0D-00E098032B8C
MAX_EVENT = 1024 * 1024


class EventLogError(ValueError):
    pass


@dataclass(frozen=True)
class Event:
    index: int
    pcr: int
    type: int
    sha256: bytes
    data: bytes


@dataclass(frozen=True)
class Replay:
    pcrs: dict[int, bytes]
    events: list[Event]

    def secure_boot(self) -> bool | None:
        """The SecureBoot variable as measured into PCR 7, or None if the log has none."""
        for e in self.events:
            if e.pcr == 7 and e.type == EV_EFI_VARIABLE_DRIVER_CONFIG:
                name, value = efi_variable(e.data)
                if name == "SecureBoot":
                    return bool(value) and value[0] == 1
        return None


def efi_variable(data: bytes) -> tuple[str, bytes]:
    """UEFI_VARIABLE_DATA: GUID, name length (chars), data length, UTF-16 name, data."""
    if len(data) < 32:
        return "", b""
    nlen, dlen = struct.unpack_from("<QQ", data, 16)
    if 32 + 2 * nlen + dlen > len(data):
        return "", b""
    name = data[32:32 + 2 * nlen].decode("utf-16-le", errors="replace")
    return name, data[32 + 2 * nlen:32 + 2 * nlen + dlen]


def _need(log: bytes, off: int, n: int, what: str) -> None:
    if off + n > len(log):
        raise EventLogError(f"event log truncated: {what} at byte {off} needs {n} bytes, the log ends at "
                            f"{len(log)}")


def replay(log: bytes) -> Replay:
    if len(log) < 32:
        raise EventLogError(f"event log truncated: {len(log)} bytes is not even the header event")
    size = struct.unpack_from("<I", log, 28)[0]
    _need(log, 32, size, "the Spec ID event")
    spec = log[32:32 + size]
    if not spec.startswith(SPEC_ID):
        raise EventLogError("not a crypto-agile TCG2 event log (no 'Spec ID Event03')")
    if len(spec) < 28:
        raise EventLogError("event log: Spec ID event too short")
    nalg = struct.unpack_from("<I", spec, 24)[0]
    if len(spec) < 28 + 4 * nalg or nalg > 16:
        raise EventLogError("event log: Spec ID event lists more algorithms than it holds")
    sizes = {}
    for i in range(nalg):
        alg, dsize = struct.unpack_from("<HH", spec, 28 + 4 * i)
        sizes[alg] = dsize
    if ALG_SHA256 not in sizes:
        raise EventLogError(f"event log has no SHA-256 bank (algorithms {sorted(sizes)})")
    pcrs: dict[int, bytes] = {}
    events: list[Event] = []
    off = 32 + size
    while off < len(log):
        start = off
        _need(log, off, 12, f"event {len(events)} header")
        pcr, etype, ndig = struct.unpack_from("<III", log, off)
        off += 12
        if pcr > 23 or ndig > 16:
            raise EventLogError(f"event {len(events)} at byte {start}: PCR {pcr}, {ndig} digests: not an event")
        digest = b""
        for _ in range(ndig):
            _need(log, off, 2, f"event {len(events)} digest")
            alg = struct.unpack_from("<H", log, off)[0]
            off += 2
            if alg not in sizes:
                raise EventLogError(f"event {len(events)} at byte {start}: unknown algorithm {alg:#x}")
            _need(log, off, sizes[alg], f"event {len(events)} digest")
            if alg == ALG_SHA256:
                digest = log[off:off + sizes[alg]]
            off += sizes[alg]
        _need(log, off, 4, f"event {len(events)} size")
        esize = struct.unpack_from("<I", log, off)[0]
        if esize > MAX_EVENT:
            raise EventLogError(f"event {len(events)} at byte {start}: event data of {esize} bytes")
        _need(log, off + 4, esize, f"event {len(events)} data")
        data = log[off + 4:off + 4 + esize]
        off += 4 + esize
        events.append(Event(len(events), pcr, etype, digest, data))
        if etype == EV_NO_ACTION:
            if pcr == 0 and data.startswith(STARTUP_LOCALITY) and len(data) > len(STARTUP_LOCALITY):
                pcrs[0] = bytes(31) + data[len(STARTUP_LOCALITY):len(STARTUP_LOCALITY) + 1]
            continue
        if len(digest) != 32:
            raise EventLogError(f"event {len(events) - 1} at byte {start} has no SHA-256 digest")
        pcrs[pcr] = hashlib.sha256(pcrs.get(pcr, bytes(32)) + digest).digest()
    return Replay(pcrs, events)
