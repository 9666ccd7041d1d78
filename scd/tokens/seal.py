"""Key-wrapping formats of the software token (inventory §4.4).

* `rsa_seal` is the original's OpenSSL `EVP_Seal` blob, kept byte-compatible so key files made
  by the C scd with its RSA PKCS#12 tokens still unwrap (and vice versa):
  `[int32 ek_len][int32 ct_len][16-byte IV][ek][ciphertext]`, native (little-endian) ints,
  AES-256-CBC with PKCS#7 padding under a random session key, the session key RSA-encrypted
  with PKCS#1 v1.5 (OpenSSL's default for EVP_Seal).
* `ec_seal` is used by tokens we create (EC P-256 keys: 0.1 s instead of RSA-4096's seconds):
  ECIES with an ephemeral P-256 key, ECDH, HKDF-SHA256 and AES-256 key wrap with padding
  (RFC 5649, integrity-protected). Blob: `b"CMLW" | 0x01 | ephemeral point (65 B) | wrapped`.
  The HKDF info binds the blob to the token UUID, so a key file cannot be moved to another
  container's token.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .base import CorruptBlob

SEAL_HEADER = struct.Struct("<ii")
IV_LEN = 16
EC_MAGIC = b"CMLW\x01"
EC_POINT_LEN = 65
MAX_BLOB = 4096


def rsa_seal(pub: rsa.RSAPublicKey, data: bytes) -> bytes:
    session = bytearray(os.urandom(32))
    iv = os.urandom(IV_LEN)
    try:
        ek = pub.encrypt(bytes(session), PKCS1v15())
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(bytes(session)), modes.CBC(iv)).encryptor()
        ct = enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
    finally:
        session[:] = bytes(len(session))
    return SEAL_HEADER.pack(len(ek), len(ct)) + iv + ek + ct


def rsa_unseal(priv: rsa.RSAPrivateKey, blob: bytes) -> bytearray:
    if len(blob) < SEAL_HEADER.size + IV_LEN or len(blob) > MAX_BLOB:
        raise CorruptBlob(f"sealed key has {len(blob)} bytes")
    ek_len, ct_len = SEAL_HEADER.unpack_from(blob)
    if ek_len <= 0 or ct_len <= 0 or SEAL_HEADER.size + IV_LEN + ek_len + ct_len != len(blob):
        raise CorruptBlob("sealed key: lengths do not match the blob size")
    off = SEAL_HEADER.size
    iv = blob[off:off + IV_LEN]
    ek = blob[off + IV_LEN:off + IV_LEN + ek_len]
    ct = blob[off + IV_LEN + ek_len:]
    try:
        session = bytearray(priv.decrypt(ek, PKCS1v15()))
    except ValueError as e:
        raise CorruptBlob("sealed key: the session key does not decrypt") from e
    try:
        dec = Cipher(algorithms.AES(bytes(session)), modes.CBC(iv)).decryptor()
        padded = dec.update(ct) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return bytearray(unpadder.update(padded) + unpadder.finalize())
    except ValueError as e:
        raise CorruptBlob("sealed key: bad padding") from e
    finally:
        session[:] = bytes(len(session))


def _ec_kek(shared: bytes, eph: bytes, recipient: bytes, label: str) -> bytes:
    info = b"cml-softtoken-wrap-v1|" + eph + recipient + label.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _point(pub: ec.EllipticCurvePublicKey) -> bytes:
    return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def ec_seal(pub: ec.EllipticCurvePublicKey, data: bytes, label: str) -> bytes:
    eph_priv = ec.generate_private_key(pub.curve)
    eph = _point(eph_priv.public_key())
    kek = _ec_kek(eph_priv.exchange(ec.ECDH(), pub), eph, _point(pub), label)
    return EC_MAGIC + eph + aes_key_wrap_with_padding(kek, data)


def ec_unseal(priv: ec.EllipticCurvePrivateKey, blob: bytes, label: str) -> bytearray:
    if not blob.startswith(EC_MAGIC) or len(blob) < len(EC_MAGIC) + EC_POINT_LEN + 16 or len(blob) > MAX_BLOB:
        raise CorruptBlob(f"wrapped key ({len(blob)} bytes) is not a CMLW v1 blob")
    eph = blob[len(EC_MAGIC):len(EC_MAGIC) + EC_POINT_LEN]
    try:
        eph_pub = ec.EllipticCurvePublicKey.from_encoded_point(priv.curve, eph)
        kek = _ec_kek(priv.exchange(ec.ECDH(), eph_pub), eph, _point(priv.public_key()), label)
        return bytearray(aes_key_unwrap_with_padding(kek, blob[len(EC_MAGIC) + EC_POINT_LEN:]))
    except (ValueError, InvalidUnwrap, InvalidKey) as e:
        raise CorruptBlob("wrapped key does not unwrap with this token (altered or foreign)") from e
