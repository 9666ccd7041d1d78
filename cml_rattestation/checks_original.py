"""The original rattestation's checks, in its order (user docs §5): PCR values, nonce, quote
signature, PCR digest, IMA, containers."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cml_common.messages.attestation_pb2 import Tpm2dToRemote
from cml_common.messages.rattestation_config_pb2 import RAttestationConfig

from . import ima, tpmstructs
from .checks_extra import check_guestos
from .outcome import FAIL, PASS, SKIP, Context, Outcome, parse_hex


def check_pcr_values(out: Outcome, cfg: RAttestationConfig, resp: Tpm2dToRemote) -> None:
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


def check_nonce(out: Outcome, ctx: Context, quote: tpmstructs.Quote) -> None:
    if quote.extra_data == ctx.nonce:
        out.add("nonce", PASS, f"the quote carries our nonce {ctx.nonce.hex()}")
    else:
        out.add("nonce", FAIL, f"the quote's extraData {quote.extra_data.hex() or '(empty)'} is not the nonce "
                               f"{ctx.nonce.hex()} sent: a stale or replayed response")


def check_signature(out: Outcome, resp: Tpm2dToRemote, leaf: x509.Certificate | None) -> None:
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


def check_pcr_digest(out: Outcome, resp: Tpm2dToRemote, quote: tpmstructs.Quote) -> None:
    calc = hashlib.sha256(b"".join(bytes(p.value) for p in resp.pcr_values)).digest()
    if calc == quote.pcr_digest:
        out.add("pcr digest", PASS, "the PCR values sent are the ones quoted")
    else:
        out.add("pcr digest", FAIL, f"VERIFY AGGREGATED PCR FAILED: the PCR values sent hash to {calc.hex()}, "
                                    f"the quote says {quote.pcr_digest.hex()}")


def find_pcr(values: dict[int, bytes], pcr: int) -> bytes | None:
    return values.get(pcr)


def check_ima(out: Outcome, cfg: RAttestationConfig, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
    if not cfg.verify_ima:
        out.add("ima", SKIP, "verify_ima: false")
        return
    pcr = find_pcr(values, cfg.ima_pcr)
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


def check_containers(out: Outcome, ctx: Context, resp: Tpm2dToRemote, values: dict[int, bytes]) -> None:
    cfg = ctx.cfg
    if not cfg.verify_containers:
        out.add("containers", SKIP, "verify_containers: false")
        return
    pcr = find_pcr(values, cfg.container_pcr)
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
    check_guestos(out, ctx, entries)


