"""The container measurement list (PCR 11, inventory §5.2 "Container measurement list").

cmld sends ML_APPEND(<image path>, SHA-256 of the image, SHA256) for each verified GuestOS image
before a container starts. A new (filename, hash) pair extends PCR 11 of the SHA-256 bank and is
kept with the PCR value after the extend (its "template hash"); a pair already in the list is
not extended again.

Unlike the original, the list also lives in a state file under /run (a tmpfs: gone at reboot,
exactly when PCR 11 resets), so a restarted tpm2d can still replay PCR 11; the original loses
the list and every later attestation fails. At start the file is replayed and compared with
PCR 11; a list that does not replay is dropped with an error in the log (the verifier will
report the mismatch).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from cml_common.fsutil import write_atomic
from cml_common.messages.attestation_pb2 import HashAlgLen, MlContainerEntry

log = logging.getLogger(__name__)

CONTAINER_PCR = 11
ALG_NAMES: dict[int, str] = {HashAlgLen.SHA1: "sha1", HashAlgLen.SHA256: "sha256", HashAlgLen.SHA384: "sha384"}
MAX_FILENAME = 4096
MAX_ENTRIES = 4096


class MeasurementError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    filename: str
    data_hash_alg: str
    data_hash: bytes
    template_hash: bytes

    def to_proto(self) -> MlContainerEntry:
        return MlContainerEntry(pcr_index=CONTAINER_PCR, filename=self.filename, template_hash_alg="sha256",
                                template_hash=self.template_hash, data_hash_alg=self.data_hash_alg,
                                data_hash=self.data_hash)


def extend_value(data_hash: bytes) -> bytes:
    """What goes into the SHA-256 bank for a data hash: the original copies the hash into a
    zeroed digest buffer, so a SHA-1 hash is zero-padded and a SHA-384 hash truncated to 32."""
    return (data_hash + bytes(32))[:32]


def check_request(filename: str, data_hash: bytes, alg: int) -> str:
    """Validates an ML_APPEND; returns the algorithm name. Raises MeasurementError."""
    if not filename:
        raise MeasurementError("ML_APPEND without ml_filename")
    if len(filename) > MAX_FILENAME or "\0" in filename:
        raise MeasurementError("ml_filename is longer than 4096 characters or contains NUL")
    if alg not in ALG_NAMES:
        raise MeasurementError(f"ml_hashalg {alg} is not SHA1 (20), SHA256 (32) or SHA384 (48)")
    if len(data_hash) != alg:
        raise MeasurementError(f"ml_datahash has {len(data_hash)} bytes, {ALG_NAMES[alg]} needs {alg}")
    return ALG_NAMES[alg]


def replay(entries: list[Entry], start: bytes = bytes(32)) -> bytes:
    pcr = start
    for e in entries:
        pcr = hashlib.sha256(pcr + extend_value(e.data_hash)).digest()
    return pcr


class MeasurementList:
    def __init__(self, state_file: Path | None) -> None:
        self.state_file = state_file
        self.entries: list[Entry] = []

    def contains(self, filename: str, data_hash: bytes) -> bool:
        return any(e.filename == filename and e.data_hash == data_hash for e in self.entries)

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self._save()

    def full(self) -> bool:
        return len(self.entries) >= MAX_ENTRIES

    def load(self, pcr11: bytes) -> None:
        """Take the list from the state file if it replays to the current PCR 11."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            raw = json.loads(self.state_file.read_text())
            entries = [Entry(r["filename"], r["data_hash_alg"], bytes.fromhex(r["data_hash"]),
                             bytes.fromhex(r["template_hash"])) for r in raw]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("measurement list %s is unreadable (%s); starting empty", self.state_file, e)
            return
        if replay(entries) != pcr11:
            log.error("measurement list %s (%d entries) does not replay to PCR 11 %s (TPM reset or "
                      "extended by someone else); starting empty", self.state_file, len(entries), pcr11.hex())
            return
        self.entries = entries
        log.info("measurement list restored: %d entries, replays to PCR 11", len(entries))

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = [{**asdict(e), "data_hash": e.data_hash.hex(), "template_hash": e.template_hash.hex()}
                for e in self.entries]
        self.state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_file, json.dumps(data).encode(), mode=0o600)
