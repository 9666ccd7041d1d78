"""CRYPTO_VERIFY_FILE/BUF through the real scd: configs signed by cml-sign and by the real
openssl, every failure class, anchors in the original's order, REGISTER_NEWCA persistence, and
validity times after provisioning."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cml_common.messages.scd_pb2 import HashAlgo
from cml_common.paths import Layout
from cml_sign import pki as pkimod
from cmld.clients.scd import ScdClient, VerifyResult
from cmld.guestos.ca_store import register_ca
from tests.conftest import BIN, Daemon, DaemonFactory
from tests.host.scdlib import Q, T, launch_scd, pki_fixture, prepare_base
from tests.host.scdlib import request as scd_request

pytestmark = pytest.mark.host

rsa_pki = pki_fixture("rsa2048")
ec_pki = pki_fixture("ec256")
ec384_pki = pki_fixture("ec384")
CONF = b'name: "app"\nguest_os: "busybox"\nguestos_version: 1\n'


@pytest.fixture
def scd(cmld_factory: DaemonFactory, tmp_path: Path, rsa_pki: Path) -> Daemon:
    return launch_scd(cmld_factory, prepare_base(tmp_path / "base", rsa_pki))


def cml_sign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cml-sign"), *args], capture_output=True, text=True, check=False)


def signed(tmp: Path, pki: Path, signer: str = "ssig_cml", *extra: str, data: bytes = CONF) -> tuple[Path, Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "app.conf"
    conf.write_bytes(data)
    r = cml_sign("sign", str(conf), "-k", str(pki / f"{signer}.key"), "--cert", str(pki / f"{signer}.chain"), *extra)
    assert r.returncode == 0, r.stderr
    return conf, tmp / "app.sig", tmp / "app.cert"


def vfile(d: Daemon, conf: Path, sig: Path, cert: Path, ignore_time: bool = False) -> int:
    return scd_request(d, Q(code=Q.CRYPTO_VERIFY_FILE, hash_algo=HashAlgo.SHA512, verify_data_file=str(conf),
                        verify_sig_file=str(sig), verify_cert_file=str(cert), verify_ignore_time=ignore_time)).code


def test_scd_verify_cml_sign_and_openssl_signatures(scd: Daemon, rsa_pki: Path, tmp_path: Path) -> None:
    conf, sig, cert = signed(tmp_path / "a", rsa_pki)
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_GOOD
    # cml-sign's signature verifies with the real openssl (raw RSA-PSS SHA-512 over the file bytes).
    pub = tmp_path / "pub.pem"
    pub.write_bytes(subprocess.run(["openssl", "x509", "-in", str(rsa_pki / "ssig_cml.cert"), "-pubkey", "-noout"],
                                   capture_output=True, check=True).stdout)
    r = subprocess.run(["openssl", "dgst", "-sha512", "-sigopt", "rsa_padding_mode:pss", "-verify", str(pub),
                        "-signature", str(sig), str(conf)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "Verified OK" in r.stdout, r.stdout + r.stderr
    # A signature made by openssl, as sign_config.sh does, verifies in scd.
    osig = tmp_path / "openssl.sig"
    subprocess.run(["openssl", "dgst", "-sha512", "-sign", str(rsa_pki / "ssig_cml.key"), "-sigopt",
                    "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1", "-out", str(osig), str(conf)], check=True)
    assert vfile(scd, conf, osig, cert) == T.CRYPTO_VERIFY_GOOD
    # ... and so does an openssl PKCS#1 v1.5 signature, and cml-sign --pkcs1.
    subprocess.run(["openssl", "dgst", "-sha512", "-sign", str(rsa_pki / "ssig_cml.key"), "-out", str(osig),
                    str(conf)], check=True)
    assert vfile(scd, conf, osig, cert) == T.CRYPTO_VERIFY_GOOD
    conf2, sig2, cert2 = signed(tmp_path / "b", rsa_pki, "ssig_cml", "--pkcs1")
    assert vfile(scd, conf2, sig2, cert2) == T.CRYPTO_VERIFY_GOOD
    # VERIFY_BUF with the same bytes.
    r = scd_request(scd, Q(code=Q.CRYPTO_VERIFY_BUF, hash_algo=HashAlgo.SHA512, verify_data_buf=conf.read_bytes(),
                       verify_sig_buf=sig.read_bytes(), verify_cert_buf=cert.read_bytes()))
    assert r.code == T.CRYPTO_VERIFY_GOOD


@pytest.mark.req("COM 06", "NDR 2.4 (1)")
def test_scd_verify_failures(scd: Daemon, rsa_pki: Path, tmp_path: Path) -> None:
    conf, sig, cert = signed(tmp_path / "a", rsa_pki)
    data = conf.read_bytes()
    # One byte of the config changed.
    conf.write_bytes(data[:5] + bytes([data[5] ^ 1]) + data[6:])
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_BAD_SIGNATURE
    conf.write_bytes(data)
    # One byte of the signature changed.
    s = sig.read_bytes()
    bad_sig = tmp_path / "bad.sig"
    bad_sig.write_bytes(s[:10] + bytes([s[10] ^ 0x40]) + s[11:])
    assert vfile(scd, conf, bad_sig, cert) == T.CRYPTO_VERIFY_BAD_SIGNATURE
    # Swapped .cert: a valid chain to the same root, but for another key.
    swapped = tmp_path / "swapped.cert"
    swapped.write_bytes((rsa_pki / "ssig_subca.chain").read_bytes())
    assert vfile(scd, conf, sig, swapped) == T.CRYPTO_VERIFY_BAD_SIGNATURE
    # Chain missing its intermediate.
    leaf_only = tmp_path / "leaf.cert"
    leaf_only.write_bytes((rsa_pki / "ssig_cml.cert").read_bytes())
    assert vfile(scd, conf, sig, leaf_only) == T.CRYPTO_VERIFY_BAD_CERTIFICATE
    # Signed under a CA that is not registered.
    conf2, sig2, cert2 = signed(tmp_path / "b", rsa_pki, "guestos")
    assert vfile(scd, conf2, sig2, cert2) == T.CRYPTO_VERIFY_BAD_CERTIFICATE
    # Unreadable or garbage inputs.
    assert vfile(scd, conf, tmp_path / "missing.sig", cert) == T.CRYPTO_VERIFY_ERROR
    garbage = tmp_path / "garbage.cert"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert vfile(scd, conf, sig, garbage) == T.CRYPTO_VERIFY_ERROR
    r = scd_request(scd, Q(code=Q.CRYPTO_VERIFY_BUF, verify_data_buf=b"x"))
    assert r.code == T.CRYPTO_VERIFY_ERROR
    log = scd.log_text()
    assert "signature does not match" in log and "no issuer of" in log


@pytest.mark.req("OS 03", "CR 1.8", "NDR 3.13")
def test_scd_register_ca_and_local_ca(cmld_factory: DaemonFactory, rsa_pki: Path, tmp_path: Path) -> None:
    base = prepare_base(tmp_path / "base", rsa_pki)
    scd = launch_scd(cmld_factory, base)
    conf, sig, cert = signed(tmp_path / "g", rsa_pki, "guestos")
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_BAD_CERTIFICATE
    # REGISTER_NEWCA as cmld does it, through the client helper; scd uses it at once.
    path = register_ca(Layout(base).ca_dir, (rsa_pki / "gen_rootca.cert").read_bytes())[0]
    assert path.parent == base / "tokens" / "ca"
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_GOOD
    # Persisted: a restarted scd still trusts it.
    scd.stop()
    scd = launch_scd(cmld_factory, base, name="scd2")
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_GOOD
    # Local CA: the same signature is only LOCALLY_SIGNED when its root is the local CA.
    path.unlink()
    shutil.copy(rsa_pki / "gen_rootca.cert", base / "tokens" / "localca_rootca.cert")
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_LOCALLY_SIGNED
    # The software-signing root comes first: ssig-signed configs stay GOOD.
    c2, s2, k2 = signed(tmp_path / "s", rsa_pki)
    assert vfile(scd, c2, s2, k2) == T.CRYPTO_VERIFY_GOOD


@pytest.mark.parametrize("pki_name", ["ec_pki", "ec384_pki"])
@pytest.mark.req("COM 03", "CR 4.3")
def test_scd_verify_ecdsa(cmld_factory: DaemonFactory, tmp_path: Path, pki_name: str,
                          request: pytest.FixtureRequest) -> None:
    pki: Path = request.getfixturevalue(pki_name)
    scd = launch_scd(cmld_factory, prepare_base(tmp_path / "base", pki))
    conf, sig, cert = signed(tmp_path / "a", pki)
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_GOOD
    conf.write_bytes(CONF + b"\n")
    assert vfile(scd, conf, sig, cert) == T.CRYPTO_VERIFY_BAD_SIGNATURE


def test_scd_expired_certificate_only_before_provisioning(
        cmld_factory: DaemonFactory, rsa_pki: Path, tmp_path: Path) -> None:
    base = prepare_base(tmp_path / "base", rsa_pki)
    scd = launch_scd(cmld_factory, base)
    # A signer certificate that expired last year, issued by the real sub CA.
    ca_key = serialization.load_pem_private_key((rsa_pki / "ssig_subca_cml.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((rsa_pki / "ssig_subca_cml.cert").read_bytes())
    key = pkimod.new_key("ec256")
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=800)
    cert = pkimod.issue(x509.Name.from_rfc4514_string("CN=expired signer"), key.public_key(), ca_cert.subject,
                        ca_key, ca=False, days=365, not_before=old)  # type: ignore[arg-type]
    d = tmp_path / "x"
    d.mkdir()
    (d / "signer.key").write_bytes(pkimod.key_pem(key))
    (d / "signer.chain").write_bytes(pkimod.cert_pem(cert, ca_cert))
    conf, sig, chain = signed(d, d, "signer")
    assert vfile(scd, conf, sig, chain) == T.CRYPTO_VERIFY_BAD_CERTIFICATE
    assert vfile(scd, conf, sig, chain, ignore_time=True) == T.CRYPTO_VERIFY_GOOD  # unprovisioned
    (base / "_cml_provisioned_").touch()
    assert vfile(scd, conf, sig, chain, ignore_time=True) == T.CRYPTO_VERIFY_BAD_CERTIFICATE
    assert "expired on" in scd.log_text()


def test_scd_client_verify(scd: Daemon, rsa_pki: Path, tmp_path: Path) -> None:
    conf, sig, cert = signed(tmp_path / "a", rsa_pki)
    client = ScdClient(scd.socket, timeout=10)

    async def run() -> tuple[VerifyResult, VerifyResult, VerifyResult]:
        good = await client.verify_file(conf, sig, cert)
        buf = await client.verify_buf(conf.read_bytes() + b"x", sig.read_bytes(), cert.read_bytes())
        ec = await client.verify_buf(conf.read_bytes(), sig.read_bytes(), b"not pem")
        return good, buf, ec

    assert asyncio.run(run()) == (VerifyResult.GOOD, VerifyResult.BAD_SIGNATURE, VerifyResult.ERROR)
