"""Measured containers (the original's cmld with TPM: `tss_ml_append` before a container runs):
with `tpm_enabled`, the SHA-256 of every GuestOS image a container mounts (as the volumes module
hashed it, from the bytes on disk) is appended to tpm2d's container measurement list, which
extends PCR 11; remote attestation then shows what ran. A measurement that cannot be made refuses
the start: a device that promises measured containers does not run unmeasured ones."""

from __future__ import annotations

import logging

from cmld.clients.tpm2d import MeasurementFailed, Tpm2dMeasurements
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


class MeasurementModule(Module):
    name = "measurement"

    def __init__(self, tpm: Tpm2dMeasurements) -> None:
        self.tpm = tpm

    async def prepare(self, ctx: StartContext) -> None:
        for path, digest in ctx.image_digests:
            try:
                await self.tpm.ml_append(path, digest)
            except MeasurementFailed as e:
                raise StartError(str(e)) from None
            log.info("container %s: measured %s (sha256 %s) into PCR 11", ctx.container.name, path, digest.hex())
