"""In-process fuzz targets for the wire: the framing (stream and SOCK_SEQPACKET, blocking and
asyncio), every request message type with the daemon-side code that reads it before a handler
runs, and the CLI's own reply codec.

Each target takes the fuzzer's bytes and returns normally for any input; an exception other than
the documented error types is a bug (the fuzzer reports it as a crash). Where two implementations
must agree (blocking and asyncio framing, the CLI's codec and the protobuf runtime), the target
compares them, so a divergence is a crash too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import atheris
from google.protobuf import text_format

from cml_common import aioframing, framing
from cml_common.messages.attestation_pb2 import RemoteToTpm2d
from cml_common.messages.c_service_pb2 import ServiceToCmldMessage
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.scd_pb2 import DaemonToToken
from cml_common.messages.tpm2d_pb2 import ControllerToTpm
from cml_control import reply as cli_reply
from cml_control import wire
from cmld.control import access
from cmld.control.server import malformed_reply
from scd.tokenmgr import TokenManager
from scd.tokens.base import TokenError
from tpm2d import control as tpm2d_control
from tpm2d import evidence, measurements, sealing

_LOOP = asyncio.new_event_loop()
SMALL_MAX = 4096  # a small limit, so the fuzzer reaches the too-large branch without 64 MiB inputs


class _RecordSocket:
    """A blocking 'socket' that returns the bytes in the chunks the fuzzer chose."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            return b""
        head = self.chunks[0]
        if len(head) <= n:
            self.chunks.pop(0)
            return head
        self.chunks[0] = head[n:]
        return head[:n]


def _outcome(fn: object) -> tuple[str, object]:
    try:
        return "ok", fn()  # type: ignore[operator]
    except framing.FramingError as e:
        return type(e).__name__, None


def _stream_blocking(chunks: list[bytes]) -> list[tuple[str, object]]:
    sock = _RecordSocket(list(chunks))
    out: list[tuple[str, object]] = []
    while True:
        kind, body = _outcome(lambda: framing.recv_frame(sock, SMALL_MAX))  # type: ignore[arg-type]
        out.append((kind, body))
        if kind != "ok" or body is None:
            return out


def _stream_async(chunks: list[bytes]) -> list[tuple[str, object]]:
    async def run() -> list[tuple[str, object]]:
        reader = asyncio.StreamReader()
        for c in chunks:
            reader.feed_data(c)
        reader.feed_eof()
        out: list[tuple[str, object]] = []
        while True:
            try:
                body = await aioframing.read_frame(reader, max_size=SMALL_MAX)
            except framing.FramingError as e:
                out.append((type(e).__name__, None))
                return out
            out.append(("ok", body))
            if body is None:
                return out
    return _LOOP.run_until_complete(run())


def frame_stream(data: bytes) -> None:
    """A byte stream cut into frames: the blocking and asyncio readers must agree exactly, and
    every frame read must re-encode to the bytes it came from."""
    fdp = atheris.FuzzedDataProvider(data)
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
    a, b = _stream_blocking(chunks), _stream_async(chunks)
    if a != b:
        raise AssertionError(f"blocking and asyncio framing disagree: {a} != {b}")
    stream = b"".join(chunks)
    pos = 0
    for kind, body in a:
        if kind == "ok" and isinstance(body, bytes):
            enc = framing.encode_frame(body)
            if stream[pos:pos + len(enc)] != enc:
                raise AssertionError("a frame does not re-encode to its bytes")
            pos += len(enc)


def _seqpacket_records(data: bytes) -> list[bytes]:
    fdp = atheris.FuzzedDataProvider(data)
    records = []
    while fdp.remaining_bytes() and len(records) < 8:
        records.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300)))
    return records


def _seq_pair(records: list[bytes]) -> socket.socket:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for r in records:
            a.send(r)
    finally:
        a.close()
    return b


def frame_seqpacket(data: bytes) -> None:
    """Records on a real SOCK_SEQPACKET pair (the kernel truncates an oversized record, as on
    scd's socket): the blocking and asyncio readers must agree."""
    records = _seqpacket_records(data)
    blocking: list[tuple[str, object]] = []
    s = _seq_pair(records)
    try:
        while True:
            kind, body = _outcome(lambda: framing.recv_seqpacket(s, SMALL_MAX))
            blocking.append((kind, body))
            if kind != "ok" or body is None:
                break
    finally:
        s.close()

    async def run() -> list[tuple[str, object]]:
        s2 = _seq_pair(records)
        s2.setblocking(False)
        out: list[tuple[str, object]] = []
        try:
            while True:
                try:
                    body = await aioframing.async_recv_seqpacket(_LOOP, s2, SMALL_MAX)
                except framing.FramingError as e:
                    out.append((type(e).__name__, None))
                    return out
                out.append(("ok", body))
                if body is None:
                    return out
        finally:
            s2.close()
    asynchronous = _LOOP.run_until_complete(run())
    if blocking != asynchronous:
        raise AssertionError(f"blocking and asyncio SEQPACKET framing disagree: {blocking} != {asynchronous}")


