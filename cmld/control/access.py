"""Which control commands a client may use (inventory §3.6).

Unlike the original, the provisioned-mode restriction also applies in hosted mode: provisioning
is a security state, and a development flag must not silently lift it.
"""

from __future__ import annotations

from cml_common.messages.control_pb2 import ControllerToDaemon as C

UNPRIVILEGED = frozenset({C.LIST_GUESTOS_CONFIGS, C.PUSH_GUESTOS_CONFIG, C.REGISTER_LOCALCA})

PROVISIONED = frozenset({
    C.LIST_GUESTOS_CONFIGS, C.LIST_CONTAINERS, C.GET_LAST_LOG, C.GET_DEVICE_STATS,
    C.CONTAINER_CHANGE_TOKEN_PIN, C.CREATE_CONTAINER, C.REBOOT_DEVICE, C.GET_PROVISIONED,
    C.DESTROY_SYSTEM, C.CONTAINER_START, C.CONTAINER_UPDATE_CONFIG, C.GET_CONTAINER_STATUS,
    C.GET_CONTAINER_CONFIG, C.CONTAINER_CMLD_HANDLES_PIN, C.CONTAINER_STOP,
    C.CONTAINER_LIST_IFACES, C.PUSH_GUESTOS_CONFIG,
})


# AUDIT_READ (extension) is for privileged clients only (the host socket and c0's), also once
# provisioned: reading the audit trail is what an operator of a provisioned device needs.
EXTENSIONS_PROVISIONED = frozenset({C.AUDIT_READ})


def is_allowed(command: int, *, privileged: bool, provisioned: bool) -> bool:
    if not privileged:
        return command in UNPRIVILEGED
    if provisioned:
        return command in PROVISIONED or command in EXTENSIONS_PROVISIONED
    return True
