"""tpm2d's state and its answers to every ControllerToTpm command (inventory §5.2), run on the
single TPM worker thread.

Replies keep the original's codes, and `ml_entry` is always present. Unlike the original, a
command that fails, is malformed or unknown gets a reply too (CMD_FAILED, or the FDE state), with
`error_message` saying why; the original stays silent for unknown codes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cml_common.messages.attestation_pb2 import RemoteToTpm2d, Tpm2dToRemote
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController

from . import devicekey, evidence, keys
from .fde import Fde
from .measurements import CONTAINER_PCR, Entry, MeasurementError, MeasurementList, check_request, extend_value
from .sealing import Sealer, SealError
from .tpm import Tpm, TpmError

log = logging.getLogger(__name__)

C = ControllerToTpm
R = TpmToController
T = TypeVar("T")
# One RANDOM_REQ holds the single TPM worker for MAX_RANDOM / 32 GetRandom round trips: 64 KiB
# took over 30 s on a loaded machine, blocking attestation and ML_APPEND for everyone (found by
# fuzzing). Keys are at most 64 bytes; 4 KiB is 128 round trips.
MAX_RANDOM = 4096


@dataclass
class Settings:
    tcti: str
    base: Path  # the CML base dir: tpm2d keeps its files in <base>/tpm2d
    no_keys: bool = False
    ml_state: Path | None = None
    ima_log: Path = Path("/sys/kernel/security/ima/binary_runtime_measurements")
    event_log: Path = Path("/sys/kernel/security/tpm0/binary_bios_measurements")

    @property
    def tokens(self) -> Path:
        return self.base / "tpm2d" / "tokens"

    @property
    def device_cert(self) -> Path:
        return self.base / "tokens" / "device.cert"


def generic(ok: bool, message: str = "") -> TpmToController:
    r = R(code=R.GENERIC_RESPONSE, response=R.CMD_OK if ok else R.CMD_FAILED, ml_entry=b"")
    if message:
        r.error_message = message
    return r


class Core:
    """Owns the TPM context; every method except `run` executes on the worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tpm")
        self._thread: threading.Thread | None = None
        self.tpm: Tpm | None = None
        self.ak: keys.AttestationKey | None = None
        self.ml = MeasurementList(settings.ml_state)
        self.fde: Fde | None = None
        self.sealer: Sealer | None = None

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self._pool.submit(fn)

    # --- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        (s.base / "tpm2d").mkdir(parents=True, exist_ok=True, mode=0o755)
        tpm = Tpm(s.tcti)
        try:
            tpm.open()
            self.fde = Fde(tpm)
            parent = keys.storage_primary(tpm, keys.KeyFiles(s.tokens))
            s.tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.sealer = Sealer(tpm, s.tokens, parent)
            if not s.no_keys:
                self.ak = keys.setup(tpm, s.tokens)
            self.ml.load(tpm.pcr_read([CONTAINER_PCR])[CONTAINER_PCR])
        except Exception:
            tpm.close()
            raise
        self.tpm = tpm
        log.info("TPM ready through %s%s", s.tcti, "" if self.ak else " (no attestation key: --nokeys)")

    def stop(self) -> None:
        if self.tpm is not None:
            self.tpm.close()
            self.tpm = None

    def shutdown(self) -> None:
        self._pool.submit(self.stop).result()
        self._pool.shutdown(wait=True)

    # --- control socket -----------------------------------------------------------------------

    def handle(self, req: ControllerToTpm) -> TpmToController:
        name = C.Code.Name(req.code) if req.code in C.Code.values() else str(req.code)
        try:
            return self._dispatch(req)
        except (TpmError, SealError, MeasurementError) as e:
            log.warning("%s failed: %s", name, e)
            return generic(False, f"{name}: {e}")

    def _dispatch(self, req: ControllerToTpm) -> TpmToController:
        tpm = self._need_tpm()
        code = req.code
        if code == C.RANDOM_REQ:
            if not 0 < req.rand_size <= MAX_RANDOM:
                return generic(False, f"rand_size {req.rand_size} must be 1..{MAX_RANDOM}")
            return R(code=R.RANDOM_RESPONSE, rand_data=tpm.get_random(req.rand_size).hex(), ml_entry=b"")
        if code == C.ML_APPEND:
            return self._ml_append(tpm, req)
        if code == C.CLEAR:
            tpm.clear(req.password)
            self._forget_keys()
            return generic(True)
        if code == C.CHANGE_OWNER_PWD:
            tpm.change_owner_auth(req.password, req.password_new)
            return generic(True)
        if code in (C.DMCRYPT_SETUP, C.DMCRYPT_LOCK, C.DMCRYPT_RESET):
            return self._fde(req)
        if code == C.ML_LIST:
            r = generic(True)
            r.ml_container_entry.extend(e.to_proto() for e in self.ml.entries)
            return r
        if code in (C.SEAL_CREATE, C.UNSEAL, C.UNSEAL_RECOVERY, C.SEAL_POLICY_UPDATE):
            return self._seal(req)
        if code in (C.DEVICE_KEY_SIGN, C.DEVICE_KEY_PUBLIC):
            if self.ak is None:
                return generic(False, "tpm2d has no attestation/device key (--nokeys, or the TPM was cleared)")
            r = generic(True)
            if code == C.DEVICE_KEY_PUBLIC:
                r.public_key = self.ak.public_pem()
            else:
                r.signature = devicekey.sign(self.ak, bytes(req.sign_data))
            return r
        return generic(False, f"command {code} is not supported")

    def _forget_keys(self) -> None:
        """After TPM2_Clear the storage seed is new: no key file made before can ever load again.
        They are removed, so the next start provisions fresh keys (J13: destroy_system, then a
        fresh provisioning) instead of refusing to start."""
        self.ak = None
        removed = []
        for pattern in ("attestation_*", "seal_*"):
            for f in self.settings.tokens.glob(pattern):
                f.unlink(missing_ok=True)
                removed.append(f.name)
        log.warning("TPM cleared: attestation key and sealed objects are gone (%s removed); a restart of "
                    "tpm2d makes new keys", ", ".join(sorted(removed)) or "no files")

    def _need_tpm(self) -> Tpm:
        if self.tpm is None:
            raise TpmError("the TPM is not open")
        return self.tpm

    def _ml_append(self, tpm: Tpm, req: ControllerToTpm) -> TpmToController:
        alg = check_request(req.ml_filename, bytes(req.ml_datahash), req.ml_hashalg)
        data = bytes(req.ml_datahash)
        if self.ml.contains(req.ml_filename, data):
            log.info("ML_APPEND %s: already measured", req.ml_filename)
            return generic(True)
        if self.ml.full():
            return generic(False, "the measurement list is full (4096 entries)")
        tpm.pcr_extend(CONTAINER_PCR, extend_value(data))
        after = tpm.pcr_read([CONTAINER_PCR])[CONTAINER_PCR]
        self.ml.add(Entry(req.ml_filename, alg, data, after))
        log.info("measured %s (%s %s) into PCR %d", req.ml_filename, alg, data.hex(), CONTAINER_PCR)
        return generic(True)

    def _fde(self, req: ControllerToTpm) -> TpmToController:
        assert self.fde is not None
        if req.code == C.DMCRYPT_SETUP:
            res = self.fde.setup(req.dmcrypt_device, req.password, req.dmcrypt_key_type)
        elif req.code == C.DMCRYPT_LOCK:
            res = self.fde.lock()
        else:
            res = self.fde.reset(req.password)
        r = R(code=R.FDE_RESPONSE, fde_response=res.state, ml_entry=b"")  # type: ignore[arg-type]
        if res.message:
            log.warning("%s: %s", C.Code.Name(req.code), res.message)
            r.error_message = res.message
        return r

    def _seal(self, req: ControllerToTpm) -> TpmToController:
        assert self.sealer is not None
        name = req.seal_name or "default"
        r = generic(True)
        if req.code == C.SEAL_CREATE:
            r.recovery_key = self.sealer.create(name, bytes(req.seal_authority), bytes(req.seal_policy))
        elif req.code == C.SEAL_POLICY_UPDATE:
            self.sealer.update_policy(name, bytes(req.seal_policy))
        elif req.code == C.UNSEAL:
            r.secret = self.sealer.unseal(name)
        else:
            if not req.password:
                return generic(False, "UNSEAL_RECOVERY needs the recovery key in password")
            r.secret = self.sealer.unseal_recovery(name, req.password)
        return r

    # --- attestation --------------------------------------------------------------------------

    def attest(self, req: RemoteToTpm2d) -> Tpm2dToRemote:
        if self.ak is None:
            return evidence.failure(req.atype, "tpm2d has no attestation key (--nokeys, or the TPM was cleared: "
                                               "restart tpm2d to make a new one)")
        try:
            src = evidence.EvidenceSources(self.settings.device_cert, self.settings.ima_log, self.settings.event_log)
            return evidence.build(self._need_tpm(), self.ak, self.ml, src, req)
        except (evidence.EvidenceError, TpmError) as e:
            log.warning("attestation request refused: %s", e)
            return evidence.failure(req.atype, str(e))