def _roundtrip(msg: object) -> None:
    """A parsed request re-serializes and parses back to an equal message."""
    body = framing.serialize(msg)  # type: ignore[arg-type]
    again = framing.parse(type(msg), body)  # type: ignore[arg-type]
    if again != msg:
        raise AssertionError(f"{type(msg).__name__} does not survive a round trip")


def msg_control(data: bytes) -> None:
    """cmld's control socket before the handler: parse, or the malformed reply; the access check."""
    try:
        req = framing.parse(ControllerToDaemon, data)
    except framing.MessageError:
        rep = malformed_reply(data)
        if rep.code != DaemonToController.RESPONSE or rep.response not in (DaemonToController.CMD_FAILED,
                                                                           DaemonToController.CMD_UNSUPPORTED):
            raise AssertionError(f"malformed request answered {rep}") from None
        framing.serialize(rep)
        return
    _roundtrip(req)
    ControllerToDaemon.Command.Name(req.command)
    for privileged in (False, True):
        for provisioned in (False, True):
            access.is_allowed(req.command, privileged=privileged, provisioned=provisioned)


def msg_service(data: bytes) -> None:
    """The in-container service socket: what cmld does before `_handle`."""
    try:
        msg = framing.parse(ServiceToCmldMessage, data)
    except framing.MessageError:
        return
    _roundtrip(msg)
    ServiceToCmldMessage.Code.Name(msg.code)


def msg_scd(data: bytes) -> None:
    """scd's requests: parse, then the token key (type and canonical UUID) every token command
    computes first."""
    try:
        req = framing.parse(DaemonToToken, data)
    except framing.MessageError:
        return
    _roundtrip(req)
    DaemonToToken.Code.Name(req.code)
    with contextlib.suppress(TokenError):
        TokenManager.key(req)


def msg_tpm2d(data: bytes) -> None:
    """tpm2d's control requests: parse or the malformed reply, then the pure validation of
    ML_APPEND, SEAL_CREATE's authority and SEAL_POLICY_UPDATE's policy."""
    try:
        req = framing.parse(ControllerToTpm, data)
    except framing.MessageError:
        framing.serialize(tpm2d_control._malformed(data))
        return
    _roundtrip(req)
    with contextlib.suppress(measurements.MeasurementError):
        measurements.check_request(req.ml_filename, bytes(req.ml_datahash), req.ml_hashalg)
    with contextlib.suppress(sealing.SealError):
        sealing.load_authority(bytes(req.seal_authority))
    with contextlib.suppress(sealing.SealError):
        sealing.parse_policy(bytes(req.seal_policy))


def msg_remote(data: bytes) -> None:
    """TCP 9505: parse, then the PCR selection of the request."""
    try:
        req = framing.parse(RemoteToTpm2d, data)
    except framing.MessageError as e:
        framing.serialize(evidence.failure(0, str(e)))
        return
    _roundtrip(req)
    with contextlib.suppress(evidence.EvidenceError):
        evidence.selected_pcrs(req)


def cli_reply_codec(data: bytes) -> None:
    """The CLI's fast reply codec against the protobuf runtime: when the codec accepts a reply
    it must print exactly what text_format prints; when the runtime refuses one, the codec must
    not accept it either; and the CLI's Reply (codec, then runtime fallback) must never raise
    anything but ProtocolError."""
    try:
        msg = framing.parse(DaemonToController, data)
    except framing.MessageError:
        msg = None
    try:
        fast = wire.decode_reply(data)
    except wire.Unsupported:
        fast = None
    if fast is not None:
        if msg is None:
            raise AssertionError("the CLI codec accepts a reply the protobuf runtime refuses")
        if wire.to_text(fast) != text_format.MessageToString(msg):
            raise AssertionError("the CLI codec prints a reply differently from text_format")
    try:
        cli_reply.Reply(data).text()
    except cli_reply.ProtocolError:
        if msg is not None:
            raise AssertionError("the CLI refuses a reply the runtime parses") from None


def _struct_len(data: bytes) -> None:
    struct.unpack(">I", data[:4])
