"""The Linux layer: every system call cmld makes that Python 3.11 lacks, in one package.

`libc` loads libc once and wraps raw syscalls; the other modules are grouped by kernel topic:

| module | what |
|---|---|
| `namespaces` | unshare, setns, sethostname |
| `mounts` | mount(2), the new mount API, idmapped binds, pivot_root, openat2 RESOLVE_IN_ROOT |
| `process` | prctl, close_range, pidfd signals |
| `caps` | capability names, bounding set, cap sets, file-system identity |
| `loop` | loop devices (LOOP_CONFIGURE, autoclear) |
| `bpf` | cgroup device programs |
| `seccomp` | user-notification struct sizes |
| `clock` | clock_adjtime |
| `nftables` | libnftables (nftables transactions in JSON, loaded on first use) |

The names used by most callers are re-exported here (`from cmld import linux; linux.mount(...)`).
"""

from cmld.linux.caps import CAP, CAP_NAMES, cap_last, drop_bounding, drop_from_all_sets, fs_identity, raise_effective
from cmld.linux.loop import loop_attach
from cmld.linux.mounts import (
    AT_EMPTY_PATH,
    AT_RECURSIVE,
    MNT_DETACH,
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH,
    MS_BIND,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    bind_tree,
    idmapped_bind,
    mount,
    move_mount,
    open_in_root,
    open_tree,
    pivot_root,
    umount2,
)
from cmld.linux.namespaces import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    sethostname,
    setns,
    unshare,
)
from cmld.linux.process import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    close_range,
    pidfd_send_signal,
    prctl,
)

__all__ = [
    "AT_EMPTY_PATH", "AT_RECURSIVE", "CAP", "CAP_NAMES", "CLONE_NEWCGROUP", "CLONE_NEWIPC", "CLONE_NEWNET",
    "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWTIME", "CLONE_NEWUSER", "CLONE_NEWUTS", "MNT_DETACH",
    "MOUNT_ATTR_IDMAP", "MOUNT_ATTR_NODEV", "MOUNT_ATTR_NOEXEC", "MOUNT_ATTR_NOSUID", "MOUNT_ATTR_RDONLY",
    "MOVE_MOUNT_F_EMPTY_PATH", "MOVE_MOUNT_T_EMPTY_PATH", "MS_BIND", "MS_MOVE", "MS_NOATIME", "MS_NODEV",
    "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE", "MS_RDONLY", "MS_REC", "MS_REMOUNT", "MS_SHARED", "MS_SLAVE",
    "MS_STRICTATIME", "OPEN_TREE_CLOEXEC", "OPEN_TREE_CLONE", "PR_CAPBSET_DROP", "PR_CAPBSET_READ",
    "PR_CAP_AMBIENT", "PR_CAP_AMBIENT_CLEAR_ALL", "PR_SET_CHILD_SUBREAPER", "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS", "PR_SET_PDEATHSIG", "bind_tree", "cap_last", "close_range", "drop_bounding",
    "drop_from_all_sets", "fs_identity", "idmapped_bind", "loop_attach", "mount", "move_mount", "open_in_root",
    "open_tree", "pidfd_send_signal", "pivot_root", "prctl", "raise_effective", "sethostname", "setns", "umount2",
    "unshare",
]
