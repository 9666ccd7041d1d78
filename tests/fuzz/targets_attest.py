"""In-process fuzz targets for what the verifier reads from a device: the TPM structures, the UEFI
event log, the IMA list, and a whole attestation response through every check.

The verifier context (CA, config, nonce, evidence files) lives in tests/fuzz/data/verifier,
written by make_seeds.py together with a real response captured from tpm2d on a swtpm, so the
fuzzer starts from a response that passes and mutates its way into every check."""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path

import atheris

from cml_common import framing
from cml_common.messages.attestation_pb2 import Tpm2dToRemote
from cml_rattestation import checks, eventlog, ima, tpmstructs
from cml_rattestation.attest import load_config
from cml_rattestation.outcome import Context
from cml_rattestation.refpolicy import EventLogPolicy

DATA = Path(__file__).resolve().parent / "data" / "verifier"
# The seeds were captured at this time: fixed, so validity-time checks do not drift.
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def tpm_structs(data: bytes) -> None:
    """TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC (the first byte picks which)."""
    if not data:
        return
    which, rest = data[0] % 3, data[1:]
    try:
        if which == 0:
            q = tpmstructs.parse_quote(rest)
            if len(q.selections) > 16:
                raise AssertionError("more PCR selections than the parser allows")
        elif which == 1:
            tpmstructs.parse_signature(rest)
        else:
            pub = tpmstructs.parse_public(rest)
            with contextlib.suppress(tpmstructs.StructError):
                pub.name()
    except tpmstructs.StructError:
        pass


def event_log(data: bytes) -> None:
    """The UEFI TCG2 event log: replay, the SecureBoot variable, a policy made from it."""
    try:
        rep = eventlog.replay(data)
    except eventlog.EventLogError:
        return
    rep.secure_boot()
    if any(not 0 <= p <= 23 or len(v) != 32 for p, v in rep.pcrs.items()):
        raise AssertionError("replay produced a PCR outside 0..23 or not 32 bytes")
    EventLogPolicy.from_replay(rep, "fuzz")


def ima_list(data: bytes) -> None:
    """The IMA binary measurement list: parse, template hashes, replay into PCR 10."""
    try:
        entries = ima.parse(data)
    except ima.ImaError:
        return
    ima.check_template_hashes(entries)
    ima.replay(entries, 10)


class _Verifier:
    def __init__(self) -> None:
        self.cfg = load_config(DATA / "rattestation.conf")
        self.nonce = (DATA / "nonce").read_bytes()
        self.response = (DATA / "response.bin").read_bytes()

    def context(self) -> Context:
        return Context(self.cfg, DATA, self.nonce, None, NOW)


_VERIFIER: _Verifier | None = None


def attestation_response(data: bytes) -> None:
    """A Tpm2dToRemote as the verifier gets it over TCP 9505 or gRPC, through every check."""
    global _VERIFIER
    if _VERIFIER is None:
        _VERIFIER = _Verifier()
    try:
        resp = framing.parse(Tpm2dToRemote, data)
    except framing.MessageError:
        return
    out = checks.verify(_VERIFIER.context(), resp)
    for c in out.checks:
        if c.status not in (checks.PASS, checks.FAIL, checks.SKIP):
            raise AssertionError(f"check {c.name} has status {c.status}")
    out.ok(strict=True)


def attestation_fields(data: bytes) -> None:
    """The captured response with one field replaced by fuzzer bytes: reaches the deep checks
    (signature, AK binding, event log, IMA, containers) with structurally valid protobuf."""
    global _VERIFIER
    if _VERIFIER is None:
        _VERIFIER = _Verifier()
    fdp = atheris.FuzzedDataProvider(data)
    base = Tpm2dToRemote()
    base.MergeFromString(_VERIFIER.response)
    field = fdp.PickValueInList(["quoted", "signature", "certificate", "ak_public", "ak_parent_public",
                                 "uefi_event_log", "ml_ima_entry", "pcr_values", "ml_container_entry"])
    blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    if field == "pcr_values":
        del base.pcr_values[:]
        try:
            base.MergeFromString(blob)
        except Exception:
            return
    elif field == "ml_container_entry":
        del base.ml_container_entry[:]
        try:
            base.MergeFromString(blob)
        except Exception:
            return
    else:
        setattr(base, field, blob)
    checks.verify(_VERIFIER.context(), base)

