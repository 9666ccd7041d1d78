"""`--wait` for start and stop: poll the container's state on the same connection until it is
the wanted one, settles elsewhere, or the time is up, so a script needs one process per
transition instead of a `control state` loop."""

from __future__ import annotations

import time

from . import wire
from .session import Session

POLL_INTERVAL = 0.02  # s; each poll is one GET_CONTAINER_STATUS round trip on an open connection
S = wire.STATE
# States a container passes through on its way to RUNNING/SETUP; anything else (STOPPED,
# ZOMBIE, ...) means the start did not get there.
TOWARDS_RUNNING = frozenset({S["STARTING"], S["BOOTING"], S["REBOOTING"]})


def keep_waiting(want: int, state: int) -> bool:
    if want == S["STOPPED"]:
        return state != S["ZOMBIE"]  # a stop may pass through SHUTDOWN, or wait for a freeze to end
    return state in TOWARDS_RUNNING


def current_state(session: Session, uuid: str) -> int | None:
    reply = session.request("GET_CONTAINER_STATUS", container_uuids=[uuid])
    for st in reply.statuses():
        if st.get_str("uuid") == uuid:
            return st.get_int("state")
    return None  # removed meanwhile


def wait_for_state(session: Session, uuid: str, want: int, timeout: float) -> tuple[str, int | None]:
    """("reached" | "other" | "timeout", the last state seen or None if the container is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        state = current_state(session, uuid)
        if state == want:
            return "reached", state
        if state is None or not keep_waiting(want, state):
            return "other", state
        if time.monotonic() >= deadline:
            return "timeout", state
        time.sleep(POLL_INTERVAL)
