"""Waiting for scd, tpm2d and the device UUID before any container starts (the original's two
init stages: cmld starts containers only once every unit it depends on answers on its socket and
scd has written tokens/device_id.conf).

Here systemd starts the daemons (and restarts them, `Restart=always`, as the original's unit
supervision restarts a unit that stopped for any reason); cmld only waits, as long as it takes,
and says what it is waiting for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
POLL = 0.2  # s
REPORT_EVERY = 10.0  # s between "still waiting" log lines


def socket_answers(path: Path, kind: int) -> bool:
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


async def await_services(scd_socket: Path, tpm2d_socket: Path | None, device_uuid: Callable[[], str]) -> str:
    """Return the device UUID once scd (and tpm2d, when given) accept connections and the UUID is
    known; until then, log what is missing every REPORT_EVERY seconds."""
    last_report = 0.0
    t0 = time.monotonic()
    while True:
        missing = []
        if tpm2d_socket is not None and not socket_answers(tpm2d_socket, socket.SOCK_STREAM):
            missing.append(f"tpm2d ({tpm2d_socket})")
        if not socket_answers(scd_socket, socket.SOCK_SEQPACKET):
            missing.append(f"scd ({scd_socket})")
        uuid = device_uuid()
        if not uuid:
            missing.append("the device UUID (tokens/device_id.conf, written by scd)")
        if not missing:
            log.info("scd%s and the device UUID %s are there after %.1f s: containers may start",
                     " and tpm2d" if tpm2d_socket is not None else "", uuid, time.monotonic() - t0)
            return uuid
        now = time.monotonic()
        if now - last_report >= REPORT_EVERY:
            log.warning("waiting for %s before starting any container", ", ".join(missing))
            last_report = now
        await asyncio.sleep(POLL)
