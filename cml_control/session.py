"""A connection to cmld for one CLI call: requests built by the fast codec, replies as Reply, and
every transport failure turned into the original's FATAL (with the lines it logs first)."""

from __future__ import annotations

from . import transport, wire
from .failures import ERROR, EXIT_UNREACHABLE, WARN, Fatal
from .reply import ProtocolError, Reply

RECEIVE_FAILED = "error receiving message\n"  # the original's FATAL texts, trailing newline included
SEND_FAILED = "error sending protobuf message\n"


class Session:
    def __init__(self, path: str, timeout: float | None) -> None:
        self.timeout = timeout
        try:
            self.conn = transport.Connection(path, timeout)
        except transport.ConnectFailed as e:
            detail = (f"no control socket at {path} (is cmld running?)" if e.errno == 2
                      else f"cannot connect to {path}: {e.strerror}")
            raise Fatal(f"Failed to create and connect to socket {path}!", detail=detail, code=EXIT_UNREACHABLE,
                        preface=[(WARN, f"Failed to connect UNIX socket to {path}. ({e.errno}: {e.strerror})")],
                        ) from None

    def close(self) -> None:
        self.conn.close()

    def no_timeout(self) -> None:
        """For replies that take as long as they take (image downloads, logs, run)."""
        self.timeout = None
        self.conn.settimeout(None)

    def send(self, command: str, **fields: object) -> None:
        body = wire.request(command, **fields)
        try:
            self.conn.send(body)
        except transport.SendFailed as e:
            preface = [(ERROR, "Packed message exceeds PROTOBUF_MAX_MESSAGE_SIZE")] if "limit" in str(e) else []
            raise Fatal(SEND_FAILED, detail=str(e), code=EXIT_UNREACHABLE, preface=preface) from None

    def receive(self) -> Reply:
        preface: list[tuple[str, str]] = []
        try:
            body = self.conn.recv()
        except transport.PeerClosed as e:
            if e.stage == "header" and e.got:
                preface = [(ERROR, "Protocol violation!")]
            elif e.stage == "body":
                preface = [(ERROR, f"Dropped protobuf message (expected length : {e.got} bytes read != "
                                   f"{e.expected} bytes expected)")]
            raise Fatal(RECEIVE_FAILED, detail=str(e), code=EXIT_UNREACHABLE, preface=preface) from None
        except transport.ReplyTimeout:
            detail = f"cmld did not answer within {self.timeout:g} s"
            raise Fatal(RECEIVE_FAILED, detail=detail, code=EXIT_UNREACHABLE, preface=[(ERROR, detail)]) from None
        except transport.TransportError as e:
            raise Fatal(RECEIVE_FAILED, detail=str(e), code=EXIT_UNREACHABLE) from None
        try:
            return Reply(body)
        except ProtocolError as e:
            raise Fatal(RECEIVE_FAILED, detail=str(e), code=EXIT_UNREACHABLE,
                        preface=[(WARN, "Failed to parse received protobuf message")]) from None

    def request(self, command: str, **fields: object) -> Reply:
        self.send(command, **fields)
        return self.receive()

    def request_body(self, command: str, **fields: object) -> bytes:
        """The raw reply, for a single value read with wire.find_varint (no full decode)."""
        self.send(command, **fields)
        try:
            return self.conn.recv()
        except transport.TransportError as e:
            raise Fatal(RECEIVE_FAILED, detail=str(e), code=EXIT_UNREACHABLE) from None
