"""Attestation evidence: RemoteToTpm2d in, Tpm2dToRemote out (inventory §5.3), shared by the TCP
9505 server and the gRPC service.

Kept from the original: the PCR choice (BASIC 0-11, ALL 0-23, ADVANCED = the bitmap in `pcrs`,
bit i = PCR i, which is what the original's little-endian memcpy amounts to), a SHA-256 quote
signed RSASSA/SHA-256 with the nonce as extraData, the PCR values in ascending order, the device
certificate, the raw IMA list and the container list.

Different (documented): a request that cannot be served gets an ATTESTATION_RES with
`error_message` and no quote, instead of silence; a missing IMA list or device certificate
leaves that field out instead of dropping the whole reply. Ours in addition: `ak_public` (the
quoting key's TPM2B_PUBLIC, whose name the quote carries) and the UEFI event log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cml_common.messages.attestation_pb2 import (
    ADVANCED,
    ALL,
    BASIC,
    SHA256,
    Pcr,
    RemoteToTpm2d,
    Tpm2dToRemote,
)

from .keys import AttestationKey
from .measurements import MeasurementList
from .tpm import Tpm, TpmError

log = logging.getLogger(__name__)

MAX_NONCE = 64  # TPM2B_DATA holds at most a TPMT_HA (2 + 64 bytes); the TPM refuses more
MAX_FILE = 48 * 1024 * 1024  # IMA lists on big systems reach tens of MiB; the frame limit is 64 MiB


class EvidenceError(Exception):
    pass


def selected_pcrs(req: RemoteToTpm2d) -> list[int]:
    if req.atype == BASIC:
        return list(range(12))
    if req.atype == ALL:
        return list(range(24))
    if req.atype == ADVANCED:
        if not req.HasField("pcrs"):
            raise EvidenceError("atype ADVANCED without a pcrs bitmap")
        pcrs = [i for i in range(24) if req.pcrs & (1 << i)]
        if not pcrs:
            raise EvidenceError(f"atype ADVANCED with pcrs {req.pcrs:#x}: no PCR 0..23 selected")
        return pcrs
    raise EvidenceError(f"unknown atype {req.atype}")


def read_limited(path: Path, what: str) -> bytes | None:
    """A securityfs file (no size known in advance), or None if it is not there."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        log.info("%s: %s not present", what, path)
        return None
    except OSError as e:
        log.warning("%s: cannot read %s: %s", what, path, e)
        return None
    if len(data) > MAX_FILE:
        log.warning("%s: %s is larger than %d bytes; not sent", what, path, MAX_FILE)
        return None
    return data


@dataclass
class EvidenceSources:
    cert: Path
    ima_log: Path
    event_log: Path


def failure(req_atype: int, message: str) -> Tpm2dToRemote:
    out = Tpm2dToRemote(code=Tpm2dToRemote.ATTESTATION_RES, error_message=message)
    if req_atype in (BASIC, ALL, ADVANCED):
        out.atype = req_atype  # type: ignore[assignment]
    return out


def build(tpm: Tpm, ak: AttestationKey, ml: MeasurementList, src: EvidenceSources,
          req: RemoteToTpm2d) -> Tpm2dToRemote:
    """Runs on the TPM worker thread. Raises EvidenceError/TpmError with the reason."""
    pcrs = selected_pcrs(req)
    nonce = bytes(req.qualifyingData)
    if len(nonce) > MAX_NONCE:
        raise EvidenceError(f"qualifyingData has {len(nonce)} bytes; a TPM quote takes at most {MAX_NONCE}")
    values = tpm.pcr_read(pcrs)
    with ak.loaded() as handle:
        quoted, signature = tpm.quote(handle, pcrs, nonce)
    # The PCRs could change between the read and the quote (an ML_APPEND in between cannot
    # happen: both run on the same worker), but another TPM user could extend; re-read so the
    # values sent are the ones quoted, or say so.
    again = tpm.pcr_read(pcrs)
    if again != values:
        raise TpmError("PCRs changed while quoting (another TPM user extended them); try again")
    out = Tpm2dToRemote(code=Tpm2dToRemote.ATTESTATION_RES, atype=req.atype, halg=SHA256, quoted=quoted,
                        signature=signature, ak_public=ak.public_marshalled(),
                        ak_parent_public=ak.parent_public)
    out.pcr_values.extend(Pcr(number=p, value=values[p]) for p in pcrs)
    cert = read_limited(src.cert, "device certificate")
    if cert is not None:
        out.certificate = cert
    else:
        log.warning("attestation without a device certificate (%s missing)", src.cert)
    if req.attest_ima:
        ima = read_limited(src.ima_log, "IMA measurement list")
        if ima is not None:
            out.ml_ima_entry = ima
    if req.attest_containers:
        out.ml_container_entry.extend(e.to_proto() for e in ml.entries)
    if req.attest_event_log:
        ev = read_limited(src.event_log, "UEFI event log")
        if ev is not None:
            out.uefi_event_log = ev
    return out
