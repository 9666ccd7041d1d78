"""A blocking client for the cmld control socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

from cml_common import framing
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController


class ControlError(Exception):
    """The daemon cannot be reached or broke the protocol."""


class ControlClient:
    def __init__(self, path: Path, timeout: float | None = 60.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except FileNotFoundError as e:
            self.sock.close()
            raise ControlError(f"no control socket at {path} (is cmld running?)") from e
        except OSError as e:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from e

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: ControllerToDaemon) -> None:
        try:
            framing.send_frame(self.sock, framing.serialize(msg))
        except OSError as e:
            raise ControlError(f"sending to cmld failed: {e.strerror or e}") from e

    def receive(self) -> DaemonToController:
        try:
            body = framing.recv_frame(self.sock)
        except TimeoutError as e:
            raise ControlError("cmld did not answer in time") from e
        except (OSError, framing.FramingError) as e:
            raise ControlError(f"reading the reply failed: {e}") from e
        if body is None:
            raise ControlError("cmld closed the connection without a reply")
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
