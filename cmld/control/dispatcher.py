"""Routes each request to its handler after the access check, and answers refusals.

A handler that raises a `CmldError` gets the error's reply code with its message in
`error_message` (and a log line); every other exception is a bug and is left to the server,
which logs it with its traceback and answers CMD_FAILED."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cmld.audit import events
from cmld.audit.auditor import Auditor
from cmld.control.access import is_allowed
from cmld.control.audit_commands import AuditCommands, bind_client, record_command
from cmld.control.config_commands import ConfigCommands
from cmld.control.device_access_commands import DeviceAccessCommands
from cmld.control.exec_commands import ExecCommands
from cmld.control.guestos_commands import GuestOSCommands
from cmld.control.iface_commands import InterfaceCommands
from cmld.control.lifecycle_commands import LifecycleCommands
from cmld.control.provisioning_commands import ProvisioningCommands
from cmld.control.query_commands import QueryCommands
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.control.system_commands import SystemCommands
from cmld.control.token_commands import TokenCommands
from cmld.daemon import Cmld
from cmld.errors import CmldError

log = logging.getLogger(__name__)
C = ControllerToDaemon
Handler = Callable[[ControllerToDaemon, ControlConnection], Awaitable[None]]
# Read-only queries are logged at debug level: monitoring polls them constantly.
QUIET = frozenset({C.LIST_CONTAINERS, C.GET_CONTAINER_STATUS, C.GET_CONTAINER_CONFIG,
                   C.LIST_GUESTOS_CONFIGS, C.GET_DEVICE_STATS, C.GET_PROVISIONED,
                   C.CONTAINER_CMLD_HANDLES_PIN, C.CONTAINER_EXEC_INPUT})


class Dispatcher:
    def __init__(self, cmld: Cmld, auditor: Auditor | None = None) -> None:
        self.cmld = cmld
        audit = AuditCommands(auditor)
        query, config, life = QueryCommands(cmld), ConfigCommands(cmld), LifecycleCommands(cmld)
        guestos, prov, system = GuestOSCommands(cmld), ProvisioningCommands(cmld), SystemCommands(cmld)
        exe, token, dev = ExecCommands(cmld), TokenCommands(cmld), DeviceAccessCommands(cmld)
        iface = InterfaceCommands(cmld)
        self.connection_closed = exe.connection_closed
        self.table: dict[int, Handler] = {
            C.LIST_GUESTOS_CONFIGS: query.list_guestos_configs,
            C.LIST_CONTAINERS: query.list_containers,
            C.GET_CONTAINER_STATUS: query.get_container_status,
            C.GET_CONTAINER_CONFIG: query.get_container_config,
            C.GET_LAST_LOG: query.get_last_log,
            C.GET_DEVICE_STATS: query.get_device_stats,
            C.PUSH_GUESTOS_CONFIG: guestos.push_guestos_config,
            C.RELOAD_CONTAINERS: config.reload,
            C.CREATE_CONTAINER: config.create,
            C.REMOVE_CONTAINER: life.remove,
            C.REGISTER_LOCALCA: guestos.register_localca,
            C.REGISTER_NEWCA: guestos.register_newca,
            C.REMOVE_GUESTOS: guestos.remove_guestos,
            C.WIPE_DEVICE: system.wipe_device,
            C.REBOOT_DEVICE: system.reboot_device,
            C.SET_PROVISIONED: prov.set_provisioned,
            C.GET_PROVISIONED: prov.get_provisioned,
            C.DESTROY_SYSTEM: system.destroy_system,
            C.PULL_DEVICE_CSR: prov.pull_device_csr,
            C.PUSH_DEVICE_CERT: prov.push_device_cert,
            C.CHANGE_DEVICE_PIN: system.unsupported,  # deprecated in the original too
            C.CONTAINER_START: life.start,
            C.CONTAINER_STOP: life.stop,
            C.CONTAINER_SWITCH: dev.not_yet,
            C.CONTAINER_FREEZE: life.freeze,
            C.CONTAINER_UNFREEZE: life.unfreeze,
            C.CONTAINER_WIPE: life.wipe,
            C.CONTAINER_SNAPSHOT: dev.not_yet,
            C.CONTAINER_ALLOWAUDIO: dev.not_yet,
            C.CONTAINER_DENYAUDIO: dev.not_yet,
            C.CONTAINER_ASSIGNIFACE: iface.assign_iface,
            C.CONTAINER_UNASSIGNIFACE: iface.unassign_iface,
            C.CONTAINER_LIST_IFACES: iface.list_ifaces,
            C.CONTAINER_EXEC_CMD: exe.exec_cmd,
            C.CONTAINER_EXEC_INPUT: exe.exec_input,
            C.CONTAINER_UPDATE_CONFIG: config.update_config,
            C.CONTAINER_CHANGE_TOKEN_PIN: token.change_token_pin,
            C.CONTAINER_CMLD_HANDLES_PIN: token.cmld_handles_pin,
            C.CONTAINER_DEV_ACCESS: dev.dev_access,
            C.AUDIT_READ: audit.read,
        }

    async def __call__(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        conn.first_reply = None
        token = bind_client(conn)
        try:
            await self._dispatch(req, conn)
        except Exception:
            if conn.first_reply is None:  # the server answers CMD_FAILED after this
                conn.first_reply = response(DaemonToController.CMD_FAILED, "internal error")
            raise
        finally:
            record_command(req, conn, conn.first_reply)
            events.client.reset(token)

    async def _dispatch(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        name = C.Command.Name(req.command)
        if not is_allowed(req.command, privileged=conn.privileged, provisioned=self.cmld.provisioned):
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
        try:
            await handler(req, conn)
        except CmldError as e:
            log.warning("%s: %s refused: %s", conn, name, e)
            await conn.send(response(e.reply, str(e)))
