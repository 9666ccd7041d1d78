"""Every check of one attestation response, each with its own verdict and message: the original's
first, in its order (`checks_original`), then what it skips (`checks_extra`). A check is PASS, FAIL
or SKIP; the verdict is good only when nothing FAILs (`strict` also fails on SKIP)."""

from __future__ import annotations

from cml_common.messages.attestation_pb2 import Tpm2dToRemote

from . import tpmstructs
from .checks_extra import check_ak_binding, check_certificate, check_event_log, check_freshness, check_structure
from .checks_original import (
    check_containers,
    check_ima,
    check_nonce,
    check_pcr_digest,
    check_pcr_values,
    check_signature,
)
from .outcome import FAIL, PASS, SKIP, Check, Context, Outcome, requested_pcrs

__all__ = ["FAIL", "PASS", "SKIP", "Check", "Context", "Outcome", "requested_pcrs", "verify"]


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

    check_pcr_values(out, cfg, resp)
    check_nonce(out, ctx, quote)
    leaf = check_certificate(out, ctx, resp)
    check_signature(out, resp, leaf)
    check_ak_binding(out, resp, leaf, quote)
    check_structure(out, quote, resp, requested_pcrs(cfg))
    check_pcr_digest(out, resp, quote)
    check_freshness(out, ctx, quote, resp)
    check_event_log(out, ctx, resp, values)
    check_ima(out, cfg, resp, values)
    check_containers(out, ctx, resp, values)
    return out


