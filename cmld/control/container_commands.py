"""Control commands addressed to one container (`container_uuids` holds exactly one UUID).

Unlike the original, an unknown or missing UUID always gets a reply (CMD_FAILED; EXEC_END with a
reason for exec, so a waiting client ends). Commands whose machinery is not in this build yet
answer CMD_UNSUPPORTED; those that only depend on the state answer what the state says.
"""

from __future__ import annotations

import asyncio
import logging
import re

from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.textconfig import ConfigError

from ..container import Container
from ..container_keys import TokenFailure
from ..container_store import parse_container_config
from ..modules.base import StartError
from ..modules.devices import DevicesModule
from ..runtime.exec_session import ExecSession
from ..runtime.manager import Runtime
from ..runtime.transitions import EXEC_STATES, STOPPABLE
from ..scd_client import ScdError, VerifyResult
from ..state import CmldState
from .replies import container_configs, exec_end, response
from .server import ControlConnection

log = logging.getLogger(__name__)

D = DaemonToController
C = ControllerToDaemon
VERIFY_WHY = {
    VerifyResult.GOOD: "valid",
    VerifyResult.ERROR: "the signature or certificate could not be read",
    VerifyResult.LOCALLY_SIGNED: "signed under the local CA, which is not accepted for container configs",
    VerifyResult.BAD_SIGNATURE: "the signature does not match the config bytes",
    VerifyResult.BAD_CERTIFICATE: "the certificate chain does not lead to a trusted CA, or is not valid now",
}
# How long remove and wipe wait for a killed container to be gone (a start in progress first
# runs to its end; then SIGKILL ends the PID namespace at once).
TERMINATE_TIMEOUT = 30.0
DEV_RULE = re.compile(r"^[abc] (\*|\d+):(\*|\d+) [rwm]{1,3}$")


def state_name(c: Container) -> str:
    return ContainerState.Name(c.state)


