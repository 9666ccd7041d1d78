"""The bounded parts of a container's end: stop hooks, module cleanups, and the kill that repeats
until init is gone. Nothing here can wait forever, whatever a container does: every stop hook and
every module cleanup has a deadline, after which the next one gets its turn."""

from __future__ import annotations

import asyncio
import logging

from cmld.modules.base import Module
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
HOOK_TIMEOUT = 10.0  # s one module's stop hook may take (halt's own wait is 5 s)
CLEANUP_TIMEOUT = 20.0  # s one module's cleanup may take (a cgroup sweep gives up after 10 s)
KILL_RETRY = 5.0  # s after a SIGKILL: init still there, kill again and look for orphans


async def run_stop_hooks(name: str, ctx: StartContext, modules: list[Module]) -> bool:
    """Each module's stop hook in order until one takes care of the stop; False if none could."""
    for m in modules:
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                if await m.stop(ctx):
                    return True
        except TimeoutError:
            log.warning("container %s: %s did not stop it within %g s", name, m.name, HOOK_TIMEOUT)
        except Exception as e:
            log.warning("container %s: %s could not stop it: %s", name, m.name, e)
    return False


async def run_cleanups(name: str, ctx: StartContext, modules: list[Module], rebooting: bool) -> list[str]:
    """Every module's cleanup in reverse order, each bounded; returns the modules that failed."""
    failed = []
    for m in reversed(modules):
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await m.cleanup(ctx, rebooting)
        except TimeoutError:
            log.error("container %s: cleanup of %s did not finish within %g s; going on", name, m.name,
                      CLEANUP_TIMEOUT)
            failed.append(m.name)
        except Exception:
            log.exception("container %s: cleanup of %s failed", name, m.name)
            failed.append(m.name)
    return failed
