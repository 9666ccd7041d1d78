"""Pure-logic checks of scd pieces: lockout counter, wrapping formats, PKCS#12 size check, path
building rules, PKCS#11 URI parsing. The evidence that scd works is in tests/host."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cml_sign import pki
from cml_sign.signer import SignError, parse_pkcs11_uri
from scd.chain import ChainError, build_path
from scd.lockout import Lockout
from scd.secretbuf import equal, secret
from scd.tokens import seal
from scd.tokens.base import CorruptBlob
from scd.tokens.soft import _der_complete

pytestmark = pytest.mark.unit


@pytest.mark.req("CR 1.11")
def test_scd_lockout_resets_on_success_but_not_once_locked() -> None:
    lo, k = Lockout(), (2, "u")
    lo.failed(k)
    lo.failed(k)
    lo.succeeded(k)
    assert lo.remaining(k) == 3
    for _ in range(3):
        lo.failed(k)
    assert lo.locked(k)
    lo.succeeded(k)
    assert lo.locked(k)
    assert not lo.locked((2, "other"))


def test_scd_secret_is_wiped() -> None:
    with secret("1234") as s:
        kept = s
        assert bytes(s) == b"1234"
    assert bytes(kept) == b"\0\0\0\0"
    assert equal(b"ab", bytearray(b"ab")) and not equal(b"ab", b"ac")


def test_scd_rsa_seal_is_the_evp_seal_layout() -> None:
    key = rsa.generate_private_key(65537, 2048)
    data = os.urandom(96)
    blob = seal.rsa_seal(key.public_key(), data)
    # [int32 ek_len][int32 ct_len][16-byte IV][ek][ct], little-endian; 96 bytes pad to 112.
    assert int.from_bytes(blob[:4], "little") == 256 and int.from_bytes(blob[4:8], "little") == 112
    assert len(blob) == 8 + 16 + 256 + 112
    assert seal.rsa_unseal(key, blob) == data
    for bad in (blob[:-1], blob + b"x", blob[:8] + b"\0" * (len(blob) - 8), b""):
        with pytest.raises(CorruptBlob):
            seal.rsa_unseal(key, bad)


@pytest.mark.req("COM 03", "CR 4.3", "TSF Container Data Storage")
def test_scd_ec_seal_binds_label_and_detects_tampering() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = os.urandom(96)
    blob = seal.ec_seal(key.public_key(), data, "a")
    assert seal.ec_unseal(key, blob, "a") == data
    with pytest.raises(CorruptBlob):
        seal.ec_unseal(key, blob, "b")
    with pytest.raises(CorruptBlob):
        seal.ec_unseal(key, blob[:-1] + bytes([blob[-1] ^ 1]), "a")
    with pytest.raises(CorruptBlob):
        seal.ec_unseal(ec.generate_private_key(ec.SECP256R1()), blob, "a")


def test_scd_der_complete() -> None:
    assert _der_complete(b"\x30\x03abc")
    assert _der_complete(b"\x30\x82\x00\x02ab")
    assert not _der_complete(b"\x30\x82\x00\x03ab")
    assert not _der_complete(b"\x31\x01a")
    assert not _der_complete(b"")


def _ca(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool = True,
        path_len: int | None = None, days: int = 30) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name.from_rfc4514_string(f"CN={name}")
    iname, ikey = issuer or (subject, key)
    return pki.issue(subject, key.public_key(), iname, ikey, ca=ca, path_len=path_len, days=days), key


@pytest.mark.req("CR 1.8")
def test_scd_chain_rules() -> None:
    root, rk = _ca("root", None)
    sub, sk = _ca("sub", (root.subject, rk), path_len=0)
    sub2, s2k = _ca("sub2", (sub.subject, sk))
    leaf, _ = _ca("leaf", (sub.subject, sk), ca=False)
    now = datetime.datetime.now(datetime.UTC)
    assert build_path(leaf, [sub], root, now) == [leaf, sub, root]
    with pytest.raises(ChainError, match="no issuer"):
        build_path(leaf, [], root, now)
    deep, _ = _ca("deep", (sub2.subject, s2k), ca=False)
    with pytest.raises(ChainError, match="pathLenConstraint"):
        build_path(deep, [sub2, sub], root, now)
    notca, nk = _ca("notca", (root.subject, rk), ca=False)
    leaf2, _ = _ca("leaf2", (notca.subject, nk), ca=False)
    with pytest.raises(ChainError, match="not a CA"):
        build_path(leaf2, [notca], root, now)
    with pytest.raises(ChainError, match="expired"):
        build_path(leaf, [sub], root, now + datetime.timedelta(days=60))
    assert build_path(leaf, [sub], root, None)[-1] == root


def test_cml_sign_pkcs11_uri() -> None:
    path, query = parse_pkcs11_uri("pkcs11:token=my%20token;object=k?module-path=/x.so&pin-value=12")
    assert path == {"token": "my token", "object": "k"} and query == {"module-path": "/x.so", "pin-value": "12"}
    with pytest.raises(SignError):
        parse_pkcs11_uri("file:/x")
    with pytest.raises(SignError):
        parse_pkcs11_uri("pkcs11:token")
