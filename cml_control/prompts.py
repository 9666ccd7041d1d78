"""PIN/password input: no echo on a terminal, one line per answer from a pipe (scripts, CI)."""

from __future__ import annotations

import getpass
import sys

MAX_LEN = 127  # the original reads at most 127 characters


class PromptError(Exception):
    pass


def ask(prompt: str) -> str:
    if sys.stdin.isatty():
        answer = getpass.getpass(prompt)
    else:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = sys.stdin.readline()
        sys.stderr.write("\n")
        if not line:
            raise PromptError("no input on stdin")
        answer = line.rstrip("\r\n")
    if len(answer) > MAX_LEN:
        raise PromptError(f"input longer than {MAX_LEN} characters")
    return answer


def ask_new_pin() -> tuple[str, str]:
    """The original's change_pin dialogue; raises on a mismatch."""
    current = ask("Current Password: ")
    new = ask("New Password: ")
    again = ask("Re-enter New Password: ")
    if new != again:
        raise PromptError("Passwords don't match!")
    return current, new
