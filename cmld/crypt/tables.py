"""The original's device-mapper tables and key split (common/cryptfs.c), as pure functions.

A container key is used as lowercase hex, split by mode:

| mode | key | devices |
|---|---|---|
| INTEGRITY_ENCRYPT | 96 bytes: 64 AES-XTS-512, 32 HMAC-SHA256 | `<label>-integrity` (hash) under `<label>` (crypt) |
| INTEGRITY_ONLY (c0) | 32 bytes of HMAC key | `<label>-integrity` only |
| AUTHENC (legacy) | all of it, to authenc(hmac(sha256),xts(aes)) | `<label>-integrity` (tags) under `<label>` (AEAD) |
| ENCRYPT_ONLY | all of it (64 bytes) | `<label>` (crypt) only |

The integrity target keeps data and metadata apart (`meta_device`, the `<img>.meta.img` image),
with 32-byte tags and a journal; the crypt target sits at offset 0 of the integrity device.
"""

from __future__ import annotations

from dataclasses import dataclass

from cml_common.messages.container_pb2 import CryptfsMode

TAG_SIZE = 32
XTS_KEY_LEN = 64
HMAC_KEY_LEN = 32
AUTHENC_KEY_LEN = XTS_KEY_LEN + HMAC_KEY_LEN
CIPHER = "aes-xts-plain64"
CIPHER_AUTHENC = "capi:authenc(hmac(sha256),xts(aes))-random"
INTEGRITY_HASH = "hmac(sha256)"
ENCRYPTING = frozenset({CryptfsMode.INTEGRITY_ENCRYPT, CryptfsMode.AUTHENC, CryptfsMode.ENCRYPT_ONLY})
WITH_INTEGRITY = frozenset({CryptfsMode.INTEGRITY_ENCRYPT, CryptfsMode.AUTHENC, CryptfsMode.INTEGRITY_ONLY})
DM_MODES = ENCRYPTING | WITH_INTEGRITY


class BadKey(ValueError):
    """The key does not fit the mode."""


@dataclass(frozen=True)
class SplitKey:
    crypt_hex: str  # "" without a crypt layer
    hmac_hex: str  # "" without an integrity key (no integrity layer, or AUTHENC's tag-only one)
    note: str = ""  # a length the original accepts with a warning


def split_key(mode: int, key: bytes) -> SplitKey:
    """The original's split of a container key for `mode` (lengths checked as it checks them)."""
    if mode == CryptfsMode.INTEGRITY_ENCRYPT:
        if len(key) != AUTHENC_KEY_LEN:
            raise BadKey(f"INTEGRITY_ENCRYPT needs a {AUTHENC_KEY_LEN}-byte key, not {len(key)} bytes")
        return SplitKey(key[:XTS_KEY_LEN].hex(), key[XTS_KEY_LEN:].hex())
    if mode == CryptfsMode.INTEGRITY_ONLY:
        if len(key) != HMAC_KEY_LEN:
            raise BadKey(f"INTEGRITY_ONLY needs a {HMAC_KEY_LEN}-byte key, not {len(key)} bytes")
        return SplitKey("", key.hex())
    if mode in (CryptfsMode.AUTHENC, CryptfsMode.ENCRYPT_ONLY):
        if not key:
            raise BadKey("an empty key")
        want = AUTHENC_KEY_LEN if mode == CryptfsMode.AUTHENC else XTS_KEY_LEN
        note = f"{CryptfsMode.Name(mode)} key of {len(key)} bytes, not {want}" if len(key) != want else ""
        return SplitKey(key.hex(), "", note)
    raise BadKey(f"mode {CryptfsMode.Name(mode)} uses no key")


def integrity_name(label: str) -> str:
    return f"{label}-integrity"


def top_name(mode: int, label: str) -> str:
    """The device the file system is on."""
    return integrity_name(label) if mode == CryptfsMode.INTEGRITY_ONLY else label


def integrity_table(sectors: int, data_dev: str, meta_dev: str, hmac_hex: str) -> str:
    """With an HMAC key: standalone integrity (INTEGRITY_*); without: AUTHENC's tag store."""
    if hmac_hex:
        extra = f"3 meta_device:{meta_dev} internal_hash:{INTEGRITY_HASH}:{hmac_hex} allow_discards"
    else:
        extra = f"1 meta_device:{meta_dev}"
    return f"0 {sectors} integrity {data_dev} 0 {TAG_SIZE} J {extra}\n"


def crypt_table(sectors: int, dev: str, key_hex: str, authenc: bool) -> str:
    if authenc:
        return f"0 {sectors} crypt {CIPHER_AUTHENC} {key_hex} 0 {dev} 0 1 integrity:{TAG_SIZE}:aead\n"
    return f"0 {sectors} crypt {CIPHER} {key_hex} 0 {dev} 0 1 allow_discards\n"


def meta_size(data_size: int) -> int:
    """The original's `<img>.meta.img`: 10 % of the data image (MOUNT_DM_INTEGRITY_META_FACTOR)."""
    return int(data_size * 0.1)
