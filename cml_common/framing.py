"""GyroidOS wire framing: a 4-byte big-endian length, then a protobuf body of that many bytes.

The length must be below 64 MiB; zero is legal (all fields default). On stream sockets the
header and body are simply consecutive bytes. On SOCK_SEQPACKET (the scd socket) the original
sends them as two records, so we do exactly the same: one record for the length, one for the
body (none for an empty body), and we read records until the announced length is complete.

This module is for blocking sockets (the CLI, which must start fast); `aioframing` has the
asyncio variants the daemons use.
"""

from __future__ import annotations

import socket
import struct
from typing import TypeVar

from google.protobuf.message import DecodeError, EncodeError, Message

from cml_common.errors import CmlError

MAX_MESSAGE_SIZE = 64 * 1024 * 1024  # exclusive bound, as PROTOBUF_MAX_MESSAGE_SIZE
HEADER = struct.Struct(">I")

M = TypeVar("M", bound=Message)


class FramingError(CmlError):
    """The byte stream cannot be read as frames; the connection must be dropped."""


class FrameTooLarge(FramingError):
    pass


class TruncatedFrame(FramingError):
    pass


class FrameTimeout(FramingError):
    pass


class MessageError(CmlError):
    """A well-framed body that is not a valid message of the expected type."""


def check_length(length: int, max_size: int = MAX_MESSAGE_SIZE) -> None:
    if length >= max_size:
        raise FrameTooLarge(f"frame length {length} is not below the limit of {max_size} bytes")


def encode_frame(body: bytes) -> bytes:
    check_length(len(body))
    return HEADER.pack(len(body)) + body


def serialize(msg: Message) -> bytes:
    """Serialize, insisting on proto2 `required` fields: the original's peers reject messages
    that lack them, so sending one would be our bug, not theirs."""
    try:
        return msg.SerializeToString()
    except EncodeError as e:
        raise MessageError(f"{type(msg).__name__} is missing required fields: {e}") from e


def parse(cls: type[M], body: bytes) -> M:
    """Parse and enforce proto2 `required` fields, as protobuf-c does on unpack (upb's
    ParseFromString does not check them)."""
    msg = parse_partial(cls, body)
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())  # type: ignore[attr-defined]
        raise MessageError(f"not a valid {cls.__name__}: required field(s) missing: {missing}")
    return msg


def parse_partial(cls: type[M], body: bytes) -> M:
    """Parse without the required-field check, for callers that explain what is missing."""
    msg = cls()
    try:
        msg.MergeFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise MessageError(f"not a valid {cls.__name__}: {e}") from e
    if not body.isascii():
        bad = non_utf8_string_field(msg)
        if bad is not None:
            raise MessageError(f"not a valid {cls.__name__}: string field {bad} is not UTF-8")
    return msg


def non_utf8_string_field(msg: Message, prefix: str = "") -> str | None:
    """The dotted name of a `string` field that holds invalid UTF-8, or None.

    The protobuf runtime accepts invalid UTF-8 in a proto2 string field and hands it out as
    `bytes`, so every handler that treats a string field as `str` would fail on it with a
    TypeError (found by fuzzing tpm2d's ML_APPEND). A request like that is malformed, and each
    daemon answers it by its policy for malformed input."""
    for field, value in msg.ListFields():
        name = prefix + field.name
        if field.type == field.TYPE_STRING:
            values = value if field.is_repeated else [value]
            if any(isinstance(v, bytes) for v in values):
                return name
        elif field.type == field.TYPE_MESSAGE:
            items = value if field.is_repeated else [value]
            for i, item in enumerate(items):
                sub = f"{name}[{i}]." if field.is_repeated else f"{name}."
                bad = non_utf8_string_field(item, sub)
                if bad is not None:
                    return bad
    return None


# ---------------------------------------------------------------- blocking stream sockets


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def send_frame(sock: socket.socket, body: bytes) -> None:
    sock.sendall(encode_frame(body))


def recv_frame(sock: socket.socket, max_size: int = MAX_MESSAGE_SIZE) -> bytes | None:
    """Blocking read of one frame from a stream socket; None on a clean EOF."""
    header = _recv_exact(sock, HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise TruncatedFrame(f"connection closed after {len(header)} of 4 length bytes")
    (length,) = HEADER.unpack(header)
    check_length(length, max_size)
    body = _recv_exact(sock, length)
    if len(body) < length:
        raise TruncatedFrame(f"connection closed after {len(body)} of {length} body bytes")
    return body


# ---------------------------------------------------------------- SOCK_SEQPACKET


def send_seqpacket(sock: socket.socket, body: bytes) -> None:
    """Length record, then body record (none for an empty body), as the original does."""
    check_length(len(body))
    sock.send(HEADER.pack(len(body)))
    if body:
        sock.send(body)


def _seqpacket_length(header: bytes, max_size: int) -> int:
    if len(header) != HEADER.size:
        raise FramingError(f"length record has {len(header)} bytes, expected 4")
    (length,) = HEADER.unpack(header)
    check_length(length, max_size)
    return int(length)


def _seqpacket_append(body: bytearray, chunk: bytes, length: int) -> None:
    if not chunk:
        raise TruncatedFrame(f"connection closed after {len(body)} of {length} body bytes")
    if len(chunk) > length - len(body):
        raise FramingError("body record is longer than the announced length")
    body += chunk


def recv_seqpacket(sock: socket.socket, max_size: int = MAX_MESSAGE_SIZE) -> bytes | None:
    """Read a length record, then body records until the length is complete.

    We ask for one byte more than we expect, so an oversized record (which SEQPACKET would
    silently truncate) is detected instead of corrupting the next frame.
    """
    header = sock.recv(HEADER.size + 1)
    if not header:
        return None
    length = _seqpacket_length(header, max_size)
    body = bytearray()
    while len(body) < length:
        _seqpacket_append(body, sock.recv(length - len(body) + 1), length)
    return bytes(body)
