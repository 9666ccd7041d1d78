"""Routes each request to its handler after the access check."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cmld.control.access import is_allowed
from cmld.control.container_commands import ContainerCommands
from cmld.control.device_commands import DeviceCommands
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.daemon import CmldState

log = logging.getLogger(__name__)
C = ControllerToDaemon
Handler = Callable[[ControllerToDaemon, ControlConnection], Awaitable[None]]
# Read-only queries are logged at debug level: monitoring polls them constantly.
QUIET = frozenset({C.LIST_CONTAINERS, C.GET_CONTAINER_STATUS, C.GET_CONTAINER_CONFIG,
                   C.LIST_GUESTOS_CONFIGS, C.GET_DEVICE_STATS, C.GET_PROVISIONED,
                   C.CONTAINER_CMLD_HANDLES_PIN, C.CONTAINER_EXEC_INPUT})


class Dispatcher:
    def __init__(self, state: CmldState) -> None:
        self.state = state
        dev = DeviceCommands(state)
        ctr = ContainerCommands(state)
        self.connection_closed = ctr.connection_closed
        self.table: dict[int, Handler] = {
            C.LIST_GUESTOS_CONFIGS: dev.list_guestos_configs,
            C.LIST_CONTAINERS: dev.list_containers,
            C.GET_CONTAINER_STATUS: dev.get_container_status,
            C.GET_CONTAINER_CONFIG: dev.get_container_config,
            C.GET_LAST_LOG: dev.get_last_log,
            C.GET_DEVICE_STATS: dev.get_device_stats,
            C.PUSH_GUESTOS_CONFIG: dev.push_guestos_config,
            C.RELOAD_CONTAINERS: dev.reload_containers,
            C.CREATE_CONTAINER: ctr.create,
            C.REMOVE_CONTAINER: ctr.remove,
            C.REGISTER_LOCALCA: dev.register_localca,
            C.REGISTER_NEWCA: dev.register_newca,
            C.REMOVE_GUESTOS: dev.remove_guestos,
            C.WIPE_DEVICE: dev.wipe_device,
            C.REBOOT_DEVICE: dev.reboot_device,
            C.SET_PROVISIONED: dev.set_provisioned,
            C.GET_PROVISIONED: dev.get_provisioned,
            C.DESTROY_SYSTEM: dev.unsupported,  # needs tpm2d (TPM clear)
            C.PULL_DEVICE_CSR: dev.pull_device_csr,
            C.PUSH_DEVICE_CERT: dev.push_device_cert,
            C.CHANGE_DEVICE_PIN: dev.unsupported,  # deprecated in the original too
            C.CONTAINER_START: ctr.start,
            C.CONTAINER_STOP: ctr.stop,
            C.CONTAINER_SWITCH: ctr.not_yet,
            C.CONTAINER_FREEZE: ctr.freeze,
            C.CONTAINER_UNFREEZE: ctr.unfreeze,
            C.CONTAINER_WIPE: ctr.wipe,
            C.CONTAINER_SNAPSHOT: ctr.not_yet,
            C.CONTAINER_ALLOWAUDIO: ctr.not_yet,
            C.CONTAINER_DENYAUDIO: ctr.not_yet,
            C.CONTAINER_ASSIGNIFACE: ctr.not_yet,
            C.CONTAINER_UNASSIGNIFACE: ctr.not_yet,
            C.CONTAINER_LIST_IFACES: ctr.not_yet,
            C.CONTAINER_EXEC_CMD: ctr.exec_cmd,
            C.CONTAINER_EXEC_INPUT: ctr.exec_input,
            C.CONTAINER_UPDATE_CONFIG: ctr.update_config,
            C.CONTAINER_CHANGE_TOKEN_PIN: ctr.change_token_pin,
            C.CONTAINER_CMLD_HANDLES_PIN: ctr.cmld_handles_pin,
            C.CONTAINER_DEV_ACCESS: ctr.dev_access,
        }

    async def __call__(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        name = C.Command.Name(req.command)
        if not is_allowed(req.command, privileged=conn.privileged, provisioned=self.state.provisioned):
            why = "the device is provisioned" if conn.privileged else "this socket is unprivileged"
            log.warning("%s: %s refused: %s", conn, name, why)
            await conn.send(response(DaemonToController.CMD_UNSUPPORTED))
            return
        handler = self.table.get(req.command)
        if handler is None:
            log.warning("%s: %s has no handler", conn, name)
            await conn.send(response(DaemonToController.CMD_UNSUPPORTED))
            return
        log.log(logging.DEBUG if req.command in QUIET else logging.INFO, "%s: %s", conn, name)
        await handler(req, conn)
