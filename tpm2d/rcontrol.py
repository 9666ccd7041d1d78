"""The remote attestation server on TCP 9505 (inventory §5.3): RemoteToTpm2d in, Tpm2dToRemote
out, the original's framing. Any number of requests per connection; bad input is answered or
logged, and the server keeps serving everyone else.

| what a client sends | what happens |
|---|---|
| ATTESTATION_REQ | the evidence, or ATTESTATION_RES with `error_message` and no quote |
| a body that does not parse, lacks `code` | ATTESTATION_RES with `error_message`; the connection stays open |
| a length of 1 MiB or more, a truncated frame, a stall > 10 s, silence > 60 s | disconnected, with a log line |
"""

from __future__ import annotations

import asyncio
import functools
import logging

from cml_common import aioframing, framing
from cml_common.messages.attestation_pb2 import RemoteToTpm2d, Tpm2dToRemote

from .core import Core
from .evidence import failure

log = logging.getLogger(__name__)
MAX_REQUEST = 1024 * 1024
MAX_CLIENTS = 32


class RemoteServer:
    def __init__(self, host: str, port: int, core: Core) -> None:
        self.host = host
        self.port = port
        self.core = core
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        socks = self._server.sockets
        if socks:
            self.port = socks[0].getsockname()[1]
        log.info("remote attestation on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._clients >= MAX_CLIENTS:
            log.warning("attestation client %s refused: %d clients already", peer, self._clients)
            writer.close()
            return
        self._clients += 1
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    body = await aioframing.read_frame(reader, idle_timeout=60.0, frame_timeout=10.0,
                                                       max_size=MAX_REQUEST)
                except framing.FramingError as e:
                    log.warning("attestation client %s: %s; disconnecting", peer, e)
                    return
                if body is None:
                    return
                try:
                    req = framing.parse(RemoteToTpm2d, body)
                except framing.MessageError as e:
                    log.warning("attestation client %s: %s", peer, e)
                    reply = failure(0, str(e))
                else:
                    if req.code != RemoteToTpm2d.ATTESTATION_REQ:
                        reply = failure(req.atype, f"unknown code {req.code}")
                    else:
                        reply = await asyncio.wrap_future(self.core.submit(functools.partial(self.core.attest, req)),
                                                          loop=loop)
                await aioframing.write_frame(writer, framing.serialize(reply))
        except OSError as e:
            log.info("attestation client %s went away: %s", peer, e)
        finally:
            self._clients -= 1
            writer.close()


__all__ = ["RemoteServer", "Tpm2dToRemote"]
