"""tpm2d's control socket: ControllerToTpm in, TpmToController out (inventory §5.2).

The TPM functions (FDE key, random, clear, measurement list) arrive with the tpm2d issue. Until
then every request is answered GENERIC_RESPONSE CMD_FAILED, never a fake success; EXIT exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from cml_common import aioframing, framing
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController

log = logging.getLogger(__name__)


class Tpm2dServer:
    def __init__(self, path: Path, exit_event: asyncio.Event) -> None:
        self.path = path
        self.exit_event = exit_event
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        log.info("tpm2d listening on %s", self.path)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    body = await aioframing.read_frame(reader, frame_timeout=10.0)
                except framing.FramingError as e:
                    log.warning("tpm2d client: %s; disconnecting", e)
                    return
                if body is None:
                    return
                try:
                    req = framing.parse(ControllerToTpm, body)
                except framing.MessageError as e:
                    log.warning("tpm2d client: %s; disconnecting", e)
                    return
                if req.code == ControllerToTpm.EXIT:
                    log.info("EXIT requested")
                    self.exit_event.set()
                    return
                log.warning("tpm2d: %s: TPM support is not part of this build",
                            ControllerToTpm.Code.Name(req.code))
                reply = TpmToController(code=TpmToController.GENERIC_RESPONSE,
                                        response=TpmToController.CMD_FAILED, ml_entry=b"")
                await aioframing.write_frame(writer, framing.serialize(reply))
        except OSError as e:
            log.info("tpm2d client went away: %s", e)
        finally:
            writer.close()
