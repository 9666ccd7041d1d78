"""Whether a config update changes the container's token (the original's
c_smartcard_has_token_changed): another token type, or for a USB token another reader serial.
The data of the container was encrypted under a key the old token wraps, so the original wipes
the container and releases the pairing when this happens."""

from __future__ import annotations

from cml_common.messages.container_pb2 import ContainerConfig, ContainerTokenType, ContainerUsbType

# Token types named by a serial in the TOKEN usb_config (PKCS#11 ones by their label: ours).
_SERIAL_NAMED = {ContainerTokenType.USB, ContainerTokenType.PKCS11}


def token_serial(cfg: ContainerConfig) -> str | None:
    return next((u.serial for u in cfg.usb_configs if u.type == ContainerUsbType.TOKEN), None)


def token_changed(old: ContainerConfig, new: ContainerConfig) -> str | None:
    """Why the token changed ("token type SOFT -> USB", "USB token serial A -> B"), or None."""
    if old.token_type != new.token_type:
        return (f"token type {ContainerTokenType.Name(old.token_type)} -> "
                f"{ContainerTokenType.Name(new.token_type)}")
    if old.token_type in _SERIAL_NAMED:
        before, after = token_serial(old), token_serial(new)
        if before is None or after is None or before != after:
            return f"{ContainerTokenType.Name(old.token_type)} token serial {before} -> {after}"
    return None
