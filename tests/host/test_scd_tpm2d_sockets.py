"""Real scd (SOCK_SEQPACKET) and tpm2d (stream) daemons over their real sockets, and cmld
reporting them as system services in `cml-control list -s`."""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenToDaemon
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController
from tests.conftest import Daemon, DaemonFactory, cli
from tests.host.swtpmlib import Swtpm, running_swtpm

pytestmark = pytest.mark.host

HDR = struct.Struct(">I")
T = TokenToDaemon
Q = DaemonToToken


@pytest.fixture
def scd(cmld_factory: DaemonFactory) -> Daemon:
    return cmld_factory.launch("scd", "scd", kind=socket.SOCK_SEQPACKET)


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


@pytest.fixture
def tpm2d(cmld_factory: DaemonFactory, swtpm: Swtpm) -> Daemon:
    return cmld_factory.launch("tpm2d", "tpm2d", "--tcti", swtpm.tcti, "--attest-listen", "127.0.0.1:0",
                               "--ml-state", str(cmld_factory.tmp / "ml.json"))


# ---------------------------------------------------------------------- scd helpers


def scd_connect(d: Daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5.0)
    s.connect(str(d.socket))
    return s


def scd_send(s: socket.socket, req: DaemonToToken) -> None:
    body = req.SerializeToString()
    s.send(HDR.pack(len(body)))  # one record for the length,
    s.send(body)  # one for the body


def scd_recv(s: socket.socket) -> TokenToDaemon:
    """Exactly two records: 4 length bytes, then the whole body."""
    header = s.recv(65536)
    assert len(header) == 4, header.hex()
    (length,) = HDR.unpack(header)
    body = s.recv(65536)
    assert len(body) == length, (length, body.hex())
    return framing.parse(TokenToDaemon, body)


def scd_request(s: socket.socket, req: DaemonToToken) -> TokenToDaemon:
    scd_send(s, req)
    return scd_recv(s)


def closed_by_peer(s: socket.socket, timeout: float = 3.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def assert_scd_serving(d: Daemon) -> None:
    assert d.proc.poll() is None, "scd died"
    with scd_connect(d) as s:
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_BUF, hash_algo=HashAlgo.SHA256, hash_buf=b"x"))
    assert r.code == T.CRYPTO_HASH_OK
    assert r.hash_value == hashlib.sha256(b"x").digest()


# ---------------------------------------------------------------------- scd


@pytest.mark.parametrize(
    ("algo", "name"), [(HashAlgo.SHA256, "sha256"), (HashAlgo.SHA512, "sha512"), (HashAlgo.SHA1, "sha1")]
)
def test_scd_hash_buf(scd: Daemon, algo: int, name: str) -> None:
    data = bytes(range(256)) * 37
    with scd_connect(scd) as s:
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_BUF, hash_algo=algo, hash_buf=data))  # type: ignore[arg-type]
        assert r.code == T.CRYPTO_HASH_OK
        assert r.hash_value == hashlib.new(name, data).digest()  # raw digest, not hex
        # An empty buffer is a present (empty) hash_buf: hashed too.
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_BUF, hash_algo=algo, hash_buf=b""))  # type: ignore[arg-type]
        assert r.code == T.CRYPTO_HASH_OK
        assert r.hash_value == hashlib.new(name, b"").digest()


def test_scd_reply_is_two_records(scd: Daemon) -> None:
    with scd_connect(scd) as s:
        scd_send(s, Q(code=Q.CRYPTO_HASH_BUF, hash_algo=HashAlgo.SHA512, hash_buf=b"abc"))
        first = s.recv(65536)
        second = s.recv(65536)
    expected = T(code=T.CRYPTO_HASH_OK, hash_value=hashlib.sha512(b"abc").digest()).SerializeToString()
    assert first == HDR.pack(len(expected))
    assert second == expected


def test_scd_hash_file(scd: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    data = b"GyroidOS " * 300_000  # > 1 chunk of the hasher
    f.write_bytes(data)
    with scd_connect(scd) as s:
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_FILE, hash_algo=HashAlgo.SHA256, hash_file=str(f)))
        assert r.code == T.CRYPTO_HASH_OK
        assert r.hash_value == hashlib.sha256(data).digest()
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_FILE, hash_algo=HashAlgo.SHA256, hash_file=str(tmp_path / "missing")))
        assert r.code == T.CRYPTO_HASH_ERROR
        assert not r.HasField("hash_value")
        # The connection stays usable after an error.
        r = scd_request(s, Q(code=Q.CRYPTO_HASH_FILE, hash_algo=HashAlgo.SHA1, hash_file=str(f)))
        assert r.hash_value == hashlib.sha1(data).digest()


def test_scd_unimplemented_code_is_cmd_unknown(scd: Daemon) -> None:
    with scd_connect(scd) as s:
        # Unimplemented in the original too: DERIVE_KEY and TOKEN_QUERY_PAIR_STATE.
        r = scd_request(s, Q(code=Q.DERIVE_KEY, pbkdf_pass="x", pbkdf_salt=b"salt"))
        assert r.code == T.CMD_UNKNOWN == 100
        assert scd_request(s, Q(code=Q.TOKEN_QUERY_PAIR_STATE)).code == T.CMD_UNKNOWN
        assert_scd_serving(scd)


