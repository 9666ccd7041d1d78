"""Signing keys: a PEM private key file or a key on a PKCS#11 token (`pkcs11:` URI, RFC 7512).

The signature format is the original's `sign_config.sh`: a raw signature over the file bytes
with SHA-512; RSA keys sign RSA-PSS (MGF1-SHA512, salt length = digest length, as
`openssl dgst -sha512 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:-1`) or, with
`pkcs1=True`, PKCS#1 v1.5; EC keys sign ECDSA-SHA512 (DER).
"""

from __future__ import annotations

import abc
import hashlib
import os
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SALT_LEN = 64  # SHA-512 digest length


class SignError(Exception):
    pass


class Signer(abc.ABC):
    @abc.abstractmethod
    def sign(self, data: bytes, pkcs1: bool = False) -> bytes: ...


class PemSigner(Signer):
    def __init__(self, path: Path, password: bytes | None = None) -> None:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=password)
        except (OSError, ValueError, TypeError) as e:
            raise SignError(f"cannot load the private key {path}: {e}") from e
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SignError(f"{path}: only RSA and EC keys can sign configs")
        self.key = key

    def sign(self, data: bytes, pkcs1: bool = False) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (padding.PKCS1v15() if pkcs1 else
                                              padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=SALT_LEN))
            return self.key.sign(data, pad, hashes.SHA512())
        return self.key.sign(data, ec.ECDSA(hashes.SHA512()))


def parse_pkcs11_uri(uri: str) -> tuple[dict[str, str], dict[str, str]]:
    """Path and query attributes of a `pkcs11:` URI, percent-decoded."""
    if not uri.startswith("pkcs11:"):
        raise SignError(f"not a PKCS#11 URI: {uri}")
    body = uri[len("pkcs11:"):]
    path, _, query = body.partition("?")

    def attrs(text: str, sep: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in filter(None, text.split(sep)):
            k, eq, v = part.partition("=")
            if not eq:
                raise SignError(f"PKCS#11 URI attribute without value: {part!r}")
            out[k] = urllib.parse.unquote(v)
        return out

    return attrs(path, ";"), attrs(query, "&")


class Pkcs11Signer(Signer):
    """`pkcs11:token=<label>;object=<key label>?module-path=<lib.so>&pin-value=<pin>`; the module
    may also come from $PKCS11_MODULE and the PIN from $PKCS11_PIN (kept out of shell history)."""

    def __init__(self, uri: str) -> None:
        import pkcs11

        path, query = parse_pkcs11_uri(uri)
        module = query.get("module-path") or os.environ.get("PKCS11_MODULE")
        pin = query.get("pin-value") or os.environ.get("PKCS11_PIN")
        if not module:
            raise SignError("PKCS#11 URI needs module-path= (or $PKCS11_MODULE)")
        if "token" not in path or "object" not in path:
            raise SignError("PKCS#11 URI needs token= and object=")
        self._pkcs11 = pkcs11
        try:
            self.lib = pkcs11.lib(module)
            self.token = self.lib.get_token(token_label=path["token"])
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as e:
            raise SignError(f"PKCS#11 token {path['token']!r} via {module}: {type(e).__name__} {e}") from e
        self.label = path["object"]
        self.pin = pin

    def sign(self, data: bytes, pkcs1: bool = False) -> bytes:
        p = self._pkcs11
        from pkcs11 import MGF, KeyType, Mechanism, ObjectClass

        try:
            with self.token.open(user_pin=self.pin) as session:
                key: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.label)
                if key.key_type == KeyType.RSA:
                    if pkcs1:
                        return bytes(key.sign(data, mechanism=Mechanism.SHA512_RSA_PKCS))
                    return bytes(key.sign(data, mechanism=Mechanism.SHA512_RSA_PKCS_PSS,
                                          mechanism_param=(Mechanism.SHA512, MGF.SHA512, SALT_LEN)))
                if key.key_type == KeyType.EC:
                    # SoftHSM lacks CKM_ECDSA_SHA512: sign the digest with raw CKM_ECDSA.
                    raw = bytes(key.sign(hashlib.sha512(data).digest(), mechanism=Mechanism.ECDSA))
                    half = len(raw) // 2
                    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        except (p.PKCS11Error, RuntimeError) as e:
            raise SignError(f"PKCS#11 signing with {self.label!r} failed: {type(e).__name__} {e}") from e
        raise SignError(f"PKCS#11 key {self.label!r} is neither RSA nor EC")


def load_signer(spec: str) -> Signer:
    return Pkcs11Signer(spec) if spec.startswith("pkcs11:") else PemSigner(Path(spec))