class ContainerCommands:
    def __init__(self, state: CmldState) -> None:
        self.state = state
        self.sessions: dict[int, ExecSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def resolve(self, req: ControllerToDaemon, conn: ControlConnection) -> Container | None:
        name = C.Command.Name(req.command)
        if len(req.container_uuids) != 1:
            log.warning("%s: %s needs exactly one container UUID, got %d",
                        conn, name, len(req.container_uuids))
            return None
        c = self.state.containers.get(req.container_uuids[0])
        if c is None:
            log.warning("%s: %s: no container %r", conn, name, req.container_uuids[0])
        return c

    async def _resolve_or_fail(self, req: ControllerToDaemon, conn: ControlConnection) -> Container | None:
        c = self.resolve(req, conn)
        if c is None:
            await conn.send(response(D.CMD_FAILED))
        return c

    # ------------------------------------------------------------------ configs

    async def _config_from_request(self, req: ControllerToDaemon, conn: ControlConnection) -> bytes | None:
        """The config bytes, verified by scd when device.conf demands signed configs (the
        default): only GOOD counts (a locally signed container config is refused, as the
        original). Nothing is written before this has passed."""
        if not req.container_config_file:
            log.warning("%s: no container_config_file given", conn)
            return None
        raw = req.container_config_file
        if not self.state.signed_configs:
            return raw
        sig, cert = req.container_config_signature, req.container_config_certificate
        if not sig or not cert:
            log.warning("%s: config refused: device.conf requires signed configs and the request has no "
                        "signature and certificate", conn)
            return None
        try:
            result = await self.state.scd.verify_buf(raw, sig, cert, ignore_time=not self.state.provisioned)
        except ScdError as e:
            log.error("%s: config refused: its signature cannot be checked: %s", conn, e)
            return None
        if result != VerifyResult.GOOD:
            log.warning("%s: config refused: signature check %s (%s)", conn, result.name, VERIFY_WHY[result])
            return None
        log.info("%s: config signature GOOD", conn)
        return raw

    def _sig_and_cert(self, req: ControllerToDaemon) -> tuple[bytes, bytes]:
        """Kept next to the config (`<uuid>.sig`, `<uuid>.cert`) when they were checked."""
        if not self.state.signed_configs:
            return b"", b""
        return req.container_config_signature, req.container_config_certificate

    async def create(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        raw = await self._config_from_request(req, conn)
        if raw is None:
            await conn.send(container_configs())
            return
        try:
            cfg = parse_container_config(raw, "new container config")
        except ConfigError as e:
            log.warning("%s: CREATE_CONTAINER refused: %s", conn, e)
            await conn.send(container_configs())
            return
        if self.state.containers.name_taken(cfg.name):
            log.warning("%s: CREATE_CONTAINER refused: a container named %r exists", conn, cfg.name)
            await conn.send(container_configs())
            return
        if self.state.guestos.latest(cfg.guest_os) is None:
            log.warning("%s: container %r uses GuestOS %r, which is not installed (yet)",
                        conn, cfg.name, cfg.guest_os)
        try:
            c = await asyncio.to_thread(self.state.containers.create, raw, cfg, *self._sig_and_cert(req))
        except OSError as e:
            log.error("%s: CREATE_CONTAINER failed to store the config: %s", conn, e)
            await conn.send(container_configs())
            return
        try:
            await self.state.keys.add_token(c)
        except TokenFailure as e:
            # The container exists; its token is made again at its first start or PIN change.
            log.warning("%s: container %s created, but %s", conn, c.name, e)
        log.info("%s: created container %s (%s)", conn, c.uuid, c.name)
        await conn.send(container_configs([(c.uuid, c.config)]))

    async def update_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.resolve(req, conn)
        raw = await self._config_from_request(req, conn) if c is not None else None
        if c is None or raw is None:
            await conn.send(container_configs())
            return
        try:
            cfg = parse_container_config(raw, f"new config for {c.uuid}")
        except ConfigError as e:
            log.warning("%s: CONTAINER_UPDATE_CONFIG refused: %s", conn, e)
            await conn.send(container_configs())
            return
        if self.state.containers.name_taken(cfg.name, except_uuid=c.uuid):
            log.warning("%s: CONTAINER_UPDATE_CONFIG refused: another container is named %r", conn, cfg.name)
            await conn.send(container_configs())
            return
        try:
            await asyncio.to_thread(self.state.containers.update, c, raw, cfg, *self._sig_and_cert(req))
        except OSError as e:
            log.error("%s: CONTAINER_UPDATE_CONFIG failed to store the config: %s", conn, e)
            await conn.send(container_configs())
            return
        when = "at its next stop" if c.is_active else "now"
        log.info("%s: config of %s updated; applied %s", conn, c.uuid, when)
        await conn.send(container_configs([(c.uuid, cfg)]))

    async def remove(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        if c.is_c0:
            log.warning("%s: c0 cannot be removed", conn)
            await conn.send(response(D.CMD_FAILED))
            return
        if c.is_active and not await self._terminate(c, conn, "REMOVE_CONTAINER"):
            await conn.send(response(D.CMD_FAILED, "container did not stop"))
            return
        try:
            await self.state.keys.remove_token(c)
            await asyncio.to_thread(self.state.containers.remove, c)
            if self.state.runtime is not None:
                self.state.runtime.forget(c.uuid)
        except OSError as e:
            log.error("%s: REMOVE_CONTAINER %s failed: %s", conn, c.uuid, e)
            await conn.send(response(D.CMD_FAILED))
            return
        log.info("%s: removed container %s (%s)", conn, c.uuid, c.name)
        await conn.send(response(D.CMD_OK))

    async def _terminate(self, c: Container, conn: ControlConnection, what: str) -> bool:
        """Kill an active container before its data goes (remove, wipe), as the original does."""
        rt = self.state.runtime
        if rt is None:
            return False
        log.info("%s: %s: %s is %s; killing it first", conn, what, c.name, state_name(c))
        return await rt.compartment(c).terminate(TERMINATE_TIMEOUT)

    async def wipe(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """Deletes the key and every image of the container; a running container is killed
        first (as the original); a ZOMBIE becomes STOPPED."""
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self.state.runtime
        if c.is_active and not await self._terminate(c, conn, "CONTAINER_WIPE"):
            await conn.send(response(D.CMD_FAILED, "container did not stop"))
            return
        try:
            removed = await asyncio.to_thread(self.state.containers.wipe, c)
        except OSError as e:
            log.error("%s: CONTAINER_WIPE %s failed: %s", conn, c.uuid, e)
            await conn.send(response(D.CMD_FAILED, str(e)))
            return
        if c.state == ContainerState.ZOMBIE:
            if rt is not None:
                rt.compartment(c).set_state(ContainerState.STOPPED)
            else:
                c.state = ContainerState.STOPPED
        log.info("%s: wiped %s: %d file(s) removed", conn, c.uuid, len(removed))
        await conn.send(response(D.CMD_OK))

    # ------------------------------------------------------------------ lifecycle

    def _runtime(self) -> Runtime | None:
        rt = self.state.runtime
        if rt is None or rt.driver is None:
            return None
        return rt

    async def start(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self._runtime()
        if c.is_c0:
            await conn.send(response(D.CMD_UNSUPPORTED))
        elif c.is_active:
            await conn.send(response(D.CONTAINER_START_EEXIST, f"container is {state_name(c)}"))
        elif rt is None:
            why = self.state.runtime.unavailable if self.state.runtime else "no container runtime"
            await conn.send(response(D.CONTAINER_START_EINTERNAL, why))
        elif c.state == ContainerState.ZOMBIE:
            await conn.send(response(D.CONTAINER_START_EINTERNAL, "container is ZOMBIE; wipe it first"))
        elif rt.guestos_config(c) is None:
            # Before the token: no PIN attempt is spent on a container that cannot start anyway.
            await conn.send(response(D.CONTAINER_START_EINTERNAL, f"GuestOS {c.config.guest_os!r} is not installed"))
        else:
            setup = req.HasField("container_start_params") and req.container_start_params.setup
            try:
                key = await self._container_key(req, c)
            except TokenFailure as e:
                log.warning("%s: start of %s refused: %s", conn, c.name, e)
                if e.corrupt and rt is not None:
                    rt.compartment(c).set_state(ContainerState.ZOMBIE)
                await conn.send(response(e.code, e.message))
                return
            try:
                await rt.compartment(c).start(setup=setup, key=key)
            except StartError as e:
                log.warning("%s: start of %s refused: %s", conn, c.name, e)
                await conn.send(response(D.CONTAINER_START_EINTERNAL, str(e)))
                return
            log.info("%s: started %s", conn, c.name)
            await conn.send(response(D.CONTAINER_START_OK))

    async def _container_key(self, req: ControllerToDaemon, c: Container) -> bytearray | None:
        """The unwrapped key of a container with a token (None without one): the PIN comes in the
        start parameters; a PIN pad (usb_pin_entry) is not supported by this cmld."""
        keys = self.state.keys
        if not keys.has_token(c):
            return None
        if c.config.usb_pin_entry:
            raise TokenFailure(D.CONTAINER_USB_PIN_ENTRY_FAIL, "PIN entry on a USB PIN pad is not supported "
                                                               "by this cmld")
        if not req.HasField("container_start_params"):
            raise TokenFailure(D.CONTAINER_START_PASSWD_WRONG, f"{c.name} has a token: its PIN is needed")
        return await keys.container_key(c, req.container_start_params.key)

    async def stop(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self._runtime()
        if c.is_c0:
            await conn.send(response(D.CMD_UNSUPPORTED))
        elif c.state not in STOPPABLE or rt is None:
            await conn.send(response(D.CONTAINER_STOP_FAILED_NOT_RUNNING, f"container is {state_name(c)}"))
        else:
            if self.state.keys.has_token(c) and req.HasField("container_start_params"):
                try:
                    await self.state.keys.authorize_stop(c, req.container_start_params.key)
                except TokenFailure as e:
                    log.warning("%s: stop of %s refused: %s", conn, c.name, e)
                    await conn.send(response(e.code, e.message))
                    return
            try:
                await rt.compartment(c).stop()
            except StartError as e:
                await conn.send(response(D.CONTAINER_STOP_FAILED_NOT_RUNNING, str(e)))
                return
            log.info("%s: stopping %s", conn, c.name)
            await conn.send(response(D.CONTAINER_STOP_OK))

    async def freeze(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self._runtime()
        if rt is None or c.state not in (ContainerState.RUNNING, ContainerState.SETUP, ContainerState.FROZEN,
                                         ContainerState.FREEZING):
            log.warning("%s: cannot freeze %s in state %s", conn, c.uuid, state_name(c))
            await conn.send(response(D.CMD_FAILED, f"container is {state_name(c)}"))
            return
        ok = await rt.compartment(c).freeze()
        await conn.send(response(D.CMD_OK) if ok else response(D.CMD_FAILED, "not frozen in time"))

    async def unfreeze(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self._runtime()
        if rt is None or c.state not in (ContainerState.FREEZING, ContainerState.FROZEN):
            log.warning("%s: cannot unfreeze %s in state %s", conn, c.uuid, state_name(c))
            await conn.send(response(D.CMD_FAILED, f"container is {state_name(c)}"))
            return
        ok = await rt.compartment(c).unfreeze()
        await conn.send(response(D.CMD_OK if ok else D.CMD_FAILED))

    async def not_yet(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """Known container, machinery not in this build (network, audio, snapshot, switch)."""
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        if req.command in (C.CONTAINER_ASSIGNIFACE, C.CONTAINER_UNASSIGNIFACE) and not (
            req.HasField("assign_iface_params") and req.assign_iface_params.iface_name
        ):
            log.warning("%s: %s without an interface name", conn, C.Command.Name(req.command))
            await conn.send(response(D.CMD_FAILED))
            return
        log.warning("%s: %s is not supported by this cmld", conn, C.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))

    async def dev_access(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        rt = self._runtime()
        comp = rt.compartment(c) if rt is not None else None
        devices = comp.ctx.data.get("devices") if comp is not None and comp.ctx is not None else None
        if not DEV_RULE.match(req.dev_rule):
            log.warning("%s: DEV_ACCESS: malformed rule %r (want e.g. 'c 4:1 rwm')", conn, req.dev_rule)
            await conn.send(response(D.CMD_FAILED, f"malformed device rule {req.dev_rule!r}"))
        elif c.state not in EXEC_STATES or comp is None or comp.ctx is None or not isinstance(devices, DevicesModule):
            log.warning("%s: DEV_ACCESS: %s is %s", conn, c.uuid, state_name(c))
            await conn.send(response(D.CMD_FAILED, f"container is {state_name(c)}"))
        else:
            try:
                done = devices.dev_access(comp.ctx, req.dev_rule)
            except (ValueError, OSError) as e:
                await conn.send(response(D.CMD_FAILED, str(e)))
                return
            log.info("%s: container %s: device %s %s", conn, c.name, req.dev_rule, done)
            await conn.send(response(D.CMD_OK))

    # ------------------------------------------------------------------ exec

    async def exec_cmd(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.resolve(req, conn)
        rt = self._runtime()
        if c is None:
            await conn.send(exec_end("no such container"))
            return
        if not req.exec_args:
            log.warning("%s: EXEC_CMD without exec_args", conn)
            await conn.send(exec_end("no command given"))
            return
        comp = rt.compartment(c) if rt is not None else None
        ctx = comp.ctx if comp is not None else None
        if c.state not in EXEC_STATES or ctx is None or ctx.init_pid <= 0:
            await conn.send(exec_end(f"container is not running (state {state_name(c)})"))
            return
        if conn.ident in self.sessions:
            await conn.send(exec_end("this connection already runs a command"))
            return
        try:
            session = await ExecSession.in_container(ctx, list(req.exec_args), req.exec_pty)
        except OSError as e:
            await conn.send(exec_end(f"cannot start the command: {e}"))
            return
        log.info("%s: exec in %s: %s (pty %s)", conn, c.name, " ".join(req.exec_args), req.exec_pty)
        self.sessions[conn.ident] = session

        async def output(chunk: bytes) -> None:
            await conn.send(D(code=D.EXEC_OUTPUT, exec_output=chunk))

        async def relay() -> None:
            try:
                reason = await session.relay(output)
                await conn.send(exec_end(reason))
            except (ConnectionError, OSError) as e:
                log.info("%s: exec session ended: %s", conn, e)
                session.kill()
            finally:
                self.sessions.pop(conn.ident, None)

        task = asyncio.ensure_future(relay())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def exec_input(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        session = self.sessions.get(conn.ident)
        if session is None:
            log.warning("%s: EXEC_INPUT without an exec session on this connection", conn)
            await conn.send(response(D.CMD_FAILED, "no command runs on this connection"))
            return
        await session.write_input(req.exec_input.encode())

    def connection_closed(self, conn: ControlConnection) -> None:
        session = self.sessions.pop(conn.ident, None)
        if session is not None:
            session.kill()

    # ------------------------------------------------------------------ tokens

    async def change_token_pin(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        if c.is_c0:
            await conn.send(response(D.CMD_UNSUPPORTED))
        elif not req.HasField("device_pin") or not req.HasField("device_newpin"):
            log.warning("%s: CHANGE_TOKEN_PIN without the current and the new PIN", conn)
            await conn.send(response(D.CONTAINER_CHANGE_PIN_FAILED))
        elif not self.state.keys.has_token(c):
            log.warning("%s: CHANGE_TOKEN_PIN: %s has no token (token_type NONE)", conn, c.name)
            await conn.send(response(D.CONTAINER_CHANGE_PIN_FAILED, f"{c.name} has no token"))
        else:
            try:
                paired = await self.state.keys.change_pin(c, req.device_pin, req.device_newpin)
            except TokenFailure as e:
                log.warning("%s: %s", conn, e)
                await conn.send(response(e.code, e.message))
                return
            log.info("%s: token PIN of %s %s", conn, c.name, "set; token paired with this device" if paired
                     else "changed")
            await conn.send(response(D.CONTAINER_CHANGE_PIN_SUCCESSFUL))

    async def cmld_handles_pin(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = await self._resolve_or_fail(req, conn)
        if c is None:
            return
        await conn.send(D(code=D.CONTAINER_CMLD_HANDLES_PIN, container_cmld_handles_pin=c.config.usb_pin_entry))
