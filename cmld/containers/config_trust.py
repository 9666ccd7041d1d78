"""Whether a container config sent by a client may be used: with `signed_configs` (the default)
only a signature scd verifies as GOOD counts; a locally signed container config is refused, as
the original. Nothing is written before this has passed."""

from __future__ import annotations

from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.audit import events
from cmld.audit.signer import signer_of
from cmld.clients.scd import ScdClient, ScdError, VerifyResult
from cmld.errors import CmldError

WHY = {
    VerifyResult.GOOD: "valid",
    VerifyResult.ERROR: "the signature or certificate could not be read",
    VerifyResult.LOCALLY_SIGNED: "signed under the local CA, which is not accepted for container configs",
    VerifyResult.BAD_SIGNATURE: "the signature does not match the config bytes",
    VerifyResult.BAD_CERTIFICATE: "the certificate chain does not lead to a trusted CA, or is not valid now",
}


class ConfigRefused(CmldError):
    """A config that must not be stored; answered with an empty CONTAINER_CONFIG (the original)."""

    reply = D.CMD_FAILED


async def trusted_config(raw: bytes, sig: bytes, cert: bytes, *, signed_configs: bool, provisioned: bool,
                         scd: ScdClient) -> bytes:
    """`raw` if it may be used; ConfigRefused with the reason otherwise."""
    if not raw:
        raise ConfigRefused("no container_config_file given")
    if not signed_configs:
        return raw
    if not sig or not cert:
        raise ConfigRefused("device.conf requires signed configs and the request has no signature and certificate")
    try:
        result = await scd.verify_buf(raw, sig, cert, ignore_time=not provisioned)
    except ScdError as e:
        raise ConfigRefused(f"its signature cannot be checked: {e}") from e
    if result != VerifyResult.GOOD:
        events.emit("FSA", "CONTAINER_MGMT", "verify-failed", None, what="container config", result=result.name,
                    signer=signer_of(cert))
        raise ConfigRefused(f"signature check {result.name} ({WHY[result]})")
    return raw
