"""The launcher's end of the sync socket: JSON records, file descriptors by SCM_RIGHTS."""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_RECORD = 1 << 20


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def recv(self) -> dict[str, Any]:
        data = self.sock.recv(MAX_RECORD)
        if not data:
            raise EOFError("cmld closed the sync socket")
        msg = json.loads(data)
        if not isinstance(msg, dict):
            raise ValueError("sync message is not an object")
        return msg

    def expect(self, kind: str) -> dict[str, Any]:
        msg = self.recv()
        if msg.get("type") != kind:
            raise ValueError(f"expected {kind!r} from cmld, got {msg.get('type')!r}")
        return msg
