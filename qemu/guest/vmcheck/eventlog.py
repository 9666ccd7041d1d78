"""Our own reader of the TCG2 (crypto-agile) UEFI event log: replays the SHA-256 bank so the
result can be compared with the PCRs the TPM reports. This is the attestation baseline."""

from __future__ import annotations

import hashlib
import struct

EV_NO_ACTION = 0x3
ALG_SHA256 = 0x000B
SPEC_ID = b"Spec ID Event03\0"
STARTUP_LOCALITY = b"StartupLocality\0"


def replay(log: bytes) -> tuple[dict[int, str], int]:
    """Returns ({pcr: hex sha256 value}, number of events) for every PCR the log extends."""
    # First event: TCG_PCClientPCREvent (SHA-1 layout) carrying the TCG_EfiSpecIdEvent.
    _pcr, _etype = struct.unpack_from("<II", log, 0)
    size = struct.unpack_from("<I", log, 28)[0]
    spec = log[32:32 + size]
    if not spec.startswith(SPEC_ID):
        raise ValueError("not a crypto-agile TCG2 event log (no 'Spec ID Event03')")
    nalg = struct.unpack_from("<I", spec, 24)[0]
    sizes = {}
    for i in range(nalg):
        alg, dsize = struct.unpack_from("<HH", spec, 28 + 4 * i)
        sizes[alg] = dsize
    if ALG_SHA256 not in sizes:
        raise ValueError(f"event log has no SHA-256 bank (algorithms {sorted(sizes)})")
    pcrs: dict[int, bytes] = {}
    off = 32 + size
    count = 0
    while off + 12 <= len(log):
        pcr, etype, ndig = struct.unpack_from("<III", log, off)
        off += 12
        digest = b""
        for _ in range(ndig):
            alg = struct.unpack_from("<H", log, off)[0]
            off += 2
            if alg not in sizes:
                raise ValueError(f"event {count}: unknown algorithm {alg:#x}")
            if alg == ALG_SHA256:
                digest = log[off:off + sizes[alg]]
            off += sizes[alg]
        esize = struct.unpack_from("<I", log, off)[0]
        event = log[off + 4:off + 4 + esize]
        off += 4 + esize
        count += 1
        if etype == EV_NO_ACTION:
            if pcr == 0 and event.startswith(STARTUP_LOCALITY):
                pcrs[0] = bytes(31) + event[len(STARTUP_LOCALITY):len(STARTUP_LOCALITY) + 1]
            continue
        pcrs[pcr] = hashlib.sha256(pcrs.get(pcr, bytes(32)) + digest).digest()
    return {k: v.hex() for k, v in sorted(pcrs.items())}, count
