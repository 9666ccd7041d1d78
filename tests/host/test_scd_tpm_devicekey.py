"""scd's device key in the TPM (`tpm_enabled: true`): the CSR and the self-signed certificate are
signed by tpm2d's attestation key, provisioning makes a CA-issued certificate for that key, and a
verifier then attests the device against that CA. Without the TPM (tpm2d gone, or another TPM)
nothing can be signed."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from tests.conftest import BIN, DaemonFactory
from tests.host import tpm2dlib
from tests.host.scdlib import make_pki, request
from tests.host.swtpmlib import Swtpm, running_swtpm

pytestmark = pytest.mark.host
TPM_DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: true\n"


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


def der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined,no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def start_scd(factory: DaemonFactory, base: Path, tpm2d: tpm2dlib.Tpm2d | None, name: str = "scd"):  # type: ignore[no-untyped-def]
    base.mkdir(parents=True, exist_ok=True)
    (base / "device.conf").write_text(TPM_DEVICE_CONF)
    sock = str(tpm2d.socket) if tpm2d else str(factory.tmp / "no-tpm2d.sock")
    return factory.launch("scd", name, "--tpm2d-socket", sock, base=base, kind=socket.SOCK_SEQPACKET)


@pytest.mark.req("COM 02", "IAM 01", "CR 1.2", "CR 1.5 (1)", "CR 1.9 (1)", "NDR 3.12")
def test_csr_and_certificate_are_signed_by_the_tpm_key_and_provisioning_attests(
        cmld_factory: DaemonFactory, swtpm: Swtpm, tmp_path: Path) -> None:
    base = tmp_path / "device"
    t = tpm2dlib.launch(cmld_factory, swtpm, base=base)
    scd = start_scd(cmld_factory, base, t)
    with t.client() as c:
        ak = serialization.load_pem_public_key(c.device_key_public())
    csr_pem = request(scd, DaemonToToken(code=DaemonToToken.PULL_DEVICE_CSR))
    assert csr_pem.code == TokenToDaemon.DEVICE_CSR, csr_pem
    csr = x509.load_pem_x509_csr(csr_pem.device_csr)
    assert csr.is_signature_valid and der(csr.public_key()) == der(ak)  # the CSR's key is the TPM key
    cert = x509.load_pem_x509_certificate((base / "tokens" / "device.cert").read_bytes())
    assert der(cert.public_key()) == der(ak)
    cert.verify_directly_issued_by(cert)
    assert not (base / "tokens" / "device.key").exists()  # no soft key made
    # Provisioning (J8): the CA signs the CSR, scd installs the certificate...
    pki = make_pki(tmp_path / "pki", "ec256")
    (tmp_path / "device.csr").write_bytes(csr_pem.device_csr)
    subprocess.run([str(BIN / "cml-sign"), "csr", str(tmp_path / "device.csr"), "--ca-key",
                    str(pki / "device_subca.key"), "--ca-cert", str(pki / "device_subca.cert"), "-o",
                    str(tmp_path / "device.cert")], check=True, capture_output=True)
    pushed = request(scd, DaemonToToken(code=DaemonToToken.PUSH_DEVICE_CERT,
                                        device_cert=(tmp_path / "device.cert").read_bytes()))
    assert pushed.code == TokenToDaemon.DEVICE_CERT_OK, pushed
    # ...and a verifier that trusts the device CA attests the device (J11).
    (tmp_path / "ca.pem").write_bytes((pki / "device_subca.cert").read_bytes())
    cfg = tpm2dlib.verifier_config(tmp_path / "r.conf", ca_cert="ca.pem", verify_ima=False)
    r = tpm2dlib.verify(t, cfg)
    lines = tpm2dlib.check_lines(r.stdout)
    assert r.returncode == 0, r.stdout
    assert lines["ak binding"].startswith("PASS") and lines["certificate"].startswith("PASS device ")


@pytest.mark.req("CR 1.5 (1)", "CR 1.9 (1)")
def test_without_the_tpm_nothing_is_signed(cmld_factory: DaemonFactory, swtpm: Swtpm, tmp_path: Path) -> None:
    # tpm2d not running: scd has no identity (and says why) but keeps serving, no soft key appears.
    base = tmp_path / "no-tpm"
    scd = start_scd(cmld_factory, base, None)
    r = request(scd, DaemonToToken(code=DaemonToToken.PULL_DEVICE_CSR))
    assert r.code == TokenToDaemon.DEVICE_CSR_ERROR
    assert not (base / "tokens" / "device.key").exists() and not (base / "tokens" / "device.cert").exists()
    log = "".join(p.read_text() for p in (cmld_factory.tmp / "scd-logs").glob("cml-scd*") if p.is_file())
    assert "TPM device key unavailable from tpm2d" in log, log
    # The key files of one TPM are useless on another: tpm2d refuses to start with them.
    first = tmp_path / "first"
    t = tpm2dlib.launch(cmld_factory, swtpm, base=first, name="tpm2d-first")
    t.daemon.stop()
    with running_swtpm() as other, pytest.raises(RuntimeError, match="another TPM, or cleared"):
        tpm2dlib.launch(cmld_factory, other, base=first, name="tpm2d-other")
