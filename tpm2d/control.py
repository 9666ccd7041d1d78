"""tpm2d's control socket (/run/socket/cml-tpm2d-control, stream): ControllerToTpm in,
TpmToController out, one reply per request (inventory §5.2).

| what a client sends | what happens |
|---|---|
| a valid request | the reply, computed on the TPM worker thread (the socket stays responsive) |
| EXIT | tpm2d stops, without a reply (as the original) |
| a body that does not parse, lacks `code`, or has an unknown code | CMD_FAILED with `error_message`; stays open |
| a length of 64 MiB or more, a truncated frame, a frame stalled > 10 s | disconnected, with a log line |
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path

from cml_common import aioframing, framing
from cml_common.messages.tpm2d_pb2 import ControllerToTpm

from .core import Core, generic

log = logging.getLogger(__name__)
MAX_REQUEST = 1024 * 1024  # nothing tpm2d takes is larger (sign_data <= 64 KiB)


class ControlServer:
    def __init__(self, path: Path, core: Core, exit_event: asyncio.Event) -> None:
        self.path = path
        self.core = core
        self.exit_event = exit_event
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        log.info("control socket %s", self.path)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    body = await aioframing.read_frame(reader, frame_timeout=10.0, max_size=MAX_REQUEST)
                except framing.FramingError as e:
                    log.warning("control client: %s; disconnecting", e)
                    return
                if body is None:
                    return
                try:
                    req = framing.parse(ControllerToTpm, body)
                except framing.MessageError as e:
                    log.warning("control client: %s", e)
                    await aioframing.write_frame(writer, framing.serialize(generic(False, str(e))))
                    continue
                if req.code == ControllerToTpm.EXIT:
                    log.info("EXIT requested")
                    self.exit_event.set()
                    return
                reply = await asyncio.wrap_future(self.core.submit(functools.partial(self.core.handle, req)), loop=loop)
                await aioframing.write_frame(writer, framing.serialize(reply))
        except OSError as e:
            log.info("control client went away: %s", e)
        finally:
            writer.close()
