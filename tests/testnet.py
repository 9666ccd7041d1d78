"""Network namespaces a test owns, so no test ever touches the machine's own interfaces, routes
or firewall: every cmld a test starts runs inside one (`cmld --netns`), and "physical" NICs and
the outside world are veths into further test-owned namespaces.

Namespaces are made and removed with iproute2 (`ip netns`), a test tool here: the product itself
uses netlink (pyroute2) only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_COUNTER = itertools.count()

T = TypeVar("T")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


class TestNetns:
    """A named network namespace (/run/netns/<name>), removed with `close` (its processes first)."""

    __test__ = False  # not a pytest class

    def __init__(self, prefix: str = "cmlt") -> None:
        self.name = f"{prefix}{os.getpid()}-{next(_COUNTER)}"
        ip("netns", "add", self.name)
        self.path = Path("/run/netns") / self.name
        ip("-n", self.name, "link", "set", "lo", "up")

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                           check=False, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {self.name}: {p.stdout}{p.stderr}")
        return p

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ip("-n", self.name, *args, check=check)

    def popen(self, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        pids = ip("netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", self.name, check=False)


def veth_between(a: TestNetns, a_name: str, b: TestNetns, b_name: str, *, a_mac: str = "",
                 a_addr: str = "", b_addr: str = "") -> None:
    """A veth with one end in each namespace (b's end up, with `b_addr`; a's end as given)."""
    ip("-n", a.name, "link", "add", a_name, *(["address", a_mac] if a_mac else []), "type", "veth",
       "peer", "name", b_name, "netns", b.name)
    if a_addr:
        a.ip("addr", "add", a_addr, "dev", a_name)
        a.ip("link", "set", a_name, "up")
    if b_addr:
        b.ip("addr", "add", b_addr, "dev", b_name)
    b.ip("link", "set", b_name, "up")


def root_snapshot() -> tuple[frozenset[str], str]:
    """The machine's own links and nftables tables (to show a test left them alone)."""
    links = frozenset(line.split(":")[1].strip().split("@")[0]
                      for line in ip("-o", "link", "show").stdout.splitlines() if ":" in line)
    from cmld.linux import nftables

    return links, nftables.run("list tables")


def server_in_netns(netns: Path, make: Callable[[], T]) -> T:
    """`make()` (which binds a listening socket) run in a thread that joined `netns` first: the
    socket lives in that namespace, and serving it works from any thread. setns(2) changes only
    the calling thread's namespace, and that thread ends here."""
    from cmld import linux

    made: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            finally:
                os.close(fd)
            made.append(make())
        except BaseException as e:  # handed to the caller
            failed.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return made[0]
