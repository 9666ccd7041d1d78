"""The wrong-PIN counter: three wrong PINs lock a token until scd restarts (reboot).

Unlike the original (inventory §2.14 item 7, where the counter is never reset and any three typos
over the whole scd lifetime lock the token), a correct PIN before the third failure resets the
counter. The lock itself keeps the original's semantics: once reached, even the right PIN is
refused until scd restarts. Counters live only in memory, keyed by (token type, token UUID), so
removing and re-adding a token does not clear them.
"""

from __future__ import annotations

MAX_ATTEMPTS = 3


class Lockout:
    def __init__(self, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.max_attempts = max_attempts
        self._failures: dict[tuple[int, str], int] = {}

    def locked(self, key: tuple[int, str]) -> bool:
        return self._failures.get(key, 0) >= self.max_attempts

    def failed(self, key: tuple[int, str]) -> int:
        """Count a wrong PIN; returns the failures so far."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return n

    def succeeded(self, key: tuple[int, str]) -> None:
        if not self.locked(key):
            self._failures.pop(key, None)

    def remaining(self, key: tuple[int, str]) -> int:
        return max(0, self.max_attempts - self._failures.get(key, 0))
