"""c0's volume key (the original's cmld_set_key_c0): c0 has no token, its key is kept raw in
`keys/00000000-0000-0000-0000-000000000000.key`, protected by the system data volume it lies on.

- the file exists: its bytes are the key (at least 32);
- else, if c0 has images already (the original's legacy layout): the legacy dummy key, 64 zero
  bytes, written to the file;
- else 32 random bytes, written to the file (mode 0600).

With `not-stacked` (every new c0) the mode is INTEGRITY_ONLY, which takes exactly 32 bytes."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from cml_common.fsutil import write_atomic

log = logging.getLogger(__name__)
C0_KEY_LEN = 32
LEGACY_DUMMY_KEY = bytes(64)
MAX_READ = 256


class C0KeyError(Exception):
    pass


def c0_key(key_file: Path, images_dir: Path) -> bytearray:
    try:
        with key_file.open("rb") as f:
            data = bytearray(f.read(MAX_READ))
    except FileNotFoundError:
        legacy = images_dir.is_dir() and any(images_dir.glob("*.img"))
        data = bytearray(LEGACY_DUMMY_KEY if legacy else secrets.token_bytes(C0_KEY_LEN))
        write_atomic(key_file, bytes(data), mode=0o600)
        log.info("c0: new %s key in %s", "legacy dummy" if legacy else "random volume", key_file)
        return data
    if len(data) < C0_KEY_LEN:
        raise C0KeyError(f"{key_file} has {len(data)} bytes, fewer than {C0_KEY_LEN}")
    return data
