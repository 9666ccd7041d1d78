"""systemd readiness notification (Type=notify), a no-op when not started by systemd."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") to systemd; True if it was sent."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        from systemd import daemon  # type: ignore[attr-defined]
    except ImportError:
        log.warning("NOTIFY_SOCKET is set but systemd-python is not installed")
        return False
    return bool(daemon.notify(state))


def ready(status: str) -> bool:
    return notify(f"READY=1\nSTATUS={status}")


def stopping() -> bool:
    return notify("STOPPING=1")
