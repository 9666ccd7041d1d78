"""Software token: a PKCS#12 file `tokens/<uuid>.p12` protected by the token PIN (inventory §4.4).

New tokens hold an EC P-256 key and a self-signed certificate (CN = token UUID, one year) under
the transport PIN `trustme`; the original's RSA-4096 PKCS#12 files are read as well. Wrapping
uses `seal.py` (the original's EVP_Seal format for RSA keys, ECIES + RFC 5649 for EC keys).
Pairing is a separate `<uuid>.paired` record (see `pairing.py`); the PKCS#12 passphrase stays the
bare PIN, so the documented `openssl pkcs12` recovery procedure keeps working.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12
from cryptography.x509.oid import NameOID

from cml_common.fsutil import remove_quietly, write_atomic

from ..pairing import PairingRecord
from . import seal
from .base import AlreadyPaired, NotPaired, Token, TokenError, TokenLocked, WrongPin

log = logging.getLogger(__name__)

TRANSPORT_PIN = "trustme"  # TOKEN_DEFAULT_PASS of the original
MAX_P12 = 1 << 20
PrivKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _der_complete(data: bytes) -> bool:
    """The outer DER SEQUENCE covers exactly the file: tells a truncated or padded file (an I/O
    problem, not a wrong PIN) from one whose MAC does not match the PIN."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return 2 + first == len(data)
    n = first & 0x7F
    if n == 0 or n > 4 or len(data) < 2 + n:
        return False
    return 2 + n + int.from_bytes(data[2:2 + n], "big") == len(data)


def _encode(key: PrivKey, cert: x509.Certificate, pin: bytearray, name: str) -> bytes:
    enc = (PrivateFormat.PKCS12.encryption_builder()
           .kdf_rounds(20000)
           .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
           .hmac_hash(hashes.SHA256())
           .build(bytes(pin)))
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None, enc)


class SoftToken(Token):
    def __init__(self, uuid: str, tokens_dir: Path) -> None:
        super().__init__(uuid)
        self.path = tokens_dir / f"{uuid}.p12"
        self.pairing = PairingRecord(tokens_dir / f"{uuid}.paired", uuid)
        self._key: PrivKey | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        if self.path.exists():
            self._read()  # fail TOKEN_ADD on a damaged file rather than at the first start
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.uuid)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=365))
                .sign(key, hashes.SHA256()))
        pin = bytearray(TRANSPORT_PIN.encode())
        write_atomic(self.path, _encode(key, cert, pin, self.uuid))
        log.info("soft token %s: created %s (transport PIN)", self.uuid, self.path.name)

    def remove(self) -> None:
        self.lock()
        remove_quietly(self.path)
        self.pairing.remove()

    # ------------------------------------------------------------ PKCS#12 access

    def _read(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise TokenError(f"cannot read {self.path.name}: {e.strerror}") from e
        if len(data) > MAX_P12 or not _der_complete(data):
            raise TokenError(f"{self.path.name} is truncated or not a PKCS#12 file")
        return data

    def _load(self, pin: bytearray) -> tuple[PrivKey, x509.Certificate]:
        data = self._read()
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(data, bytes(pin))
        except ValueError as e:
            # The MAC is keyed by the PIN: a wrong PIN and an altered body look alike.
            raise WrongPin(f"{self.path.name}: wrong PIN (or the file was altered)") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or cert is None:
            raise TokenError(f"{self.path.name} holds no usable RSA/EC key and certificate")
        return key, cert

    def _rewrite(self, old_pin: bytearray, new_pin: bytearray) -> None:
        if not new_pin:
            raise TokenError("the new PIN is empty")
        key, cert = self._load(old_pin)
        write_atomic(self.path, _encode(key, cert, new_pin, self.uuid))

    def _check_pairing(self, secret: bytearray) -> None:
        if not self.pairing.exists():
            raise NotPaired(f"soft token {self.uuid} is not paired (PROVISION_PIN first)")
        if not self.pairing.matches(secret):
            raise WrongPin(f"soft token {self.uuid}: pairing secret does not match")

    # ------------------------------------------------------------ Token interface

    def is_paired(self) -> bool:
        return self.pairing.exists()

    @property
    def unlocked(self) -> bool:
        return self._key is not None

    def unlock(self, pin: bytearray, pairing_secret: bytearray) -> None:
        if not self.pairing.exists() and pairing_secret:
            self._adopt_original(pin, pairing_secret)
        self._check_pairing(pairing_secret)
        self._key, _ = self._load(pin)

    def _adopt_original(self, pin: bytearray, pairing_secret: bytearray) -> None:
        """A token the original paired has no `.paired` record (its soft token ignores the pairing
        secret): it is the one whose PIN is no longer the transport PIN. Opened with the right PIN,
        it is bound to this device's pairing secret from now on; a token still under the transport
        PIN stays unpaired (NotPaired), a wrong PIN stays WrongPin."""
        try:
            self._load(bytearray(TRANSPORT_PIN.encode()))
            return  # unpaired: _check_pairing says so
        except WrongPin:
            pass
        self._load(pin)
        self.pairing.bind(pairing_secret)
        log.warning("soft token %s: paired by the original CML (no pairing record); bound to this device's "
                    "pairing secret now", self.uuid)

    def lock(self) -> None:
        self._key = None

    def provision_pin(self, transport_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        if self.pairing.exists():
            raise AlreadyPaired(f"soft token {self.uuid} is paired already")
        if not pairing_secret:
            raise TokenError("no pairing secret given")
        # The first PIN change sets the PIN. Newer GyroidOS makes soft tokens without a default
        # password and its CI gives an empty current PIN here; older ones give `trustme`. The
        # transport PIN is public either way, so both are accepted.
        transport = transport_pin if transport_pin else bytearray(TRANSPORT_PIN.encode())
        self._load(transport)  # check the transport PIN before anything changes
        self.pairing.bind(pairing_secret)
        self._rewrite(transport, new_pin)

    def change_pin(self, old_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        if not self.pairing.exists():
            self.provision_pin(old_pin, new_pin, pairing_secret)
            return
        self._check_pairing(pairing_secret)
        self._rewrite(old_pin, new_pin)

    def _unlocked_key(self) -> PrivKey:
        if self._key is None:
            raise TokenLocked(f"soft token {self.uuid} is locked")
        return self._key

    def wrap(self, key: bytes, label: str) -> bytes:
        priv = self._unlocked_key()
        if isinstance(priv, rsa.RSAPrivateKey):
            return seal.rsa_seal(priv.public_key(), key)
        return seal.ec_seal(priv.public_key(), key, self.uuid)

    def unwrap(self, blob: bytes, label: str) -> bytearray:
        priv = self._unlocked_key()
        if isinstance(priv, rsa.RSAPrivateKey):
            return seal.rsa_unseal(priv, blob)
        return seal.ec_unseal(priv, blob, self.uuid)