def test_scd_zero_length_frame_disconnects(scd: Daemon) -> None:
    with scd_connect(scd) as s:
        s.send(b"\x00\x00\x00\x00")  # DaemonToToken lacks its required `code`
        assert closed_by_peer(s), "scd kept the connection"
    assert "required field(s) missing: code; disconnecting" in scd.log_text()
    assert_scd_serving(scd)


def test_scd_oversized_body_record_disconnects(scd: Daemon) -> None:
    with scd_connect(scd) as s:
        s.send(HDR.pack(10))
        s.send(b"\x08\x33" + b"\x00" * 18)  # 20 bytes where 10 were announced
        assert closed_by_peer(s), "scd kept the connection"
    assert "body record is longer than the announced length" in scd.log_text()
    assert_scd_serving(scd)


def test_scd_event_listener_is_exclusive(scd: Daemon) -> None:
    reg = Q(code=Q.REGISTER_EVENT_LISTENER)
    with scd_connect(scd) as b:
        with scd_connect(scd) as a:
            assert scd_request(a, reg).code == T.REGISTER_EVENT_LISTENER_OK == 70
            assert scd_request(b, reg).code == T.REGISTER_EVENT_LISTENER_ERROR == 71
            assert scd_request(a, reg).code == T.REGISTER_EVENT_LISTENER_OK  # idempotent for A
        # A is closed: once scd noticed, B can register.
        deadline = time.monotonic() + 3
        code = scd_request(b, reg).code
        while code != T.REGISTER_EVENT_LISTENER_OK and time.monotonic() < deadline:
            time.sleep(0.02)
            code = scd_request(b, reg).code
        assert code == T.REGISTER_EVENT_LISTENER_OK


# ---------------------------------------------------------------------- tpm2d


def tpm_connect(d: Daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.connect(str(d.socket))
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"closed after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def tpm_ask(d: Daemon, req: ControllerToTpm) -> bytes:
    with tpm_connect(d) as s:
        s.sendall(framing.encode_frame(req.SerializeToString()))
        (length,) = HDR.unpack(recv_exact(s, 4))
        return recv_exact(s, length)


def test_tpm2d_replies_carry_ml_entry(tpm2d: Daemon) -> None:
    body = tpm_ask(tpm2d, ControllerToTpm(code=ControllerToTpm.RANDOM_REQ, rand_size=8))
    reply = framing.parse(TpmToController, body)
    assert reply.code == TpmToController.RANDOM_RESPONSE and len(reply.rand_data) == 16
    assert reply.HasField("ml_entry") and reply.ml_entry == b""  # proto2 `required bytes`, present though empty
    # code 4, rand_data (10) 16 hex chars: tag 52, length 10; ml_entry (11) empty: tag 5a, length 0.
    assert body[:4] == bytes.fromhex("0804 5210") and body[-2:] == bytes.fromhex("5a00")
    # A failure: code 2, response (8) 2, ml_entry empty, then our error_message (field 100: a2 06).
    body = tpm_ask(tpm2d, ControllerToTpm(code=ControllerToTpm.RANDOM_REQ, rand_size=0))
    assert body.startswith(bytes.fromhex("0802 4002 5a00 a206"))
    assert b"rand_size 0" in framing.parse(TpmToController, body).error_message.encode()


def test_tpm2d_exit(tpm2d: Daemon) -> None:
    with tpm_connect(tpm2d) as s:
        s.sendall(framing.encode_frame(ControllerToTpm(code=ControllerToTpm.EXIT).SerializeToString()))
        assert tpm2d.proc.wait(5) == 0
    assert not tpm2d.socket.exists()


# ---------------------------------------------------------------------- cmld reporting them


def unit_blocks(out: str) -> dict[str, str]:
    """container_status blocks of `list -s` text output, by name."""
    blocks = re.findall(r"^container_status \{\n(.*?)^\}", out, re.M | re.S)
    by_name: dict[str, str] = {}
    for b in blocks:
        m = re.search(r'^\s*name: "([^"]*)"', b, re.M)
        assert m, b
        by_name[m.group(1)] = b
    return by_name


def test_cmld_lists_scd_and_tpm2d(
    scd: Daemon, tpm2d: Daemon, cmld_factory: DaemonFactory, tmp_path: Path
) -> None:
    assert scd.socket == tmp_path / "scd.sock"
    assert tpm2d.socket == tmp_path / "tpm2d.sock"
    d = cmld_factory.start()
    r = cli(d.socket, "list", "-s")
    assert r.rc == 0, r.err
    units = unit_blocks(r.out)
    assert set(units) == {"scd", "tpm2d"}, r.out
    for name in ("scd", "tpm2d"):
        assert re.search(r"^\s*state: RUNNING$", units[name], re.M), units[name]
        assert re.search(r'^\s*guestos: "host"$', units[name], re.M), units[name]
    # Without -s no units are listed.
    assert unit_blocks(cli(d.socket, "list").out) == {}

    assert scd.stop() == 0
    r = cli(d.socket, "list", "-s")
    assert r.rc == 0, r.err
    units = unit_blocks(r.out)
    assert re.search(r"^\s*state: STOPPED$", units["scd"], re.M), units["scd"]
    assert re.search(r"^\s*state: RUNNING$", units["tpm2d"], re.M), units["tpm2d"]
