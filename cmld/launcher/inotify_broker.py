"""`python -m cmld.launcher.inotify_broker SOCK UID MAX_INSTANCES MAX_WATCHES`: makes the inotify
instances of one container without a user namespace, so that the kernel charges them (and every
watch added to them) to that container's own account instead of host root's.

Why a process: the kernel counts inotify instances and watches per user, keyed by the *creator's*
user namespace and effective UID at inotify_init time (the group keeps that account for its
watches), charging each level up to the initial namespace. A container without a user namespace
is host root, so its own inotify_init would spend host root's `fs.inotify.max_user_*`. cmld's
seccomp supervisor therefore answers the container's inotify_init/inotify_init1 with an instance
made here and installs it in the caller (SECCOMP_IOCTL_NOTIF_ADDFD).

This process takes the container's reserved host UID (the base of the ID range cmld keeps for it,
never used by anything else) as all its IDs, keeping its capabilities just long enough
(SECBIT_NO_SETUID_FIXUP) to make a user namespace *owned by that UID* and set that namespace's
`max_inotify_instances` / `max_inotify_watches` to the container's budget; then it drops every
capability, sets no_new_privs and serves. Each instance is charged to (namespace, UID) against the
budget, and to the UID in the initial namespace against the host's limit: never to host root.
No ID map is written: nothing here needs a name for its UID inside the namespace.

Protocol on SOCK (SOCK_SEQPACKET, one message each): first the broker sends READY; then per
request `REQUEST` (sequence, flags: only IN_NONBLOCK) it answers `REPLY` (sequence, errno), with
the instance's fd attached (SCM_RIGHTS) when errno is 0. It exits when cmld closes its end.
Setup failures go to stderr, exit status 1.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys

from cmld import linux

REQUEST = struct.Struct("=II")  # sequence number, inotify_init1 flags
REPLY = struct.Struct("=Ii")  # sequence number, errno (0: the fd is attached)
READY = b"ready"
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
LIMIT_FILES = {"max_inotify_instances", "max_inotify_watches"}
USER_LIMITS_DIR = "/proc/sys/user"

_libc = ctypes.CDLL(None, use_errno=True)


def become_account(uid: int, limits: dict[str, int]) -> None:
    """Take `uid` as every ID, owning a new user namespace whose inotify limits are `limits`;
    end with no capability anywhere."""
    linux.prctl(linux.PR_SET_SECUREBITS, linux.SECBIT_NO_SETUID_FIXUP)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    linux.unshare(linux.CLONE_NEWUSER)  # owned by our effective UID; all capabilities inside it
    for name, value in limits.items():  # /proc/sys/user shows the set of our (new) namespace
        with open(os.path.join(USER_LIMITS_DIR, name), "w") as f:
            f.write(str(value))
    linux.drop_from_all_sets(range(linux.kernel_cap_last() + 1))
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)


def answer(sock: socket.socket, request: bytes) -> None:
    """One request: an instance, or the errno why not."""
    if len(request) != REQUEST.size:
        sock.send(REPLY.pack(0, 22))  # EINVAL
        return
    seq, flags = REQUEST.unpack(request)
    if flags & ~IN_NONBLOCK:
        sock.send(REPLY.pack(seq, 22))
        return
    fd = _libc.inotify_init1(flags | IN_CLOEXEC)
    if fd < 0:
        sock.send(REPLY.pack(seq, ctypes.get_errno()))
        return
    try:
        socket.send_fds(sock, [REPLY.pack(seq, 0)], [fd])
    finally:
        os.close(fd)


def serve(sock: socket.socket) -> None:
    while True:
        request = sock.recv(64)
        if not request:  # cmld closed its end (container stopped, or cmld gone)
            return
        answer(sock, request)


def main() -> None:
    try:
        sock_fd, uid, instances, watches = (int(a) for a in sys.argv[1:5])
        if uid <= 0 or instances < 1 or watches < 1:
            raise ValueError("UID must be > 0, budgets >= 1")
    except ValueError as e:
        print(f"usage: inotify_broker SOCK UID MAX_INSTANCES MAX_WATCHES ({e})", file=sys.stderr)
        sys.exit(2)
    sock = socket.socket(fileno=sock_fd)
    try:
        become_account(uid, {"max_inotify_instances": instances, "max_inotify_watches": watches})
    except OSError as e:
        print(f"cml inotify_broker: {e}", file=sys.stderr)
        sys.exit(1)
    sock.send(READY)
    serve(sock)


if __name__ == "__main__":
    main()
