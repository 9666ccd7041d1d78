"""Automount of an allowed block device in a running container (the original's c_automount):
`python -m cmld.launcher.automount` does the mount inside the container's mount namespace; as
the original, the first try is after a second (the device settles) and there are up to 10."""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger(__name__)
RETRIES = 10
DELAY = 1.0  # s


async def automount(container: str, init_pid: int, devname: str, uid: int, retries: int = RETRIES,
                    delay: float = DELAY) -> bool:
    why = ""
    for _ in range(retries):
        await asyncio.sleep(delay)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmld.launcher.automount", str(init_pid), devname, str(uid),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            log.info("container %s: %s", container, out.decode(errors="replace").strip())
            return True
        why = err.decode(errors="replace").strip()
        if proc.returncode == 2:
            break
    log.warning("container %s: /dev/%s not automounted: %s", container, devname, why)
    return False
