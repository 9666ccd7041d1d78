"""cml-sign end to end: PKI, signing with a PEM key or a key on a real SoftHSM2 token (checked with
the real openssl), `verify` explaining its verdict, and a signed GuestOS built with the real
mksquashfs and veritysetup (checked with `veritysetup verify` and scd's verifier)."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import load_text_file
from tests.conftest import BIN
from tests.host.scdlib import pki_fixture

pytestmark = pytest.mark.host
rsa_pki = pki_fixture("rsa2048")
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


def cml_sign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cml-sign"), *args], capture_output=True, text=True, check=False)


def openssl_verify(pub_cert: Path, sig: Path, data: Path, tmp: Path, pss: bool = True) -> bool:
    pub = tmp / "pub.pem"
    pub.write_bytes(subprocess.run(["openssl", "x509", "-in", str(pub_cert), "-pubkey", "-noout"],
                                   capture_output=True, check=True).stdout)
    opts = ["-sigopt", "rsa_padding_mode:pss"] if pss else []
    p = subprocess.run(["openssl", "dgst", "-sha512", *opts, "-verify", str(pub), "-signature", str(sig), str(data)],
                       capture_output=True, text=True, check=False)
    return p.returncode == 0 and "Verified OK" in p.stdout


@pytest.mark.req("CR 1.8")
def test_cml_sign_pki_refuses_overwrite(rsa_pki: Path) -> None:
    r = cml_sign("pki", str(rsa_pki), "--key-type", "ec256")
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    for name in ("ssig_rootca", "ssig_cml", "device_subca", "guestos"):
        assert (rsa_pki / f"{name}.key").stat().st_mode & 0o077 == 0


def test_cml_sign_sign_and_verify(rsa_pki: Path, tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text('name: "app"\n')
    r = cml_sign("sign", str(conf), "-k", str(rsa_pki / "ssig_cml.key"), "--cert", str(rsa_pki / "ssig_cml.chain"))
    assert r.returncode == 0, r.stderr
    sig, cert = tmp_path / "app.sig", tmp_path / "app.cert"
    assert cert.read_text().count("BEGIN CERTIFICATE") == 2  # signer + its sub CA, not the root
    assert openssl_verify(rsa_pki / "ssig_cml.cert", sig, conf, tmp_path)
    r = cml_sign("verify", str(conf), "--root", str(rsa_pki / "ssig_rootca.cert"))
    assert r.returncode == 0 and r.stdout.startswith("CRYPTO_VERIFY_GOOD: good: CN=GyroidOS CML Signing"), r.stdout
    # Why not: wrong anchor, tampered data.
    r = cml_sign("verify", str(conf), "--root", str(rsa_pki / "gen_rootca.cert"))
    assert r.returncode == 1 and "CRYPTO_VERIFY_BAD_CERTIFICATE" in r.stdout and "no issuer of" in r.stdout
    r = cml_sign("verify", str(conf), "--local-ca", str(rsa_pki / "ssig_rootca.cert"))
    assert r.returncode == 0 and r.stdout.startswith("CRYPTO_VERIFY_LOCALLY_SIGNED")
    conf.write_text('name: "apq"\n')
    r = cml_sign("verify", str(conf), "--root", str(rsa_pki / "ssig_rootca.cert"))
    assert r.returncode == 1 and r.stdout.startswith("CRYPTO_VERIFY_BAD_SIGNATURE")
    # A certificate that does not belong to the key is refused at signing time.
    r = cml_sign("sign", str(conf), "-k", str(rsa_pki / "ssig_cml.key"), "--cert", str(rsa_pki / "guestos.chain"))
    assert r.returncode == 1 and "not for the signing key" in r.stderr
    r = cml_sign("sign", str(conf), "-k", str(tmp_path / "missing.key"), "--cert", str(rsa_pki / "ssig_cml.chain"))
    assert r.returncode == 1 and "cannot load the private key" in r.stderr


def test_cml_sign_with_pkcs11_key(rsa_pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not SOFTHSM.exists():
        pytest.skip("softhsm2 is not installed")
    tokdir = tmp_path / "tokens"
    tokdir.mkdir()
    conf_file = tmp_path / "softhsm2.conf"
    conf_file.write_text(f"directories.tokendir = {tokdir}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf_file))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "signer", "--so-pin", "11112222",
                    "--pin", "2468"], check=True, capture_output=True)
    # Import the ssig_cml key into the token (what an operator does with an HSM-held signing key).
    subprocess.run(["softhsm2-util", "--import", str(rsa_pki / "ssig_cml.key"), "--token", "signer", "--label",
                    "ssig_cml", "--id", "01", "--pin", "2468"], check=True, capture_output=True)
    conf = tmp_path / "c.conf"
    conf.write_text('name: "hsm"\n')
    uri = f"pkcs11:token=signer;object=ssig_cml?module-path={SOFTHSM}&pin-value=2468"
    r = cml_sign("sign", str(conf), "-k", uri, "--cert", str(rsa_pki / "ssig_cml.chain"))
    assert r.returncode == 0, r.stderr
    assert openssl_verify(rsa_pki / "ssig_cml.cert", tmp_path / "c.sig", conf, tmp_path)
    r = cml_sign("verify", str(conf), "--root", str(rsa_pki / "ssig_rootca.cert"))
    assert r.returncode == 0, r.stdout
    r = cml_sign("sign", str(conf), "-k", uri.replace("2468", "0000"), "--cert", str(rsa_pki / "ssig_cml.chain"))
    assert r.returncode == 1 and "PinIncorrect" in r.stderr


def _rootfs_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/os-release", b"ID=test\n"), ("sbin/init", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.req("APS 01")
def test_cml_sign_guestos(rsa_pki: Path, tmp_path: Path) -> None:
    for tool in ("mksquashfs", "veritysetup"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    tar = tmp_path / "rootfs.tar"
    _rootfs_tar(tar)
    out = tmp_path / "out"
    args = ["--out", str(out), "--name", "testos", "--version", "3", "-k", str(rsa_pki / "guestos.key"),
            "--cert", str(rsa_pki / "guestos.chain")]
    r = cml_sign("guestos", str(tar), *args)
    assert r.returncode == 0, r.stderr
    conf = out / "testos-3.conf"
    cfg = load_text_file(conf, GuestOSConfig)
    assert (cfg.name, cfg.version, cfg.hardware) == ("testos", 3, "x86")
    (mount,) = cfg.mounts
    img, hash_img = out / "testos-3" / "root.img", out / "testos-3" / "root.hash.img"
    assert mount.image_size == img.stat().st_size
    assert mount.image_sha2_256 == hashlib.sha256(img.read_bytes()).hexdigest()
    assert subprocess.run(["unsquashfs", "-l", str(img)], capture_output=True, text=True,
                          check=True).stdout.count("os-release") == 1
    subprocess.run(["veritysetup", "verify", str(img), str(hash_img), mount.image_verity_sha256], check=True,
                   capture_output=True)
    r = cml_sign("verify", str(conf), "--root", str(rsa_pki / "gen_rootca.cert"))
    assert r.returncode == 0, r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["testos-3", "testos-3.cert", "testos-3.conf", "testos-3.sig"]
    # A second build of the same version, or a bad input, fails and leaves nothing behind.
    assert cml_sign("guestos", str(tar), *args).returncode == 1
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    r = cml_sign("guestos", str(bad), *[a if a != "3" else "4" for a in args])
    assert r.returncode == 1 and "neither a directory nor a tar" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["testos-3", "testos-3.cert", "testos-3.conf", "testos-3.sig"]
