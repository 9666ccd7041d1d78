"""Powering the device off or rebooting it: only through systemd, and only where it is init.

cmld never calls reboot(2) itself: on a development host (or a test) that would take the machine
down; through systemd every other service is stopped cleanly first.
"""

from __future__ import annotations

from pathlib import Path

HOST_REBOOT = ["systemctl", "reboot"]
HOST_POWEROFF = ["systemctl", "poweroff"]
# DESTROY_SYSTEM: processes killed and file systems unmounted, but no unit is stopped cleanly.
HOST_FORCED_REBOOT = ["systemctl", "reboot", "--force"]


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()
