"""The full check of a GuestOS image opened with dm-verity, in the background once the container
runs (the original's c_vol_verify_mount_entries_bg): dm-verity checks each block as it is read,
this reads the whole image file once and compares its SHA-256 (SHA-1 without one) with the signed
GuestOS config. A match is what gets measured into PCR 11 (with a TPM); a mismatch ends the
container as corrupted (ZOMBIE), where the original only logged it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSMount
from cmld.clients.tpm2d import MeasurementFailed, Tpm2dMeasurements
from cmld.modules.crypt_volumes import CorruptionSink
from cmld.modules.images import HASH_CHUNK, Cancelled

log = logging.getLogger(__name__)


def _digest(path: Path, algo: str, stop: threading.Event) -> str:
    h = hashlib.new(algo, usedforsecurity=algo != "sha1")
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            if stop.is_set():
                raise Cancelled(str(path))
            h.update(view[:n])
    return h.hexdigest()


class VerityCheck:
    """One background check per container start; `stop()` ends it early (the container stopped)."""

    def __init__(self, name: str, uuid: str, sink: CorruptionSink | None, tpm: Tpm2dMeasurements | None) -> None:
        self.name = name
        self.uuid = uuid
        self.sink = sink
        self.tpm = tpm
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, images: list[tuple[Path, GuestOSMount]]) -> None:
        if images:
            self._task = asyncio.ensure_future(self._run(images))

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    async def _run(self, images: list[tuple[Path, GuestOSMount]]) -> None:
        for path, m in images:
            want, algo = (m.image_sha2_256, "sha256") if m.image_sha2_256 else (m.image_sha1, "sha1")
            log.info("container %s: dm-verity active for %s, full image check in the background", self.name, path.name)
            try:
                got = await asyncio.to_thread(_digest, path, algo, self._stop)
            except Cancelled:
                return
            except OSError as e:
                self._report(f"background check of {path.name} could not read it: {e.strerror}", corrupted=True)
                return
            if want and got != want.lower():
                self._report(f"background check: {path.name} is corrupted or tampered with ({algo.upper()} {got} "
                             f"does not match the GuestOS config)", corrupted=True)
                return
            log.info("container %s: background check of %s passed (%s %s)", self.name, path.name, algo, got)
            if self.tpm is not None and algo == "sha256":
                try:
                    await self.tpm.ml_append(str(path), bytes.fromhex(got))
                except MeasurementFailed as e:
                    self._report(str(e), corrupted=False)
                    return
                log.info("container %s: measured %s (sha256 %s) into PCR 11", self.name, path, got)

    def _report(self, message: str, *, corrupted: bool) -> None:
        log.error("container %s: %s", self.name, message)
        if self.sink is not None:
            self.sink.report(self.uuid, message, corrupted=corrupted)
