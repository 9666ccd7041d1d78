"""The inotify budget of a container without a user namespace, as logic: which calls and flags
cmld answers and how (`emulate_inotify.requested_flags`), the budget taken from the host's
limits, and cmld's side of the broker protocol against a scripted peer (stale, malformed and
missing replies, a broker that left), with memfds standing in for the instances."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from cmld.launcher.inotify_broker import READY, REPLY, REQUEST
from cmld.modules.userns import USER_LIMIT_SHARE, userns_limits
from cmld.seccomp.emulate_inotify import IN_CLOEXEC, IN_NONBLOCK, requested_flags
from cmld.seccomp.inotify_broker import InotifyBroker, budget
from cmld.seccomp.notify import Notification
from cmld.seccomp.procfs import NR_INOTIFY_INIT, NR_INOTIFY_INIT1, NR_MKNOD

pytestmark = pytest.mark.unit


def _notif(nr: int, flags: int = 0) -> Notification:
    return Notification(1, 42, 0, nr, 0xC000003E, 0, (flags, 0, 0, 0, 0, 0))


def test_requested_flags_as_the_kernel_checks_them() -> None:
    assert requested_flags(_notif(NR_INOTIFY_INIT, 0xFFFF)) == 0  # inotify_init has no argument
    assert requested_flags(_notif(NR_INOTIFY_INIT1)) == 0
    assert requested_flags(_notif(NR_INOTIFY_INIT1, IN_CLOEXEC)) == IN_CLOEXEC
    assert requested_flags(_notif(NR_INOTIFY_INIT1, IN_NONBLOCK | IN_CLOEXEC)) == IN_NONBLOCK | IN_CLOEXEC
    assert requested_flags(_notif(NR_INOTIFY_INIT1, 0xDEAD << 32 | IN_NONBLOCK)) == IN_NONBLOCK  # a C int
    for bad in (1, os.O_RDWR, os.O_APPEND, 0x80000000, IN_CLOEXEC | 0x10):
        assert requested_flags(_notif(NR_INOTIFY_INIT1, bad)) is None, bad
    assert requested_flags(_notif(NR_MKNOD)) is None


def test_budget_is_the_userns_share_of_the_host_limits(tmp_path: Path) -> None:
    (tmp_path / "max_inotify_instances").write_text("128\n")
    (tmp_path / "max_inotify_watches").write_text("192540\n")
    (tmp_path / "max_fanotify_groups").write_text("garbage\n")
    limits = userns_limits(tmp_path)
    assert budget(limits) == (128 // USER_LIMIT_SHARE, 192540 // USER_LIMIT_SHARE) == (16, 24067)
    (tmp_path / "max_inotify_instances").write_text("3\n")
    assert budget(userns_limits(tmp_path))[0] == 1  # never 0: a container can always have one


@pytest.fixture
def peer() -> Iterator[tuple[InotifyBroker, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(0.5)
    broker = InotifyBroker(ours, cast(Any, None), -1, 1234, 16, 100)
    try:
        yield broker, theirs
    finally:
        ours.close()
        theirs.close()


def _instance() -> int:
    return os.memfd_create("instance", 0)


def _reply(sock: socket.socket, seq: int, err: int = 0, fds: int = 0) -> None:
    made = [_instance() for _ in range(fds)]
    socket.send_fds(sock, [REPLY.pack(seq, err)], made) if made else sock.send(REPLY.pack(seq, err))
    for fd in made:
        os.close(fd)


def test_protocol_instance_and_errors(peer: tuple[InotifyBroker, socket.socket]) -> None:
    broker, theirs = peer
    _reply(theirs, 1, 0, 1)
    fd = broker.create(nonblock=True)
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
    assert REQUEST.unpack(theirs.recv(64)) == (1, IN_NONBLOCK)
    _reply(theirs, 2, errno.EMFILE, 1)  # an error never hands out an fd
    with pytest.raises(OSError) as e:
        broker.create(nonblock=False)
    assert e.value.errno == errno.EMFILE
    assert REQUEST.unpack(theirs.recv(64)) == (2, 0)


def test_protocol_stale_and_malformed_replies(peer: tuple[InotifyBroker, socket.socket]) -> None:
    broker, theirs = peer
    before = len(os.listdir("/proc/self/fd"))
    _reply(theirs, 7, 0, 1)  # the late answer to a request that timed out: skipped, its fd closed
    _reply(theirs, 1, 0, 1)
    os.close(broker.create(nonblock=False))
    assert len(os.listdir("/proc/self/fd")) == before
    theirs.send(b"short")
    with pytest.raises(OSError) as e:
        broker.create(nonblock=False)
    assert e.value.errno == errno.EIO
    _reply(theirs, 3, 0, 0)  # success without an fd
    with pytest.raises(OSError):
        broker.create(nonblock=False)
    assert len(os.listdir("/proc/self/fd")) == before


def test_protocol_silent_or_gone_broker(peer: tuple[InotifyBroker, socket.socket]) -> None:
    broker, theirs = peer
    with pytest.raises(OSError) as e:
        broker.create(nonblock=False)  # no reply within the timeout
    assert e.value.errno == errno.EIO
    theirs.close()
    with pytest.raises(OSError) as e:
        broker.create(nonblock=False)
    assert e.value.errno == errno.EIO


def test_protocol_constants() -> None:
    assert REQUEST.size == 8 and REPLY.size == 8 and READY == b"ready"
