"""Device provisioning: the CSR out, the signed certificate in, and the provisioned state that
restricts the control API from then on."""

from __future__ import annotations

import asyncio
import logging

from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.clients.scd import NotProvisioning, ScdError
from cmld.control.family import CommandFamily
from cmld.control.replies import response
from cmld.control.server import ControlConnection

log = logging.getLogger(__name__)


class ProvisioningCommands(CommandFamily):
    async def get_provisioned(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        await conn.send(D(code=D.DEVICE_PROVISIONED_STATE, device_is_provisioned=self.cmld.provisioned))

    async def set_provisioned(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            await asyncio.to_thread(self.cmld.set_provisioned)
        except OSError as e:
            log.error("%s: cannot write the provisioned marker: %s", conn, e)
            await conn.send(response(D.CMD_FAILED))
            return
        log.warning("%s: device is now PROVISIONED; the control API is restricted from now on", conn)
        await conn.send(response(D.CMD_OK))

    async def pull_device_csr(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """The CSR scd made for this device; outside provisioning mode a DEVICE_CSR without one
        (the original's reply), with the reason in error_message and the log."""
        try:
            csr = await self.cmld.scd.pull_device_csr()
        except NotProvisioning:
            log.warning("%s: PULL_DEVICE_CSR: the device is not in provisioning mode (it has its certificate)",
                        conn)
            await conn.send(D(code=D.DEVICE_CSR, error_message="the device is not in provisioning mode"))
            return
        except ScdError as e:
            log.error("%s: PULL_DEVICE_CSR: %s", conn, e)
            await conn.send(D(code=D.DEVICE_CSR, error_message=str(e)))
            return
        log.info("%s: device CSR handed out (%d bytes)", conn, len(csr))
        await conn.send(D(code=D.DEVICE_CSR, device_csr=csr))

    async def push_device_cert(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        cert = req.device_cert
        if b"-----BEGIN CERTIFICATE-----" not in cert or b"-----END CERTIFICATE-----" not in cert:
            log.warning("%s: PUSH_DEVICE_CERT without a PEM certificate", conn)
            await conn.send(response(D.DEVICE_CERT_ERROR, "not a PEM certificate"))
            return
        try:
            await self.cmld.scd.push_device_cert(cert)
        except NotProvisioning:
            log.warning("%s: PUSH_DEVICE_CERT refused: the device is not in provisioning mode", conn)
            await conn.send(response(D.DEVICE_PROVISIONING_ERROR, "the device is not in provisioning mode"))
            return
        except ScdError as e:
            log.warning("%s: PUSH_DEVICE_CERT refused by scd: %s", conn, e)
            await conn.send(response(D.DEVICE_CERT_ERROR, "scd refused the certificate (not for this device's "
                                                          "key and UUID, or not valid; see scd's log)"))
            return
        log.warning("%s: device certificate installed", conn)
        await conn.send(response(D.DEVICE_CERT_OK))
