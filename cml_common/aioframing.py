"""asyncio variants of the framing in `cml_common.framing`, for the daemons."""

from __future__ import annotations

import asyncio
import socket

from .framing import (
    HEADER,
    MAX_MESSAGE_SIZE,
    FrameTimeout,
    TruncatedFrame,
    _seqpacket_append,
    _seqpacket_length,
    check_length,
    encode_frame,
)


async def read_frame(
    reader: asyncio.StreamReader,
    *,
    idle_timeout: float | None = None,
    frame_timeout: float | None = None,
    max_size: int = MAX_MESSAGE_SIZE,
) -> bytes | None:
    """Read one frame. Returns None on a clean EOF at a frame boundary.

    ``idle_timeout`` bounds the wait for the first byte of a frame, ``frame_timeout`` the time
    from that byte to the end of the body, so a stalled peer cannot hold a reader forever.
    """
    try:
        async with asyncio.timeout(idle_timeout):
            first = await reader.read(1)
    except TimeoutError as e:
        raise FrameTimeout(f"no request within {idle_timeout:g} s") from e
    if not first:
        return None
    try:
        async with asyncio.timeout(frame_timeout):
            try:
                rest = await reader.readexactly(HEADER.size - 1)
            except asyncio.IncompleteReadError as e:
                got = 1 + len(e.partial)
                raise TruncatedFrame(f"connection closed after {got} of 4 length bytes") from e
            (length,) = HEADER.unpack(first + rest)
            check_length(length, max_size)
            try:
                return await reader.readexactly(length)
            except asyncio.IncompleteReadError as e:
                raise TruncatedFrame(
                    f"connection closed after {len(e.partial)} of {length} body bytes"
                ) from e
    except TimeoutError as e:
        raise FrameTimeout(f"frame not complete within {frame_timeout:g} s") from e


async def write_frame(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(encode_frame(body))
    await writer.drain()


async def async_recv_seqpacket(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, max_size: int = MAX_MESSAGE_SIZE
) -> bytes | None:
    """asyncio variant of :func:`recv_seqpacket` for a non-blocking socket."""
    header = await loop.sock_recv(sock, HEADER.size + 1)
    if not header:
        return None
    length = _seqpacket_length(header, max_size)
    body = bytearray()
    while len(body) < length:
        _seqpacket_append(body, await loop.sock_recv(sock, length - len(body) + 1), length)
    return bytes(body)


async def async_send_seqpacket(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, body: bytes
) -> None:
    check_length(len(body))
    await loop.sock_sendall(sock, HEADER.pack(len(body)))
    if body:
        await loop.sock_sendall(sock, body)


async def wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Until `sock` (non-blocking) has something to read, or its peer hung up."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)
    loop.add_reader(sock, ready)
    try:
        await fut
    finally:
        loop.remove_reader(sock)
