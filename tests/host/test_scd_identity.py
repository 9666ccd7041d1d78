"""Device identity through the real scd: key, CSR, self-signed certificate and device_id.conf on
first start, PULL_DEVICE_CSR / PUSH_DEVICE_CERT in provisioning mode only, damaged key files."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cmld.clients.scd import NotProvisioning, ScdClient, ScdCommandFailed
from cmld.device.config import load_device_uuid
from scd.identity import device_uuid_of
from tests.conftest import BIN, DaemonFactory
from tests.host.scdlib import Q, T, launch_scd, pki_fixture, prepare_base, request

pytestmark = pytest.mark.host
ec_pki = pki_fixture("ec256")


@pytest.mark.req("IAM 01", "CR 1.2 (1)", "CR 1.4", "CR 1.8")
def test_scd_device_identity_and_provisioning(cmld_factory: DaemonFactory, tmp_path: Path, ec_pki: Path) -> None:
    base = prepare_base(tmp_path / "base", ec_pki)
    scd = launch_scd(cmld_factory, base)
    tokens = base / "tokens"
    for name in ("device.key", "device.csr", "device.cert", "device_id.conf"):
        assert (tokens / name).exists(), name
    assert (tokens / "device.key").stat().st_mode & 0o077 == 0
    uid = load_device_uuid(tokens / "device_id.conf")  # the format cmld reads
    assert len(uid) == 36
    self_signed = x509.load_pem_x509_certificate((tokens / "device.cert").read_bytes())
    assert self_signed.issuer == self_signed.subject and device_uuid_of(self_signed) == uid

    r = request(scd, Q(code=Q.PULL_DEVICE_CSR))
    assert r.code == T.DEVICE_CSR
    csr = x509.load_pem_x509_csr(r.device_csr)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"UUID:{uid}"]
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # openssl agrees the CSR is well-formed.
    csr_file = tmp_path / "device.csr"
    csr_file.write_bytes(r.device_csr)
    subprocess.run(["openssl", "req", "-in", str(csr_file), "-verify", "-noout"], check=True, capture_output=True)

    # Bad pushes are refused and change nothing.
    before = (tokens / "device.cert").read_bytes()
    for bad in (b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                (ec_pki / "guestos.cert").read_bytes()):  # a real certificate, but not for our key
        assert request(scd, Q(code=Q.PUSH_DEVICE_CERT, device_cert=bad)).code == T.DEVICE_CERT_ERROR
    assert (tokens / "device.cert").read_bytes() == before

    # The operator issues the certificate with the device sub CA; the client pushes it.
    cert_file = tmp_path / "device.cert"
    p = subprocess.run([str(BIN / "cml-sign"), "csr", str(csr_file), "--ca-key", str(ec_pki / "device_subca.key"),
                        "--ca-cert", str(ec_pki / "device_subca.cert"), "-o", str(cert_file)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    client = ScdClient(scd.socket, timeout=10)
    asyncio.run(client.push_device_cert(cert_file.read_bytes()))
    assert (tokens / "device.cert").read_bytes() == cert_file.read_bytes()

    # Next start: provisioned certificate, so no more CSR pulls or certificate pushes.
    scd.stop()
    scd = launch_scd(cmld_factory, base, name="scd2")
    with pytest.raises(NotProvisioning):
        asyncio.run(ScdClient(scd.socket, timeout=10).pull_device_csr())
    assert request(scd, Q(code=Q.PUSH_DEVICE_CERT, device_cert=cert_file.read_bytes())).code == T.DEVICE_PROV_ERROR
    assert load_device_uuid(tokens / "device_id.conf") == uid


def test_scd_corrupt_device_key_is_kept(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    base = prepare_base(tmp_path / "base", None)
    key = base / "tokens" / "device.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n")  # truncated
    scd = launch_scd(cmld_factory, base)
    assert request(scd, Q(code=Q.PULL_DEVICE_CSR)).code == T.DEVICE_CSR_ERROR
    with pytest.raises(ScdCommandFailed):
        asyncio.run(ScdClient(scd.socket).push_device_cert(b"x"))
    assert key.read_bytes() == b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n"
    assert not (base / "tokens" / "device.cert").exists()
    assert "device identity unavailable" in scd.log_text()
    assert scd.alive()
