"""Helpers for scd tests: a development PKI made once per session by the real `cml-sign pki`,
scd launched on a prepared base directory, and blocking request helpers on the real socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from cml_common import framing
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from tests.conftest import BIN, Daemon, DaemonFactory

Q = DaemonToToken
T = TokenToDaemon
SECRET = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def make_pki(out: Path, key_type: str) -> Path:
    subprocess.run([str(BIN / "cml-sign"), "pki", str(out), "--key-type", key_type], check=True,
                   capture_output=True)
    return out


def prepare_base(base: Path, pki: Path | None) -> Path:
    (base / "tokens").mkdir(parents=True, exist_ok=True)
    if pki is not None:
        shutil.copy(pki / "ssig_rootca.cert", base / "tokens" / "ssig_rootca.cert")
    return base


def launch_scd(factory: DaemonFactory, base: Path, *extra: str, name: str = "scd") -> Daemon:
    return factory.launch("scd", name, *extra, base=base, kind=socket.SOCK_SEQPACKET)


def request(d: Daemon, req: DaemonToToken, timeout: float = 30.0) -> TokenToDaemon:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        s.connect(str(d.socket))
        framing.send_seqpacket(s, framing.serialize(req))
        body = framing.recv_seqpacket(s)
    assert body is not None, "scd closed the connection"
    return framing.parse(TokenToDaemon, body)


def new_uuid() -> str:
    return str(uuid.uuid4())


def pki_fixture(key_type: str):  # type: ignore[no-untyped-def]
    """A session-scoped PKI fixture (key generation is the slow part of these tests)."""
    import pytest

    @pytest.fixture(scope="session")
    def _pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return make_pki(tmp_path_factory.mktemp(f"pki-{key_type}") / "pki", key_type)

    return _pki
