"""The control socket at the byte level: connect, then frames of a 4-byte big-endian length and a
body below 64 MiB (the framing of cml_common.framing, which the CLI cannot import without the
protobuf runtime: see wire.py for why that matters).

Built on `_socket` rather than `socket`, which adds a few milliseconds of imports (enum
wrappers, selectors) to every CLI call. Each failure has its own exception, so `control` can
log what the original logs and `cml-control` can say what happened.
"""

from __future__ import annotations

import _socket

MAX_MESSAGE_SIZE = 64 * 1024 * 1024  # exclusive bound, PROTOBUF_MAX_MESSAGE_SIZE


class TransportError(Exception):
    pass


class ConnectFailed(TransportError):
    def __init__(self, path: str, errno: int, strerror: str) -> None:
        super().__init__(f"cannot connect to {path}: {strerror}")
        self.path = path
        self.errno = errno
        self.strerror = strerror


class SendFailed(TransportError):
    pass


class ReplyTimeout(TransportError):
    pass


class ReadFailed(TransportError):
    pass


class PeerClosed(TransportError):
    """cmld closed the connection after `got` of `expected` bytes of the header or the body."""

    def __init__(self, stage: str, got: int, expected: int) -> None:
        if stage == "header" and got == 0:
            text = "cmld closed the connection without a reply"
        else:
            text = f"cmld closed the connection after {got} of {expected} {stage} bytes"
        super().__init__(text)
        self.stage = stage
        self.got = got
        self.expected = expected


class FrameTooLarge(TransportError):
    def __init__(self, length: int) -> None:
        super().__init__(f"cmld announced a reply of {length} bytes; the limit is {MAX_MESSAGE_SIZE - 1}")
        self.length = length


class Connection:
    def __init__(self, path: str, timeout: float | None) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ConnectFailed(path, e.errno or 0, e.strerror or str(e)) from None
        except ValueError as e:  # an embedded NUL byte
            self.sock.close()
            raise ConnectFailed(path, 0, str(e)) from None

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def send(self, body: bytes) -> None:
        if len(body) >= MAX_MESSAGE_SIZE:
            raise SendFailed(f"the request is {len(body)} bytes; the limit is {MAX_MESSAGE_SIZE - 1}")
        try:
            self.sock.sendall(len(body).to_bytes(4, "big") + body)
        except TimeoutError:
            raise SendFailed("cmld did not take the request in time") from None
        except OSError as e:
            raise SendFailed(f"sending to cmld failed: {e.strerror or e}") from None

    def _read(self, n: int, stage: str) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                k = self.sock.recv_into(view[got:], min(n - got, 1 << 20))
                if k == 0:
                    raise PeerClosed(stage, got, n)
                got += k
        except TimeoutError:
            raise ReplyTimeout("cmld did not answer in time") from None
        except ConnectionResetError:
            raise PeerClosed(stage, got, n) from None
        except OSError as e:
            raise ReadFailed(f"reading the reply failed: {e.strerror or e}") from None
        return buf

    def recv(self) -> bytes:
        length = int.from_bytes(self._read(4, "header"), "big")
        if length >= MAX_MESSAGE_SIZE:
            raise FrameTooLarge(length)
        return bytes(self._read(length, "body")) if length else b""
