"""What every process of a container gets before it runs the container's code, done alike by
the container's first process (before init) and by every exec helper (before the command):

* a neutral OOM score: container processes must not inherit cmld's shield (the unit's -900);
* the container's resource limits (RLIMIT_MSGQUEUE without a user namespace, RLIMIT_RTPRIO 0);
* a session of its own, without a controlling terminal (no TIOCSTI into cmld's terminal), and a
  fresh anonymous session keyring (not cmld's, with whatever cmld or another container put there);
* the capability drop cmld computed, from every set;
* the seccomp filter cmld compiled.
"""

from __future__ import annotations

import base64
import errno
import os
import resource

from cmld import linux
from cmld.linux.seccomp import load_filter

NEUTRAL_OOM_SCORE_ADJ = 0


def neutral_oom_score(proc_self: str = "/proc/self") -> None:
    """oom_score_adj 0. Raising a value needs no privilege; lowering one is refused below the
    process's oom_score_adj_min (set by a privileged writer), and a value that stays above 0 is
    no shield: that case is accepted as it is."""
    path = os.path.join(proc_self, "oom_score_adj")
    try:
        with open(path, "w") as f:
            f.write(str(NEUTRAL_OOM_SCORE_ADJ))
    except OSError as e:
        if e.errno != errno.EACCES:
            raise
        with open(path) as f:
            if int(f.read()) < NEUTRAL_OOM_SCORE_ADJ:
                raise


def apply_rlimits(limits: dict[str, int]) -> None:
    """RLIMIT_<name> := (value, value) for each entry; the container cannot raise a hard limit
    (that needs CAP_SYS_RESOURCE, which it never keeps)."""
    for name, value in limits.items():
        res = getattr(resource, f"RLIMIT_{name}", None)
        if not isinstance(res, int):
            raise OSError(errno.EINVAL, f"unknown resource limit RLIMIT_{name}")
        resource.setrlimit(res, (value, value))


def own_session() -> None:
    """A new session (no controlling terminal) and a new session keyring. Call it as the
    container's root: the keyring belongs to the caller's user."""
    # The launcher's child is never a group leader; the exec helper already leads a session cmld
    # started for it (so that a kill of the session reaches its whole process group): keep that one.
    if os.getsid(0) != os.getpid():
        os.setsid()
    linux.join_new_session_keyring()


def drop_bounding(cap_drop: list[int]) -> None:
    linux.drop_bounding(cap_drop)


def drop_held(cap_drop: list[int]) -> None:
    """After the filter is loaded (which needs CAP_SYS_ADMIN): nothing dropped stays effective,
    permitted or inheritable, and the ambient set is empty."""
    linux.drop_from_all_sets(cap_drop)
    linux.clear_ambient()


def load_seccomp(bpf_b64: str) -> int:
    """Load cmld's compiled filter; returns its listener fd (for cmld's supervisor)."""
    return load_filter(base64.b64decode(bpf_b64, validate=True))
