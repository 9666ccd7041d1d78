"""Every check of one attestation response, each with its own verdict and message.

The original's checks come first, in its order (PCR values, nonce, quote signature, PCR digest,
IMA, containers; user docs §5), then what it skips: the device certificate chain, the binding of
the quoting key to that certificate, the quote's structure and PCR selection, freshness against
the last quote seen from the same key, the UEFI event log replayed to PCRs 0-7 and compared with a
reference policy, and the measured GuestOS images against signed GuestOS configs.

A check is PASS, FAIL or SKIP (nothing to check against: e.g. no golden PCR values configured).
The verdict is good only when nothing FAILs; `strict` also fails on SKIP.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cml_common.messages.attestation_pb2 import ADVANCED, ALL, BASIC, MlContainerEntry, Tpm2dToRemote
from cml_common.messages.rattestation_config_pb2 import RAttestationConfig
from scd.chain import ChainError, build_path

from . import eventlog, guestos_refs, ima, tpmstructs
from .freshness import FreshnessStore
from .refpolicy import EventLogPolicy, PolicyError

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    replay: eventlog.Replay | None = None
    device_uuid: str = ""

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def ok(self, strict: bool = False) -> bool:
        bad = {FAIL, SKIP} if strict else {FAIL}
        return bool(self.checks) and not any(c.status in bad for c in self.checks)


def requested_pcrs(cfg: RAttestationConfig) -> list[int]:
    if cfg.atype == BASIC:
        return list(range(12))
    if cfg.atype == ALL:
        return list(range(24))
    if cfg.atype == ADVANCED:
        return [i for i in range(24) if cfg.pcrs & (1 << i)]
    return []


def parse_hex(text: str) -> bytes:
    t = text.strip()
    if t[:2] in ("0x", "0X"):
        t = t[2:]
    return bytes.fromhex(t)


def _device_uuid(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.upper().startswith("UUID:"):
            return uri[5:]
    return ""


@dataclass
class Context:
    cfg: RAttestationConfig
    base: Path  # directory of the config file: relative paths are resolved against it
    nonce: bytes
    freshness: FreshnessStore | None = None
    now: datetime.datetime | None = None

    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.base / q


def verify(ctx: Context, resp: Tpm2dToRemote) -> Outcome:
    out = Outcome()
    cfg = ctx.cfg
    if resp.error_message:
        out.add("response", FAIL, f"the device could not attest: {resp.error_message}")
        return out
    if not resp.HasField("quoted") or not resp.HasField("signature"):
        out.add("response", FAIL, "the response carries no quote or no signature")
        return out
    try:
        quote = tpmstructs.parse_quote(bytes(resp.quoted))
    except tpmstructs.StructError as e:
        out.add("quote structure", FAIL, str(e))
        return out
    values = {p.number: bytes(p.value) for p in resp.pcr_values}

    _pcr_values(out, cfg, resp)
    _nonce(out, ctx, quote)
    leaf = _certificate(out, ctx, resp)
    _signature(out, resp, leaf)
    _ak_binding(out, resp, leaf, quote)
    _structure(out, quote, resp, requested_pcrs(cfg))
    _pcr_digest(out, resp, quote)
    _freshness(out, ctx, quote, resp)
    _event_log(out, ctx, resp, values)
    _ima(out, cfg, resp, values)
    _containers(out, ctx, resp, values)
    return out


# --- the original's checks -------------------------------------------------------------------


def _pcr_values(out: Outcome, cfg: RAttestationConfig, resp: Tpm2dToRemote) -> None:
    if not cfg.check_pcr_values or not cfg.pcr_values:
        out.add("pcr values", SKIP, "no golden pcr_values configured")
        return
    if len(cfg.pcr_values) != len(resp.pcr_values):
        out.add("pcr values", FAIL, f"Number of configured PCR values ({len(cfg.pcr_values)}) does not match "
                                    f"responded PCR values ({len(resp.pcr_values)})")
        return
    bad = []
    for want, got in zip(cfg.pcr_values, resp.pcr_values, strict=True):
        try:
            value = parse_hex(want.value)
        except ValueError:
            bad.append(f"configured PCR {want.number} value {want.value!r} is not hex")
            continue
        if want.number != got.number:
            bad.append(f"configured PCR number ({want.number}) does not match responded PCR number ({got.number})")
        elif len(got.value) != cfg.halg or value != bytes(got.value):
            bad.append(f"PCR_{got.number} VERIFICATION FAILED: {bytes(got.value).hex()} != {value.hex()}")
    if bad:
        out.add("pcr values", FAIL, "; ".join(bad))
    else:
        out.add("pcr values", PASS, f"{len(cfg.pcr_values)} PCRs equal the configured values")


def _nonce(out: Outcome, ctx: Context, quote: tpmstructs.Quote) -> None:
    if quote.extra_data == ctx.nonce:
        out.add("nonce", PASS, f"the quote carries our nonce {ctx.nonce.hex()}")
    else:
        out.add("nonce", FAIL, f"the quote's extraData {quote.extra_data.hex() or '(empty)'} is not the nonce "
                               f"{ctx.nonce.hex()} sent: a stale or replayed response")


def _signature(out: Outcome, resp: Tpm2dToRemote, leaf: x509.Certificate | None) -> None:
    if leaf is None:
        out.add("quote signature", FAIL, "no certificate to verify the quote signature with")
        return
    try:
        sig = tpmstructs.parse_signature(bytes(resp.signature))
    except tpmstructs.StructError as e:
        out.add("quote signature", FAIL, str(e))
        return
    pub = leaf.public_key()
    if not isinstance(pub, rsa.RSAPublicKey):
        out.add("quote signature", FAIL, "the certificate's key is not RSA")
        return
    if sig.hash_alg != tpmstructs.TPM_ALG_SHA256:
        out.add("quote signature", FAIL, f"signature hash {sig.hash_alg:#x} is not SHA-256")
        return
    pad: padding.AsymmetricPadding = (padding.PKCS1v15() if sig.alg == tpmstructs.TPM_ALG_RSASSA else
                                      padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO))
    try:
        pub.verify(sig.sig, bytes(resp.quoted), pad, hashes.SHA256())
    except (InvalidSignature, ValueError):
        out.add("quote signature", FAIL, "VERIFY QUOTE SIGNATURE FAILED: the quote is not signed by the "
                                         "certificate's key")
        return
    scheme = "RSASSA" if sig.alg == tpmstructs.TPM_ALG_RSASSA else "RSAPSS"
    out.add("quote signature", PASS, f"{scheme}/SHA-256 signature by the certificate's key")


def _pcr_digest(out: Outcome, resp: Tpm2dToRemote, quote: tpmstructs.Quote) -> None:
    calc = hashlib.sha256(b"".join(bytes(p.value) for p in resp.pcr_values)).digest()
    if calc == quote.pcr_digest:
        out.add("pcr digest", PASS, "the PCR values sent are the ones quoted")
    else:
        out.add("pcr digest", FAIL, f"VERIFY AGGREGATED PCR FAILED: the PCR values sent hash to {calc.hex()}, "
                                    f"the quote says {quote.pcr_digest.hex()}")


def _find(values: dict[int, bytes], pcr: int) -> bytes | None:
    return values.get(pcr)


def _ima(out: Outcome, cfg: RAttestationConfig, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
    if not cfg.verify_ima:
        out.add("ima", SKIP, "verify_ima: false")
        return
    pcr = _find(values, cfg.ima_pcr)
    if pcr is None:
        out.add("ima", FAIL, f"Configured IMA PCR {cfg.ima_pcr} not present")
        return
    if not resp.HasField("ml_ima_entry"):
        if pcr == bytes(32):
            out.add("ima", PASS, f"no IMA list and PCR {cfg.ima_pcr} never extended (IMA off)")
        else:
            out.add("ima", FAIL, "Response does not contain IMA entries")
        return
    try:
        entries = ima.parse(bytes(resp.ml_ima_entry))
    except ima.ImaError as e:
        out.add("ima", FAIL, f"IMA list does not parse: {e}")
        return
    bad = ima.check_template_hashes(entries)
    if bad:
        out.add("ima", FAIL, "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))
        return
    calc = ima.replay(entries, cfg.ima_pcr)
    if calc != pcr:
        out.add("ima", FAIL, f"{len(entries)} IMA entries replay to {calc.hex()}, PCR {cfg.ima_pcr} is {pcr.hex()}")
        return
    out.add("ima", PASS, f"{len(entries)} IMA entries ({', '.join(sorted({e.template for e in entries}))}) "
                         f"replay to PCR {cfg.ima_pcr}")


def _containers(out: Outcome, ctx: Context, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
    cfg = ctx.cfg
    if not cfg.verify_containers:
        out.add("containers", SKIP, "verify_containers: false")
        return
    pcr = _find(values, cfg.container_pcr)
    if pcr is None:
        out.add("containers", FAIL, f"Configured container PCR {cfg.container_pcr} not present")
        return
    entries = list(resp.ml_container_entry)
    if not entries and pcr != bytes(32):
        out.add("containers", FAIL, "Response does not contain container entries, but PCR "
                                    f"{cfg.container_pcr} was extended")
        return
    calc = bytes(32)
    for i, e in enumerate(entries):
        if e.template_hash_alg != "sha256":
            out.add("containers", FAIL, f"entry {i} ({e.filename}): template hash algorithm {e.template_hash_alg}")
            return
        calc = hashlib.sha256(calc + (bytes(e.data_hash) + bytes(32))[:32]).digest()
        if bytes(e.template_hash) != calc:
            out.add("containers", FAIL, f"entry {i} ({e.filename}): its template hash is not the PCR value after it")
            return
    if calc != pcr:
        out.add("containers", FAIL, f"{len(entries)} container entries replay to {calc.hex()}, PCR "
                                    f"{cfg.container_pcr} is {pcr.hex()}")
        return
    out.add("containers", PASS, f"{len(entries)} measured GuestOS images replay to PCR {cfg.container_pcr}")
    _guestos(out, ctx, entries)


# --- what the original skips -----------------------------------------------------------------


def _certificate(out: Outcome, ctx: Context, resp: Tpm2dToRemote) -> x509.Certificate | None:
    if not resp.certificate:
        out.add("certificate", FAIL, "the response carries no device certificate")
        return None
    try:
        chain = x509.load_pem_x509_certificates(bytes(resp.certificate))
    except ValueError as e:
        out.add("certificate", FAIL, f"the device certificate does not parse: {e}")
        return None
    leaf = chain[0]
    out.device_uuid = _device_uuid(leaf)
    if not ctx.cfg.ca_cert:
        out.add("certificate", FAIL, "no ca_cert in the config: the device identity cannot be checked "
                                     f"(device certificate '{leaf.subject.rfc4514_string()}')")
        return leaf
    try:
        roots = x509.load_pem_x509_certificates(ctx.path(ctx.cfg.ca_cert).read_bytes())
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


def _ak_binding(out: Outcome, resp: Tpm2dToRemote, leaf: x509.Certificate | None, quote: tpmstructs.Quote) -> None:
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


def _structure(out: Outcome, quote: tpmstructs.Quote, resp: Tpm2dToRemote, requested: list[int]) -> None:
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


def _freshness(out: Outcome, ctx: Context, quote: tpmstructs.Quote, resp: Tpm2dToRemote) -> None:
    if ctx.freshness is None:
        out.add("freshness", SKIP, "no --state-dir: earlier quotes of this device are not remembered")
        return
    problem = ctx.freshness.check(quote)
    if problem:
        out.add("freshness", FAIL, f"replayed quote: {problem}")
    else:
        out.add("freshness", PASS, f"TPM clock {quote.clock} ms (reset {quote.reset_count}) is newer than any "
                                   "quote seen from this key")


def _event_log(out: Outcome, ctx: Context, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
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


def _guestos(out: Outcome, ctx: Context, entries: list[MlContainerEntry]) -> None:
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
