"""In-process fuzz targets for scd's untrusted files and buffers: signature verification (data,
signature, certificate chain; a registered CA as trust anchor), a soft token's PKCS#12 file, and
a pushed device certificate.

Input layout of `scd_verify` (so seeds are easy to build): u16 length + data, u16 length +
signature, one byte of mode, then the PEM certificate bytes. Mode bit 0: the fuzzed certificate
is also registered as a trust anchor (REGISTER_NEWCA writes what cmld was sent)."""

from __future__ import annotations

import datetime
import struct
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cml_common.messages.scd_pb2 import HashAlgo, TokenToDaemon
from scd import identity, trust, verify
from scd.tokens.base import TokenError
from scd.tokens.soft import SoftToken
from tests.fuzz.registry import scratch

DATA = Path(__file__).resolve().parent / "data" / "scd"
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
_TMP = scratch("scd")
RESULTS = {T for T in (TokenToDaemon.CRYPTO_VERIFY_GOOD, TokenToDaemon.CRYPTO_VERIFY_LOCALLY_SIGNED,
                       TokenToDaemon.CRYPTO_VERIFY_ERROR, TokenToDaemon.CRYPTO_VERIFY_BAD_SIGNATURE,
                       TokenToDaemon.CRYPTO_VERIFY_BAD_CERTIFICATE)}
_ANCHORS: list[trust.Anchor] = []


def _anchors() -> list[trust.Anchor]:
    if not _ANCHORS:
        a = trust._load(DATA / "ca.pem", local=False)
        assert a is not None
        _ANCHORS.append(a)
    return _ANCHORS


def split_verify_input(data: bytes) -> tuple[bytes, bytes, int, bytes]:
    def take(buf: bytes) -> tuple[bytes, bytes]:
        if len(buf) < 2:
            return b"", b""
        (n,) = struct.unpack(">H", buf[:2])
        return buf[2:2 + n], buf[2 + n:]
    payload, rest = take(data)
    sig, rest = take(rest)
    mode = rest[0] if rest else 0
    return payload, sig, mode, rest[1:]


def scd_verify(data: bytes) -> None:
    payload, sig, mode, cert = split_verify_input(data)
    anchors = list(_anchors())
    if mode & 1:
        p = _TMP / "newca.pem"
        p.write_bytes(cert)
        extra = trust._load(p, local=bool(mode & 2))
        if extra is not None:
            anchors.append(extra)
    algo = (HashAlgo.SHA256, HashAlgo.SHA512, HashAlgo.SHA1, 77)[(mode >> 2) & 3]
    r = verify.verify(payload, sig, cert, algo, anchors, check_time=bool(mode & 16), now=NOW)
    if r.code not in RESULTS:
        raise AssertionError(f"verify returned {r}")


def scd_pkcs12(data: bytes) -> None:
    """A soft token's .p12 file as scd reads it at TOKEN_ADD and UNLOCK (PIN 'trustme')."""
    tok = SoftToken("00000000-0000-4000-8000-000000000001", _TMP)
    tok.path.write_bytes(data)
    try:
        tok._read()
        tok._load(bytearray(b"trustme"))
    except TokenError:
        pass


class _FixedKey:
    """The device key's public half: install_certificate compares the pushed certificate's key."""

    def __init__(self, pem: bytes) -> None:
        self._pub = serialization.load_pem_public_key(pem)

    def public_key(self) -> object:
        return self._pub


_IDENTITY: list[identity.DeviceIdentity] = []


def scd_device_cert(data: bytes) -> None:
    """PUSH_DEVICE_CERT: a PEM certificate for this device's key and UUID, or IdentityError."""
    if not _IDENTITY:
        ident = identity.DeviceIdentity.__new__(identity.DeviceIdentity)
        ident.key = _FixedKey((DATA / "device_pub.pem").read_bytes())  # type: ignore[assignment]
        ident.uuid = (DATA / "device_uuid").read_text().strip()
        ident.cert_path = _TMP / "device.cert"
        _IDENTITY.append(ident)
    try:
        _IDENTITY[0].install_certificate(data)
    except identity.IdentityError:
        return
    cert = x509.load_pem_x509_certificate(data)
    if identity.device_uuid_of(cert) != _IDENTITY[0].uuid:
        raise AssertionError("a certificate for another device was installed")
