"""CRYPTO_HASH_* and CRYPTO_VERIFY_*: run in worker threads, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenToDaemon
from cml_common.paths import Layout

from .files import read_regular
from .hashing import ALGORITHMS, digest_buffer, digest_file
from .trust import load_anchors
from .verify import MAX_CERT_FILE, MAX_SIG, Result, verify

log = logging.getLogger(__name__)
T = TokenToDaemon
Q = DaemonToToken
MAX_DATA_FILE = 64 * 1024 * 1024


class CryptoCommands:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    async def hash(self, req: DaemonToToken) -> TokenToDaemon:
        if req.code == Q.CRYPTO_HASH_BUF:
            if req.hash_algo not in ALGORITHMS or not req.HasField("hash_buf"):
                return T(code=T.CRYPTO_HASH_ERROR)
            return T(code=T.CRYPTO_HASH_OK, hash_value=digest_buffer(req.hash_algo, req.hash_buf))
        if req.hash_algo not in ALGORITHMS or not req.hash_file:
            return T(code=T.CRYPTO_HASH_ERROR)
        try:
            value = await asyncio.to_thread(digest_file, req.hash_algo, Path(req.hash_file))
        except OSError as e:
            log.warning("cannot hash %s: %s", req.hash_file, e.strerror)
            return T(code=T.CRYPTO_HASH_ERROR)
        return T(code=T.CRYPTO_HASH_OK, hash_value=value)

    def _check_time(self, req: DaemonToToken) -> bool:
        """Validity times are skipped only on request and only while the device is unprovisioned."""
        if not req.verify_ignore_time:
            return True
        if self.layout.provisioned_marker.exists():
            log.warning("verify_ignore_time refused: the device is provisioned; checking validity times")
            return True
        return False

    def _verify_sync(self, req: DaemonToToken) -> Result:
        if req.code == Q.CRYPTO_VERIFY_FILE:
            if not (req.verify_data_file and req.verify_sig_file and req.verify_cert_file):
                return Result(T.CRYPTO_VERIFY_ERROR, "data, signature and certificate file names are required")
            try:
                data = read_regular(req.verify_data_file, MAX_DATA_FILE)
                sig = read_regular(req.verify_sig_file, MAX_SIG)
                cert = read_regular(req.verify_cert_file, MAX_CERT_FILE)
            except OSError as e:
                return Result(T.CRYPTO_VERIFY_ERROR, f"cannot read {e.filename}: {e.strerror}")
        else:
            if not (req.HasField("verify_data_buf") and req.verify_sig_buf and req.verify_cert_buf):
                return Result(T.CRYPTO_VERIFY_ERROR, "data, signature and certificate buffers are required")
            data, sig, cert = req.verify_data_buf, req.verify_sig_buf, req.verify_cert_buf
        # hash_algo has no default in scd.proto (it would read as SHA1); cmld always sends SHA512.
        algo = req.hash_algo if req.HasField("hash_algo") else HashAlgo.SHA512
        return verify(data, sig, cert, algo, load_anchors(self.layout), self._check_time(req))

    async def verify(self, req: DaemonToToken) -> TokenToDaemon:
        result = await asyncio.to_thread(self._verify_sync, req)
        what = req.verify_data_file if req.code == Q.CRYPTO_VERIFY_FILE else f"{len(req.verify_data_buf)}-byte buffer"
        good = result.code in (T.CRYPTO_VERIFY_GOOD, T.CRYPTO_VERIFY_LOCALLY_SIGNED)
        level = logging.INFO if good else logging.WARNING
        log.log(level, "verify %s: %s: %s", what, result.name, result.reason)
        return T(code=result.code)
