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
from tests.conftest import BIN, HOSTED_DEVICE_CONF, Daemon, DaemonFactory
from tests.host.containers import install_guestos

Q = DaemonToToken
T = TokenToDaemon
SECRET = b"\x01\x02\x03\x04\x05\x06\x07\x08"
SIGNED_DEVICE_CONF = "hostedmode: true\nsigned_configs: true\ntpm_enabled: false\n"


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


def sign(conf: Path, pki: Path) -> tuple[Path, Path]:
    """`cml-sign sign` with the PKI's software-signing key: returns the .sig and .cert paths."""
    r = subprocess.run([str(BIN / "cml-sign"), "sign", str(conf), "-k", str(pki / "ssig_cml.key"), "--cert",
                        str(pki / "ssig_cml.chain")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return conf.with_suffix(".sig"), conf.with_suffix(".cert")


def scd_and_cmld(factory: DaemonFactory, *, pki: Path | None = None, guestos: Path | None = None,
                 device_conf: str = HOSTED_DEVICE_CONF) -> tuple[Daemon, Daemon]:
    """scd and cmld on one base directory, as on a device: with the PKI's root as the trust
    anchor, and the demo GuestOS installed (signed when there is a PKI)."""
    base = prepare_base(factory.tmp / "cmld-base", pki)
    if guestos is not None:
        install_guestos(guestos, base)
        if pki is not None:
            sign(base / "operatingsystems" / "busybox-1.conf", pki)
    scd = launch_scd(factory, base)
    return scd, factory.start("--stop-timeout", "10", base=base, device_conf=device_conf)
