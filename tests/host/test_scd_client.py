"""cmld's async scd client against the real scd: the container-key journey (J2/J3) and its
typed errors; plus transport failures (no socket, a peer that never answers, truncated frames)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

import pytest

from cml_common.messages.scd_pb2 import HashAlgo
from cmld.clients.scd import (
    CorruptKeyFile,
    LockedTillReboot,
    PinRejected,
    ScdClient,
    ScdCommandFailed,
    ScdTimeout,
    ScdUnavailable,
    TokenUnpaired,
)
from tests.conftest import Daemon, DaemonFactory
from tests.host.scdlib import SECRET, launch_scd, new_uuid, prepare_base

pytestmark = pytest.mark.host


@pytest.fixture
def scd(cmld_factory: DaemonFactory, tmp_path: Path) -> Daemon:
    return launch_scd(cmld_factory, prepare_base(tmp_path / "base", None))


@pytest.mark.req("TSF Container Data Storage")
def test_scd_client_container_key_journey(scd: Daemon, tmp_path: Path) -> None:
    c = ScdClient(scd.socket, timeout=10)
    uid = new_uuid()
    cdir = tmp_path / "containers" / uid
    key = os.urandom(96)

    async def run() -> None:
        await c.token_add(uid)
        with pytest.raises(TokenUnpaired):
            c.check_paired(cdir)  # J3 step 1: start before change_pin
        with pytest.raises(ScdCommandFailed):
            await c.unlock(uid, "trustme", SECRET)
        assert await c.pair_or_change_pin(cdir, uid, "trustme", "1234", SECRET) is True
        assert (cdir / "token_is_paired").exists()
        c.check_paired(cdir)
        assert await c.pair_or_change_pin(cdir, uid, "1234", "4321", SECRET) is False  # now CHANGE_PIN
        await c.unlock(uid, "4321", SECRET)
        wrapped = await c.wrap_key(uid, key)
        await c.lock(uid)
        with pytest.raises(ScdCommandFailed):
            await c.unwrap_key(uid, wrapped)  # locked
        await c.unlock(uid, "4321", SECRET)
        assert await c.unwrap_key(uid, wrapped) == key
        with pytest.raises(CorruptKeyFile):
            await c.unwrap_key(uid, wrapped[:-3])
        for _ in range(3):
            with pytest.raises(PinRejected):
                await c.unlock(uid, "0000", SECRET)
        with pytest.raises(LockedTillReboot):
            await c.unlock(uid, "4321", SECRET)
        assert await c.hash_buf(b"abc", HashAlgo.SHA256) == bytes.fromhex(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        await c.token_remove(uid)
        with pytest.raises(ScdCommandFailed):
            await c.token_remove(uid)

    asyncio.run(run())


def test_scd_client_transport_errors(tmp_path: Path) -> None:
    with pytest.raises(ScdUnavailable):
        asyncio.run(ScdClient(tmp_path / "nothing.sock", timeout=1).hash_buf(b"x"))
    # A peer that accepts and never answers.
    path = tmp_path / "silent.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(path))
    srv.listen(1)
    try:
        with pytest.raises(ScdTimeout):
            asyncio.run(ScdClient(path, timeout=0.3).hash_buf(b"x"))
    finally:
        srv.close()


def test_scd_survives_truncated_and_oversized_frames(scd: Daemon) -> None:
    hdr = struct.Struct(">I")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:  # length, then a short body, then EOF
        s.connect(str(scd.socket))
        s.send(hdr.pack(100))
        s.send(b"\x08\x5a")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:  # 64 MiB announced: refused
        s.connect(str(scd.socket))
        s.settimeout(3)
        s.send(hdr.pack(64 * 1024 * 1024))
        assert s.recv(16) == b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:  # a 3-byte length record
        s.connect(str(scd.socket))
        s.settimeout(3)
        s.send(b"\x00\x00\x01")
        assert s.recv(16) == b""
    assert asyncio.run(ScdClient(scd.socket, timeout=5).hash_buf(b"x", HashAlgo.SHA1))
    assert scd.alive()
