"""The control socket under hostile and unusual input, byte by byte over a real socket.

Every case ends with a clear outcome (a reply, or the server closing the connection with a log
line), and afterwards a NEW connection still gets LIST_CONTAINERS answered: the daemon survived and
serves other clients.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.container_pb2 import ContainerStatus
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.scd_pb2 import TokenToDaemon
from cml_common.messages.tpm2d_pb2 import ControllerToTpm
from tests.conftest import Daemon, DaemonFactory, cli

pytestmark = pytest.mark.host

C = ControllerToDaemon
D = DaemonToController
LIMIT = 64 * 1024 * 1024
HDR = struct.Struct(">I")

# Golden frames, hard-coded: the point is the exact wire format, not what our classes produce.
LIST_CONTAINERS_REQ = bytes.fromhex("00000002 0802")  # ControllerToDaemon{command: LIST_CONTAINERS}
CONTAINERS_LIST_EMPTY = bytes.fromhex("00000002 0802")  # DaemonToController{code: CONTAINERS_LIST}
GET_PROVISIONED_REQ = bytes.fromhex("00000002 0821")  # ControllerToDaemon{command: GET_PROVISIONED}
# DaemonToController{code: DEVICE_PROVISIONED_STATE (41), device_is_provisioned (field 41): false};
# field 41 as varint needs a two-byte tag: (41 << 3) | 0 = 328 = c8 02. The body `08 29 c8 02 00`
# is five bytes, so the header says 5.
PROVISIONED_FALSE = bytes.fromhex("00000005 0829 c802 00")
GET_CONTAINER_STATUS_REQ = bytes.fromhex("00000002 0803")
RESPONSE_CMD_FAILED = bytes.fromhex("00000004 080d 681e")  # {code: RESPONSE, response: CMD_FAILED}
RESPONSE_CMD_UNSUPPORTED = bytes.fromhex("00000004 080d 6807")  # {code: RESPONSE, response: CMD_UNSUPPORTED}
STATUS_FIELDS = ("uuid", "name", "type", "state", "uptime", "created", "guestos", "trust_level", "cryptfs_mode")


# ---------------------------------------------------------------------- helpers


def connect(path: Path, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_raw_frame(s: socket.socket) -> tuple[bytes, bytes]:
    """(4-byte header, body) of one reply frame."""
    header = recv_exact(s, 4)
    (length,) = HDR.unpack(header)
    assert length < LIMIT
    return header, recv_exact(s, length)


def read_reply(s: socket.socket) -> DaemonToController:
    _, body = read_raw_frame(s)
    return framing.parse(DaemonToController, body)  # insists on the required `code`


def send_body(s: socket.socket, body: bytes) -> None:
    s.sendall(HDR.pack(len(body)) + body)


def request(s: socket.socket, msg: ControllerToDaemon) -> DaemonToController:
    send_body(s, msg.SerializeToString())
    return read_reply(s)


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    """True when the server ends the connection within `timeout` (EOF; a reset counts too, which
    Linux reports when the server closes with bytes we sent still unread in its queue)."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wait_log(d: Daemon, text: str, timeout: float = 3.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = d.log_text()
        if text in log or time.monotonic() > deadline:
            assert text in log, f"{text!r} not in the log:\n{log[-3000:]}"
            return log
        time.sleep(0.02)


def assert_serving(d: Daemon) -> None:
    """A NEW client still gets LIST_CONTAINERS answered: the daemon survived and serves others."""
    assert d.alive(), "cmld died"
    with connect(d.socket) as s:
        reply = request(s, C(command=C.LIST_CONTAINERS))
    assert reply.code == D.CONTAINERS_LIST


