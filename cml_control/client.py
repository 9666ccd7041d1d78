"""A blocking protobuf-level client for the cmld control socket, for programs that already use
the protobuf runtime (benchmarks, tests, tools). The CLI itself uses session.py, which avoids
the runtime; both share the byte-level transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cml_common import framing
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from . import transport


class ControlError(Exception):
    """The daemon cannot be reached or broke the protocol."""


class ControlClient:
    def __init__(self, path: Path | str, timeout: float | None = 60.0) -> None:
        self.path = Path(path)
        try:
            self.conn = transport.Connection(str(path), timeout)
        except transport.ConnectFailed as e:
            if e.errno == 2:
                raise ControlError(f"no control socket at {path} (is cmld running?)") from None
            raise ControlError(str(e)) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settimeout(self, timeout: float | None) -> None:
        self.conn.settimeout(timeout)

    def send(self, msg: ControllerToDaemon) -> None:
        try:
            self.conn.send(framing.serialize(msg))
        except (transport.TransportError, framing.MessageError) as e:
            raise ControlError(str(e)) from e

    def receive(self) -> DaemonToController:
        try:
            body = self.conn.recv()
        except transport.TransportError as e:
            raise ControlError(str(e)) from e
        try:
            return framing.parse(DaemonToController, body)
        except framing.MessageError as e:
            raise ControlError(f"cmld sent an invalid reply: {e}") from e

    def request(self, msg: ControllerToDaemon) -> DaemonToController:
        self.send(msg)
        return self.receive()

    def replies(self) -> Iterator[DaemonToController]:
        while True:
            yield self.receive()
