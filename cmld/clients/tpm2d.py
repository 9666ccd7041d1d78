"""cmld's client of tpm2d, transport only: the container measurement list (ML_APPEND), from the
event loop. One connection, kept; calls run in a thread (the client is blocking) and never two at
once (one request, one reply on the connection)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cml_common.tpm2d_client import Tpm2dClient, Tpm2dError
from cmld.errors import CmldError


class MeasurementFailed(CmldError):
    """tpm2d did not take a measurement (unreachable or refused)."""


class Tpm2dMeasurements:
    def __init__(self, socket_path: Path) -> None:
        self.client = Tpm2dClient(socket_path, timeout=30.0)
        self._lock = asyncio.Lock()

    async def ml_append(self, filename: str, sha256: bytes) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self.client.ml_append, filename, sha256)
            except (Tpm2dError, OSError) as e:
                raise MeasurementFailed(f"tpm2d did not measure {filename}: {e}") from e

    def close(self) -> None:
        self.client.close()
