"""What the original verifier skips: the device certificate chain, the binding of the quoting
key to it, the quote's structure and selection, freshness, the UEFI event log against a reference
policy, and the measured GuestOS images against signed GuestOS configs."""

from __future__ import annotations

import datetime
import struct

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from cml_common.certs import load_pem_certificates
from cml_common.messages.attestation_pb2 import MlContainerEntry, Tpm2dToRemote
from scd.chain import ChainError, build_path

from . import eventlog, guestos_refs, tpmstructs
from .outcome import FAIL, PASS, SKIP, Context, Outcome, device_uuid
from .refpolicy import EventLogPolicy, PolicyError


def check_certificate(out: Outcome, ctx: Context, resp: Tpm2dToRemote) -> x509.Certificate | None:
    if not resp.certificate:
        out.add("certificate", FAIL, "the response carries no device certificate")
        return None
    try:
        chain = load_pem_certificates(bytes(resp.certificate))
        leaf = chain[0]
        # Names, extensions and the key are parsed lazily: read them now, so a certificate
        # whose key or names cannot be read is refused here, not by a crash in a later check
        # (found by fuzzing the attestation response).
        leaf.public_key()
        leaf.subject.rfc4514_string()
        leaf.extensions  # noqa: B018
    except (ValueError, UnsupportedAlgorithm) as e:
        out.add("certificate", FAIL, f"the device certificate does not parse: {e}")
        return None
    out.device_uuid = device_uuid(leaf)
    if not ctx.cfg.ca_cert:
        out.add("certificate", FAIL, "no ca_cert in the config: the device identity cannot be checked "
                                     f"(device certificate '{leaf.subject.rfc4514_string()}')")
        return leaf
    try:
        roots = load_pem_certificates(ctx.path(ctx.cfg.ca_cert).read_bytes())
    except (OSError, ValueError) as e:
        out.add("certificate", FAIL, f"ca_cert {ctx.cfg.ca_cert}: {e}")
        return leaf
    now = ctx.now or datetime.datetime.now(datetime.UTC)
    errors = []
    for root in roots:
        try:
            path = build_path(leaf, chain[1:], root, now)
        except ChainError as e:
            errors.append(str(e))
            continue
        who = f"device {out.device_uuid}" if out.device_uuid else leaf.subject.rfc4514_string()
        out.add("certificate", PASS, f"{who}: " + " -> ".join(c.subject.rfc4514_string() for c in path))
        return leaf
    out.add("certificate", FAIL, f"'{leaf.subject.rfc4514_string()}' does not chain to the configured CA: "
                                 + "; ".join(errors))
    return leaf


def check_ak_binding(out: Outcome, resp: Tpm2dToRemote, leaf: x509.Certificate | None, quote: tpmstructs.Quote) -> None:
    if not resp.ak_public:
        out.add("ak binding", SKIP, "no ak_public in the response (a GyroidOS tpm2d): the certificate's key "
                                    "signed the quote, its TPM attributes are unknown")
        return
    try:
        ak = tpmstructs.parse_public(bytes(resp.ak_public))
        parent = tpmstructs.parse_public(bytes(resp.ak_parent_public))
        owner = struct.pack(">I", tpmstructs.TPM_RH_OWNER)
        qn = tpmstructs.qualified_name(tpmstructs.qualified_name(owner, parent.name()), ak.name())
    except tpmstructs.StructError as e:
        out.add("ak binding", FAIL, str(e))
        return
    problems = []
    if qn != quote.qualified_signer:
        problems.append("the quote's qualifiedSigner is not the qualified name of the key sent "
                        "(under its owner-hierarchy parent)")
    need_parent = tpmstructs.ATTR_FIXEDTPM | tpmstructs.ATTR_RESTRICTED | tpmstructs.ATTR_DECRYPT
    if parent.attributes & need_parent != need_parent:
        problems.append("the quoting key's parent is not a fixedTPM restricted storage key")
    if leaf is not None:
        pub = leaf.public_key()
        if not (isinstance(pub, rsa.RSAPublicKey) and pub.public_numbers().n == int.from_bytes(ak.modulus, "big")
                and pub.public_numbers().e == ak.exponent):
            problems.append("the certificate's public key is not the quoting key")
    need = {"fixedTPM": tpmstructs.ATTR_FIXEDTPM, "fixedParent": tpmstructs.ATTR_FIXEDPARENT,
            "sensitiveDataOrigin": tpmstructs.ATTR_SENSITIVEDATAORIGIN, "sign": tpmstructs.ATTR_SIGN,
            "restricted": tpmstructs.ATTR_RESTRICTED}
    missing = [k for k, bit in need.items() if not ak.attributes & bit]
    if missing:
        problems.append(f"the quoting key lacks {', '.join(missing)} (it could sign forged quotes or leave the TPM)")
    if problems:
        out.add("ak binding", FAIL, "; ".join(problems))
    else:
        out.add("ak binding", PASS, "the certified key is a restricted, TPM-resident signing key and signed this quote")


