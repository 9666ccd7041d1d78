"""Framing, pure logic: encode/decode, limits, partial reads, SEQPACKET records."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from cml_common import aioframing, framing
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.tpm2d_pb2 import TpmToController

pytestmark = pytest.mark.unit


def test_encode_golden() -> None:
    body = ControllerToDaemon(command=ControllerToDaemon.LIST_CONTAINERS).SerializeToString()
    assert framing.encode_frame(body) == bytes.fromhex("000000020802")
    assert framing.encode_frame(b"") == b"\0\0\0\0"


def test_limit_is_exclusive() -> None:
    framing.check_length(framing.MAX_MESSAGE_SIZE - 1)
    with pytest.raises(framing.FrameTooLarge):
        framing.check_length(framing.MAX_MESSAGE_SIZE)


def test_parse_enforces_required_but_partial_does_not() -> None:
    with pytest.raises(framing.MessageError, match="command"):
        framing.parse(ControllerToDaemon, b"")
    assert not framing.parse_partial(ControllerToDaemon, b"").HasField("command")
    with pytest.raises(framing.MessageError):
        framing.parse(ControllerToDaemon, b"\xff\xff\xff")


def test_serialize_refuses_missing_required() -> None:
    with pytest.raises(framing.MessageError):
        framing.serialize(DaemonToController())
    # required bytes are always sent, even empty (protobuf-c peers insist)
    body = framing.serialize(TpmToController(code=TpmToController.GENERIC_RESPONSE, ml_entry=b""))
    assert body.endswith(bytes.fromhex("5a00"))


def _feed(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def test_async_read_frame_cases() -> None:
    async def go() -> None:
        assert await aioframing.read_frame(_feed(b"")) is None
        assert await aioframing.read_frame(_feed(b"\0\0\0\0")) == b""
        assert await aioframing.read_frame(_feed(b"\0\0\0\x03abcextra")) == b"abc"
        with pytest.raises(framing.TruncatedFrame, match="2 of 4 length"):
            await aioframing.read_frame(_feed(b"\0\0"))
        with pytest.raises(framing.TruncatedFrame, match="1 of 3 body"):
            await aioframing.read_frame(_feed(b"\0\0\0\x03a"))
        with pytest.raises(framing.FrameTooLarge):
            await aioframing.read_frame(_feed(struct.pack(">I", framing.MAX_MESSAGE_SIZE + 1)))
        with pytest.raises(framing.FrameTimeout, match="no request"):
            await aioframing.read_frame(_feed(b"", eof=False), idle_timeout=0.05)
        with pytest.raises(framing.FrameTimeout, match="not complete"):
            await aioframing.read_frame(_feed(b"\0\0\0\x09ab", eof=False), frame_timeout=0.05)

    asyncio.run(go())


def test_stream_partial_writes_reassemble() -> None:
    a, b = socket.socketpair()
    with a, b:
        body = bytes(range(256)) * 300
        frame = framing.encode_frame(body)
        def slow_send() -> None:
            for i in range(0, len(frame), 1000):
                a.sendall(frame[i:i + 1000])

        t = threading.Thread(target=slow_send)
        t.start()
        assert framing.recv_frame(b) == body
        t.join()


def test_seqpacket_two_records_and_oversized_record() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        framing.send_seqpacket(a, b"hello")
        assert b.recv(100) == b"\0\0\0\x05"
        assert b.recv(100) == b"hello"
        framing.send_seqpacket(a, b"")
        assert framing.recv_seqpacket(b) == b""
        # body split over two records is reassembled, like fd_read loops in the original
        a.send(b"\0\0\0\x04")
        a.send(b"ab")
        a.send(b"cd")
        assert framing.recv_seqpacket(b) == b"abcd"
        a.send(b"\0\0\0\x02")
        a.send(b"toolong")
        with pytest.raises(framing.FramingError, match="longer"):
            framing.recv_seqpacket(b)
        a.send(b"\0\0\0\0\0")
        with pytest.raises(framing.FramingError, match="5 bytes"):
            framing.recv_seqpacket(b)
