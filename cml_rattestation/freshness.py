"""Replay detection across runs: the TPM clock of the last good quote per quoting key.

A TPM's clockInfo (clock in ms, resetCount) only moves forward, so a quote whose (resetCount,
clock) is not newer than one already accepted from the same key is a replay, even if an attacker
could also make its nonce match. The state is one small JSON file per key name in the state dir,
written only after a fully verified attestation.
"""

from __future__ import annotations

import json
from pathlib import Path

from cml_common.fsutil import write_atomic

from .tpmstructs import Quote


class FreshnessStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _file(self, quote: Quote) -> Path:
        return self.dir / f"{quote.qualified_signer.hex()}.json"

    def check(self, quote: Quote) -> str | None:
        f = self._file(quote)
        try:
            last = json.loads(f.read_text())
            seen = (int(last["reset_count"]), int(last["clock"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"state file {f} unreadable: {e}"
        if (quote.reset_count, quote.clock) <= seen:
            return (f"TPM clock {quote.clock} ms (reset {quote.reset_count}) is not newer than the last "
                    f"accepted quote's {seen[1]} ms (reset {seen[0]})")
        return None

    def commit(self, quote: Quote) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._file(quote), json.dumps({"reset_count": quote.reset_count, "clock": quote.clock,
                                                    "restart_count": quote.restart_count}).encode(), mode=0o600)
