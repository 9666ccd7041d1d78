"""Ending a CLI process without the interpreter's finalization.

Tearing down every module at exit (the venv's `site` machinery, ours) costs a few milliseconds,
more than a `state` request itself, and a script polling `state` pays it on every call. The CLI
has nothing left to do at that point: its output is flushed here, its socket is closed, and it
registers no atexit handlers. So the console scripts end with os._exit().
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def flush_and_exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib would be one more import on every call
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away: nothing more can be said to it
    os._exit(code)
