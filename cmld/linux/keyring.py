"""Kernel keyrings: every container process starts in a session keyring of its own."""

from __future__ import annotations

import ctypes

from cmld.linux.libc import check, syscall

SYS_KEYCTL = 250  # x86-64
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_new_session_keyring() -> int:
    """Replace this process's session keyring with a new anonymous one (what it inherited is
    cmld's, and with it every key cmld or another container put there) and return its serial.
    The keyring belongs to the process's user at the time of the call: call it as the
    container's root."""
    return check(syscall(SYS_KEYCTL, ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None), "keyctl(JOIN_SESSION_KEYRING)")