def until(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ---------------------------------------------------------------------- 1. golden frames


def test_golden_frames_match_the_generated_classes() -> None:
    """The hard-coded frames are what the protos say (guards the constants themselves)."""
    assert framing.encode_frame(C(command=C.LIST_CONTAINERS).SerializeToString()) == LIST_CONTAINERS_REQ
    assert framing.encode_frame(D(code=D.CONTAINERS_LIST).SerializeToString()) == CONTAINERS_LIST_EMPTY
    assert framing.encode_frame(C(command=C.GET_PROVISIONED).SerializeToString()) == GET_PROVISIONED_REQ
    prov = D(code=D.DEVICE_PROVISIONED_STATE, device_is_provisioned=False)
    assert framing.encode_frame(prov.SerializeToString()) == PROVISIONED_FALSE
    assert framing.encode_frame(D(code=D.RESPONSE, response=D.CMD_FAILED).SerializeToString()) == RESPONSE_CMD_FAILED
    unsupported = D(code=D.RESPONSE, response=D.CMD_UNSUPPORTED).SerializeToString()
    assert framing.encode_frame(unsupported) == RESPONSE_CMD_UNSUPPORTED


def test_golden_list_and_provisioned_byte_exact(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        s.sendall(LIST_CONTAINERS_REQ)
        assert recv_exact(s, len(CONTAINERS_LIST_EMPTY)) == CONTAINERS_LIST_EMPTY
        s.sendall(GET_PROVISIONED_REQ)
        assert recv_exact(s, len(PROVISIONED_FALSE)) == PROVISIONED_FALSE
        # Nothing else follows the replies.
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(1)
    assert_serving(cmld)


def test_golden_container_status_with_strings(cmld: Daemon, tmp_path: Path) -> None:
    conf = tmp_path / "golden.conf"
    conf.write_text('name: "golden"\nguest_os: "busybox"\n')
    r = cli(cmld.socket, "create", str(conf))
    assert r.rc == 0, r.err
    with connect(cmld.socket) as s:
        s.sendall(GET_CONTAINER_STATUS_REQ)
        header, body = read_raw_frame(s)
    assert HDR.unpack(header)[0] == len(body)
    # code: CONTAINER_STATUS (08 03), then field 7 length-delimited (tag 3a) with the status.
    assert body[:3] == bytes.fromhex("0803 3a")
    reply = framing.parse(DaemonToController, body)
    assert reply.code == D.CONTAINER_STATUS
    assert len(reply.container_status) == 1
    st: ContainerStatus = reply.container_status[0]
    for f in STATUS_FIELDS:
        assert st.HasField(f), f"required field {f} missing"
    assert st.IsInitialized()
    assert st.name == "golden"
    assert st.guestos == "busybox"
    assert len(st.uuid) == 36
    # Fields are on the wire in field-number order, as protobuf-c writes them.
    assert reply.SerializeToString() == body
    assert_serving(cmld)


# ---------------------------------------------------------------------- 2. zero-length frame


def test_zero_length_frame_gets_cmd_failed_and_connection_stays(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        s.sendall(b"\x00\x00\x00\x00")
        # An empty body lacks the required `command`: a clear CMD_FAILED, byte-exact.
        assert recv_exact(s, len(RESPONSE_CMD_FAILED)) == RESPONSE_CMD_FAILED
        s.sendall(LIST_CONTAINERS_REQ)
        assert recv_exact(s, len(CONTAINERS_LIST_EMPTY)) == CONTAINERS_LIST_EMPTY
    wait_log(cmld, "malformed request (0 bytes)")
    assert_serving(cmld)


# ---------------------------------------------------------------------- 3. length limit


@pytest.mark.parametrize("length", [LIMIT + 1, LIMIT, 0xFFFFFFFF])
def test_length_at_or_above_the_limit_closes(cmld: Daemon, length: int) -> None:
    with connect(cmld.socket) as s:
        s.sendall(HDR.pack(length))
        assert closed_by_server(s, 3.0), f"length {length} did not close the connection"
    wait_log(cmld, f"frame length {length} is not below the limit of {LIMIT} bytes")
    assert_serving(cmld)


def test_length_just_below_the_limit_waits_for_the_body(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        s.sendall(HDR.pack(LIMIT - 1))
        # Not refused by the length check: the server waits for the body (we never send it).
        assert not closed_by_server(s, 0.5)
    assert "not below the limit" not in cmld.log_text()
    assert_serving(cmld)


# ---------------------------------------------------------------------- 4. truncated body


def test_truncated_body_then_eof(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        s.sendall(HDR.pack(100) + b"\x08" * 10)
        s.shutdown(socket.SHUT_WR)
        assert closed_by_server(s, 3.0)
    wait_log(cmld, "connection closed after 10 of 100 body bytes")
    assert_serving(cmld)


# ---------------------------------------------------------------------- 5. / 6. timeouts


def test_stalled_frame_is_dropped(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start("--frame-timeout", "0.5")
    with connect(d.socket) as s:
        t0 = time.monotonic()
        s.sendall(HDR.pack(10) + b"\x08\x02\x50")
        assert closed_by_server(s, 2.0), "stalled frame not dropped within 2 s"
        assert time.monotonic() - t0 >= 0.4
    wait_log(d, "frame not complete within 0.5 s")
    assert_serving(d)


def test_idle_client_is_dropped_busy_client_stays(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start("--idle-timeout", "0.5")
    with connect(d.socket) as idle:
        t0 = time.monotonic()
        assert closed_by_server(idle, 2.0), "idle client not dropped within 2 s"
        assert time.monotonic() - t0 >= 0.4
    wait_log(d, "no request within 0.5 s")

    with connect(d.socket) as busy:
        end = time.monotonic() + 1.5  # three idle timeouts
        n = 0
        while time.monotonic() < end:
            assert request(busy, C(command=C.LIST_CONTAINERS)).code == D.CONTAINERS_LIST
            n += 1
            time.sleep(0.1)
        assert n >= 5
        assert request(busy, C(command=C.GET_PROVISIONED)).code == D.DEVICE_PROVISIONED_STATE
    assert_serving(d)


# ---------------------------------------------------------------------- 7. random bytes


def test_random_bodies_get_a_reply_never_a_hang(cmld: Daemon) -> None:
    rng = random.Random(0xC0FFEE)
    outcomes: dict[str, int] = {}
    for _ in range(200):
        body = rng.randbytes(rng.randint(1, 4096))
        with connect(cmld.socket, timeout=5.0) as s:
            send_body(s, body)
            reply = read_reply(s)  # raises on a hang (5 s) or an invalid reply
        try:
            framing.parse(ControllerToDaemon, body)
            valid_request = True
        except framing.MessageError:
            valid_request = False
        if valid_request:
            outcomes["valid"] = outcomes.get("valid", 0) + 1  # any valid reply is fine
            continue
        assert reply.code == D.RESPONSE
        assert reply.response in (D.CMD_FAILED, D.CMD_UNSUPPORTED), D.Response.Name(reply.response)
        key = D.Response.Name(reply.response)
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("CMD_FAILED", 0) > 100, outcomes
    assert_serving(cmld)


def test_random_bytes_without_a_valid_header_end_the_connection(cmld: Daemon) -> None:
    rng = random.Random(0xBADF00D)
    for _ in range(50):
        # First byte >= 0x04: the announced length is >= 64 MiB, which the server must refuse
        # by itself (we keep our write side open).
        data = bytes([rng.randrange(4, 256)]) + rng.randbytes(63)
        with connect(cmld.socket) as s:
            s.sendall(data)
            assert closed_by_server(s, 5.0), data[:4].hex()
    for _ in range(50):
        # Fully random 64 bytes, then EOF: a short frame gets a reply, a longer one is truncated,
        # a huge one refused; in every case the connection ends.
        data = rng.randbytes(64)
        with connect(cmld.socket) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            assert closed_by_server(s, 5.0), data[:4].hex()
    assert_serving(cmld)


# ---------------------------------------------------------------------- 8. wrong message types


def test_wrong_message_types(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        # DaemonToController{code: CONTAINER_STATUS} is `08 03`, which decodes as
        # ControllerToDaemon{command: GET_CONTAINER_STATUS}: observed reply CONTAINER_STATUS with
        # no containers, byte-exact `08 03`.
        send_body(s, D(code=D.CONTAINER_STATUS).SerializeToString())
        assert read_raw_frame(s)[1] == bytes.fromhex("0803")

        # TokenToDaemon{code: CRYPTO_HASH_OK (50), hash_value}: command value 50 is no Command
        # (field 50 is unknown): observed RESPONSE CMD_UNSUPPORTED.
        tok = TokenToDaemon(code=TokenToDaemon.CRYPTO_HASH_OK, hash_value=b"\x01" * 32)
        send_body(s, tok.SerializeToString())
        assert read_raw_frame(s)[1] == RESPONSE_CMD_UNSUPPORTED[4:]

        # ControllerToTpm{code: RANDOM_REQ (4), rand_size: 8} is `08 04 38 08`: command 4 is
        # GET_CONTAINER_CONFIG, field 7 is unknown and skipped: observed CONTAINER_CONFIG with no
        # configs, byte-exact `08 04`.
        tpm = ControllerToTpm(code=ControllerToTpm.RANDOM_REQ, rand_size=8)
        assert tpm.SerializeToString() == bytes.fromhex("08043808")
        send_body(s, tpm.SerializeToString())
        assert read_raw_frame(s)[1] == bytes.fromhex("0804")
    wait_log(cmld, "unknown command value 50")
    assert_serving(cmld)


# ---------------------------------------------------------------------- 9. unknown command


def test_unknown_command_value(cmld: Daemon) -> None:
    with connect(cmld.socket) as s:
        s.sendall(bytes.fromhex("00000003 08e707"))  # command: 999
        assert recv_exact(s, len(RESPONSE_CMD_UNSUPPORTED)) == RESPONSE_CMD_UNSUPPORTED
        s.sendall(LIST_CONTAINERS_REQ)  # the connection stays
        assert recv_exact(s, len(CONTAINERS_LIST_EMPTY)) == CONTAINERS_LIST_EMPTY
    wait_log(cmld, "unknown command value 999")
    assert_serving(cmld)


# ---------------------------------------------------------------------- 10. many clients


def test_hundred_concurrent_clients(cmld: Daemon) -> None:
    n = 100
    all_connected = threading.Barrier(n, timeout=20)
    all_answered = threading.Barrier(n, timeout=20)

    def client(_: int) -> bool:
        with connect(cmld.socket, timeout=10.0) as s:
            all_connected.wait()  # 100 connections open at the same time
            reply = request(s, C(command=C.GET_CONTAINER_STATUS))
            all_answered.wait()  # and still open until everybody got a reply
            return reply.code == D.CONTAINER_STATUS

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(client, range(n)))
    assert results == [True] * n
    assert_serving(cmld)


def open_served(d: Daemon, timeout: float = 3.0) -> socket.socket:
    """A connection the server has registered and served once. A just-closed connection (the
    fixture's readiness probe, an earlier client) counts against --max-clients until the server
    has read its EOF, so a refusal here is retried."""
    deadline = time.monotonic() + timeout
    while True:
        s = connect(d.socket)
        try:
            assert request(s, C(command=C.LIST_CONTAINERS)).code == D.CONTAINERS_LIST
            return s
        except (AssertionError, OSError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_max_clients(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start("--max-clients", "5")
    held: list[socket.socket] = []
    try:
        for _ in range(5):
            held.append(open_served(d))
        refusals = d.log_text().count("refusing")
        with connect(d.socket) as sixth:
            assert closed_by_server(sixth, 3.0), "6th client not refused"
        assert until(lambda: d.log_text().count("refusing") == refusals + 1)
        assert "5 clients already connected" in d.log_text()
        for s in held:  # the five are unaffected
            assert request(s, C(command=C.GET_PROVISIONED)).code == D.DEVICE_PROVISIONED_STATE
    finally:
        for s in held:
            s.close()
    # After the five closed, new clients are served; five at once fit again.
    again: list[socket.socket] = []
    try:
        for _ in range(5):
            again.append(open_served(d))
    finally:
        for s in again:
            s.close()
    assert_serving(d)


# ---------------------------------------------------------------------- 11. early disconnects


def test_connect_and_disconnect_and_half_header(cmld: Daemon) -> None:
    connect(cmld.socket).close()
    with connect(cmld.socket) as s:
        s.sendall(b"\x00\x00")
    wait_log(cmld, "connection closed after 2 of 4 length bytes")
    assert_serving(cmld)
