"""PIN input, in the two styles of the two programs.

`control` reads as the original's get_password_new(): the prompt goes to stdout, echo is off on a
terminal (the newline still echoes), and one fgets() of at most 127 bytes is taken with its last
character dropped (the newline, or the last character of a line cut at 127 bytes, whose rest is
left for the next prompt). End of input gives an empty PIN.

`cml-control` prompts on stderr (stdout carries only replies), reads a terminal with getpass and
a pipe line by line, and refuses end of input and answers longer than 127 characters.
"""

from __future__ import annotations

import os
import sys

MAX_LEN = 127  # the original's fgets buffer is 128 bytes


class PromptError(Exception):
    pass


def _decode(raw: bytes) -> str:
    # A PIN is a proto string, but its bytes are sent as typed, UTF-8 or not (wire.encode).
    return raw.decode("utf-8", "surrogateescape")


def ask_original(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    saved = None
    if os.isatty(0):
        import termios

        saved = termios.tcgetattr(0)
        quiet = list(saved)
        quiet[3] = (quiet[3] & ~termios.ECHO) | termios.ECHONL
        termios.tcsetattr(0, termios.TCSAFLUSH, quiet)
    try:
        line = sys.stdin.buffer.readline(MAX_LEN)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSAFLUSH, saved)
    return _decode(line[:-1]) if line else ""


def ask_strict(prompt: str) -> str:
    if os.isatty(0):
        import getpass

        answer = getpass.getpass(prompt)
    else:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        raw = sys.stdin.buffer.readline()
        sys.stderr.write("\n")
        if not raw:
            raise PromptError("no input on stdin")
        answer = _decode(raw.rstrip(b"\r\n"))
    if len(answer) > MAX_LEN:
        raise PromptError(f"input longer than {MAX_LEN} characters")
    return answer
