"""CRYPTO_SIGN_DEVICE (extension of scd): the device key signs cmld's audit checkpoints. With
tpm_enabled the key is tpm2d's, in the (sw)TPM: the checkpoints of cmld's journal verify against
the TPM key's certificate (CR 3.9). Bad requests are answered with CRYPTO_SIGN_ERROR and scd
goes on serving."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cml_common.auditlog.seal import signature_valid, statement
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from tests.conftest import BIN, DaemonFactory, cli, is_root
from tests.host import tpm2dlib
from tests.host.scdlib import launch_scd, prepare_base, request
from tests.host.swtpmlib import Swtpm, running_swtpm

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
Q, T = DaemonToToken, TokenToDaemon
TPM_AUDIT_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: true\naudit_size: 1\n" \
                 "audit_checkpoint_records: 3\n"


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


def der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined,no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def test_soft_device_key_signs_and_bad_requests_are_refused(cmld_factory: DaemonFactory) -> None:
    base = prepare_base(cmld_factory.tmp / "base", None)
    (base / "device.conf").write_text("hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n")
    scd = launch_scd(cmld_factory, base)
    data = statement(7, "ab" * 64, 1700000000)
    r = request(scd, Q(code=Q.CRYPTO_SIGN_DEVICE, sign_buf=data))
    assert r.code == T.CRYPTO_SIGN_OK
    cert = x509.load_pem_x509_certificate(r.signer_cert)
    assert signature_valid(cert, data, r.signature)
    assert not signature_valid(cert, data + b"x", r.signature)
    assert r.signer_cert == (base / "tokens" / "device.cert").read_bytes()
    for bad in (Q(code=Q.CRYPTO_SIGN_DEVICE), Q(code=Q.CRYPTO_SIGN_DEVICE, sign_buf=b"x" * (64 * 1024 + 1))):
        assert request(scd, bad).code == T.CRYPTO_SIGN_ERROR
    assert request(scd, Q(code=Q.CRYPTO_SIGN_DEVICE, sign_buf=b"")).code == T.CRYPTO_SIGN_OK
    assert scd.alive()


@pytest.mark.req("CR 3.9")
def test_checkpoints_are_signed_in_the_tpm(cmld_factory: DaemonFactory, swtpm: Swtpm) -> None:
    base = cmld_factory.tmp / "device"
    base.mkdir()
    (base / "device.conf").write_text(TPM_AUDIT_CONF)
    t = tpm2dlib.launch(cmld_factory, swtpm, base=base)
    scd = cmld_factory.launch("scd", "scd", "--tpm2d-socket", str(t.socket), base=base, kind=socket.SOCK_SEQPACKET)
    with t.client() as c:
        tpm_key = serialization.load_pem_public_key(c.device_key_public())
    d = cmld_factory.start(base=base, device_conf=None)
    for _ in range(4):
        assert cli(d.socket, "list").rc == 0
    assert d.stop() == 0  # the last checkpoint is made on the way down
    scd.stop()
    cert_path = base / "tokens" / "device.cert"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert der(cert.public_key()) == der(tpm_key)  # the device certificate is the TPM key's
    r = subprocess.run([str(BIN / "cml-control"), "audit", "verify", "--dir", str(base / "audit"), "--cert",
                        str(cert_path), "--sealed"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signed checkpoint(s)" in r.stdout and " 0 signed" not in r.stdout
