"""A handle on one network namespace, and work done inside it without moving cmld.

cmld never changes its own network namespace after start-up. What must happen inside another
one (a netlink socket, an nftables transaction, a sysctl under /proc/sys/net) runs on a thread of
this handle's own executor, which entered the namespace once (setns is per thread for network
namespaces). A netlink socket keeps the namespace it was made in, so it is then used from the
event loop like any other.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cmld import linux

T = TypeVar("T")
NETLINK_ROUTE = 0


class Netns:
    """An open network namespace (an fd on its nsfs file); `label` names it in messages."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, path: str | Path, label: str = "") -> Netns:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(fd, label or str(path))
        except OSError:
            os.close(fd)
            raise

    @classmethod
    def of_pid(cls, pid: int, label: str) -> Netns:
        return cls.open(f"/proc/{pid}/ns/net", label)

    @classmethod
    def current(cls, label: str = "cmld") -> Netns:
        return cls.open("/proc/thread-self/ns/net", label)

    def same_as(self, other: Netns) -> bool:
        return self.ident == other.ident

    def _enter(self) -> None:
        linux.setns(self.fd, linux.CLONE_NEWNET)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{self.label}"[:15],
                                            initializer=self._enter)
        return self._pool

    def run(self, fn: Callable[[], T]) -> T:
        """`fn()` on a thread inside this namespace (blocks the caller)."""
        return self._executor().submit(fn).result()

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on a thread inside this namespace, awaited."""
        return await asyncio.wrap_future(self._executor().submit(fn))

    async def netlink_fd(self, protocol: int = NETLINK_ROUTE) -> int:
        """A new netlink socket of this namespace (its fd, owned by the caller)."""
        def make() -> int:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol).detach()
        return await self.call(make)

    async def sysctl(self, key: str, value: str) -> None:
        """Set a /proc/sys/net value of this namespace (`key` like "ipv4/ip_forward"): the files
        there show the namespace of the thread that opens them."""
        def write() -> None:
            with open(f"/proc/sys/net/{key}", "w") as f:
                f.write(value)
        await self.call(write)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"Netns({self.label})"
