"""Fault injection for the crash-consistency tests: the daemon SIGKILLs itself at a named step.

`CML_CRASH_AT=<point>` in a daemon's environment makes the first pass through `crash_point(<point>)`
log one line and SIGKILL the whole process, exactly as `kill -9` from outside would, but at a
known step instead of after a guessed sleep. `<point>@<n>` crashes at the n-th pass instead. Several
points can be armed at once, separated by commas. Without the variable every call is one
dictionary lookup.

The points are in the real code paths (cmld: create, start, stop, wipe, remove, GuestOS install).
README "Crash consistency" lists them. Only whoever starts the daemon sets its environment,
so this gives no one a way to stop a daemon they could not already kill.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "CML_CRASH_AT"
log = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        name, _, nth = item.partition("@")
        armed[name] = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    return armed


_ARMED = _parse(os.environ.get(ENV, ""))
_passes: dict[str, int] = {}


def armed() -> dict[str, int]:
    """The points armed in this process (point -> the pass that crashes)."""
    return dict(_ARMED)


def crash_point(name: str) -> None:
    """SIGKILL this process here if `CML_CRASH_AT` names this point (and this is the pass)."""
    if name not in _ARMED:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != _ARMED[name]:
        return
    log.critical("crash point %s (pass %d): SIGKILL (%s)", name, _passes[name], ENV)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