def check_structure(out: Outcome, quote: tpmstructs.Quote, resp: Tpm2dToRemote, requested: list[int]) -> None:
    problems = []
    if quote.magic != tpmstructs.TPM_GENERATED_VALUE:
        problems.append(f"magic {quote.magic:#x} is not TPM_GENERATED")
    sel = [s for s in quote.selections if s.pcrs]
    if len(sel) != 1 or sel[0].hash_alg != tpmstructs.TPM_ALG_SHA256:
        problems.append("the quote does not select exactly the SHA-256 bank")
    else:
        quoted = list(sel[0].pcrs)
        sent = [p.number for p in resp.pcr_values]
        if quoted != sent:
            problems.append(f"quoted PCRs {quoted} differ from the PCR values sent {sent}")
        if requested and quoted != requested:
            problems.append(f"quoted PCRs {quoted} are not the ones requested {requested}")
    if problems:
        out.add("quote structure", FAIL, "; ".join(problems))
    else:
        out.add("quote structure", PASS, f"TPM-generated quote of SHA-256 PCRs {list(sel[0].pcrs)}")


def check_freshness(out: Outcome, ctx: Context, quote: tpmstructs.Quote, resp: Tpm2dToRemote) -> None:
    if ctx.freshness is None:
        out.add("freshness", SKIP, "no --state-dir: earlier quotes of this device are not remembered")
        return
    problem = ctx.freshness.check(quote)
    if problem:
        out.add("freshness", FAIL, f"replayed quote: {problem}")
    else:
        out.add("freshness", PASS, f"TPM clock {quote.clock} ms (reset {quote.reset_count}) is newer than any "
                                   "quote seen from this key")


def check_event_log(out: Outcome, ctx: Context, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
    cfg = ctx.cfg
    if not cfg.verify_event_log:
        out.add("event log", SKIP, "verify_event_log: false")
        return
    if not resp.uefi_event_log:
        out.add("event log", SKIP if not cfg.event_log_policy else FAIL, "the response carries no UEFI event log")
        return
    try:
        rep = eventlog.replay(bytes(resp.uefi_event_log))
    except eventlog.EventLogError as e:
        out.add("event log", FAIL, str(e))
        return
    mismatched = [p for p in range(8) if p in values and rep.pcrs.get(p, bytes(32)) != values[p]]
    absent = [p for p in range(8) if p not in values]
    if mismatched:
        out.add("event log", FAIL, f"the event log ({len(rep.events)} events) does not replay to quoted PCRs "
                                   f"{mismatched}: a PCR was extended outside the log, or the log was altered")
        return
    if absent:
        out.add("event log", FAIL, f"PCRs {absent} are not quoted, the event log cannot be checked")
        return
    out.replay = rep
    out.add("event log", PASS, f"{len(rep.events)} events replay to quoted PCRs 0-7")
    if not cfg.event_log_policy:
        out.add("event log policy", SKIP, "no event_log_policy configured")
        return
    try:
        pol = EventLogPolicy.load(ctx.path(cfg.event_log_policy))
    except PolicyError as e:
        out.add("event log policy", FAIL, str(e))
        return
    problems = pol.check(rep)
    if problems:
        out.add("event log policy", FAIL, "; ".join(problems))
    else:
        out.add("event log policy", PASS, f"boot matches {pol.description or cfg.event_log_policy}")


def check_guestos(out: Outcome, ctx: Context, entries: list[MlContainerEntry]) -> None:
    cfg = ctx.cfg
    if not cfg.guestos_dir:
        out.add("guestos images", SKIP, "no guestos_dir configured")
        return
    if not cfg.guestos_ca:
        out.add("guestos images", FAIL, "guestos_dir without guestos_ca: the configs' signatures cannot be checked")
        return
    try:
        refs, skipped = guestos_refs.load([ctx.path(d) for d in cfg.guestos_dir], ctx.path(cfg.guestos_ca))
    except (guestos_refs.GuestOSRefError, OSError, ValueError) as e:
        out.add("guestos images", FAIL, str(e))
        return
    problems = []
    for entry in entries:
        fname = entry.filename
        ref = refs.get(guestos_refs.key_of(fname))
        digest = bytes(entry.data_hash).hex()
        if ref is None:
            problems.append(f"{fname}: no signed GuestOS config names this image")
        elif ref.sha256 != digest:
            problems.append(f"{fname}: measured SHA-256 {digest} is not {ref.sha256} from {ref.config.name}")
    if problems:
        why = f" (configs not used: {'; '.join(skipped)})" if skipped else ""
        out.add("guestos images", FAIL, "; ".join(problems) + why)
    else:
        out.add("guestos images", PASS, f"{len(entries)} images match signed GuestOS configs")
