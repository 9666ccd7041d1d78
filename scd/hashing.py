"""CRYPTO_HASH_BUF / CRYPTO_HASH_FILE: raw binary digests, as the original returns them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cml_common.messages.scd_pb2 import HashAlgo

from .files import open_regular

ALGORITHMS: dict[int, str] = {HashAlgo.SHA1: "sha1", HashAlgo.SHA256: "sha256", HashAlgo.SHA512: "sha512"}
CHUNK = 1 << 20


def digest_buffer(algo: int, data: bytes) -> bytes:
    return hashlib.new(ALGORITHMS[algo], data).digest()


def digest_file(algo: int, path: Path) -> bytes:
    h = hashlib.new(ALGORITHMS[algo])
    with open_regular(path) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.digest()
