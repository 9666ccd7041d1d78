"""The container's first process, from fork to execve of init (the original's `start_child`,
`start_pre_exec_child_early` and `start_pre_exec_child` hooks)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time

from cmld import linux
from cmld.errors import CmldError
from cmld.launcher import confine, netdev
from cmld.launcher.channel import Channel
from cmld.launcher.early import MEMINFO_STAGING, EarlyMounts, fd_path
from cmld.launcher.spec import ERR_GENERIC, ERR_SERVICE, ERR_TIME, ERR_USER, ERR_VOL, MSG_GO, MSG_SUCCESS, LaunchSpec

SERVICE_SOCKET = "/run/socket/cml-service"
CSERVICE = "/sbin/cservice"
CONTROL_SOCKET = "/run/socket/cml-control"

# Files of /proc a container must not read (hidden behind /dev/null or an empty read-only tmpfs)
# and trees it must not write; the same list runc and crun use.
MASKED_PROC = ("/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
               "/proc/sched_debug", "/proc/acpi", "/proc/scsi", "/proc/interrupts")
READONLY_PROC = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class ChildError(CmldError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _mount_proc_sys(spec: LaunchSpec, early: EarlyMounts) -> None:
    fd = early.open_target("/proc")
    try:
        linux.mount("proc", fd_path(fd), "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    finally:
        os.close(fd)
    fd = early.open_target("/sys")
    try:
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | (linux.MS_RDONLY if spec.sysfs_readonly else 0)
        try:
            linux.mount("sysfs", fd_path(fd), "sysfs", flags)
        except OSError as e:
            # Where sysfs cannot be mounted here (a security module may refuse it), a read-only
            # bind of the host's, which the container cannot remount.
            if e.errno != errno.EPERM:
                raise
            linux.bind_tree("/sys", fd, readonly=True)
    finally:
        os.close(fd)


def _bind_meminfo(early: EarlyMounts) -> None:
    """The container's view of /proc/meminfo (a file on its /run tmpfs, written by cmld; never a
    procfs of the host) bound read-only over the kernel's, locked like the masks; the staging
    name goes away."""
    src = linux.open_in_root(early.root_fd, f"/run/{MEMINFO_STAGING}", os.O_PATH)
    try:
        target = linux.open_in_root(early.root_fd, "/proc/meminfo", os.O_PATH)
        try:
            linux.bind_tree(src, target, readonly=True, recursive=False)
        finally:
            os.close(target)
    finally:
        os.close(src)
    run = linux.open_in_root(early.root_fd, "/run", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.unlink(MEMINFO_STAGING, dir_fd=run)
    finally:
        os.close(run)


def _mask_proc(early: EarlyMounts) -> None:
    for path in MASKED_PROC:
        try:
            fd = linux.open_in_root(early.root_fd, path, os.O_PATH)
        except OSError:
            continue
        try:
            if os.path.isdir(fd_path(fd)):
                linux.mount("tmpfs", fd_path(fd), "tmpfs", linux.MS_RDONLY, "size=0")
            else:
                null = linux.open_in_root(early.root_fd, "/dev/null", os.O_PATH)
                try:
                    linux.bind_tree(null, fd, recursive=False)
                finally:
                    os.close(null)
        finally:
            os.close(fd)
    for path in READONLY_PROC:
        try:
            fd = linux.open_in_root(early.root_fd, path, os.O_PATH)
        except OSError:
            continue
        try:
            linux.bind_tree(fd, fd, readonly=True, extra_attrs=linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
                            | linux.MOUNT_ATTR_NOEXEC)
        finally:
            os.close(fd)


def _mount_devpts(early: EarlyMounts) -> None:
    fd = early.open_target("/dev/pts")
    try:
        linux.mount("devpts", fd_path(fd), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620")
    finally:
        os.close(fd)


def _own_root() -> int:
    """A copy of the root mount owned by this mount namespace. Mounts inherited across the
    user namespace boundary are locked, and pivot_root refuses a locked new root; the copy is
    not locked (its submounts stay locked, so nothing under them is revealed)."""
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tree = linux.open_tree(cwd, "", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_EMPTY_PATH
                               | linux.AT_RECURSIVE)
        linux.move_mount(tree, "", cwd, "", linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(cwd)
    return tree  # now the root of the attached copy


def _pivot(early: EarlyMounts) -> None:
    os.fchdir(early.root_fd)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


def _stdio_to_null() -> None:
    """The container's own /dev/null replaces the launcher's stdio (cmld's log file)."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _enter_time_namespace() -> None:
    """The container's clocks start at zero: `uptime` inside shows the container's uptime."""
    linux.unshare(linux.CLONE_NEWTIME)
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(f"monotonic {-int(now)} 0\nboottime {-int(boot)} 0\n")
    fd = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWTIME)
    finally:
        os.close(fd)


def _listen(path: str, mode: int) -> socket.socket:
    """A listening socket bound inside the container, by the container's root: its file belongs
    to the container, and cmld serves it through the fd handed over in SUCCESS."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    s.bind(path)
    os.chmod(path, mode)
    s.listen(8)
    return s


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _choose_init(spec: LaunchSpec) -> str | None:
    """The file to execute as init, looked up inside the container (after the pivot): the
    GuestOS init_path if it is an executable file there, else /sbin/cservice (the original's
    rule, which checks the host's file system instead)."""
    if not spec.init:
        return None
    if _executable(spec.init[0]):
        return spec.init[0]
    if _executable(CSERVICE):
        return CSERVICE
    return None


def _no_init_message(spec: LaunchSpec, early: EarlyMounts) -> str:
    why = early.cservice_problem or "it is not executable"
    if not spec.init:
        return "the GuestOS names no init"
    if spec.init[0] == CSERVICE:
        return f"init {CSERVICE} is not available in the container: {why}"
    return (f"init {spec.init[0]} is missing or not executable in the container image, and {CSERVICE} is not "
            f"there to fall back on: {why}")


def _kernel_file_systems(spec: LaunchSpec, early: EarlyMounts) -> None:
    """/proc, /sys and the /proc masks, mounted while this process is still root on the host in
    the launcher's mount namespace (born in the container's PID and network namespaces, so the
    proc and sysfs instances are the container's). The copy of this namespace the container
    gets next is owned by its user namespace, and the kernel locks every mount in it: a
    user-namespaced container can neither unmount a mask nor mount a fresh proc that would
    reveal what the masks hide (a proc mount is refused while no proc in the namespace is fully
    visible)."""
    _mount_proc_sys(spec, early)
    if spec.mask_proc:
        _mask_proc(early)
    if spec.meminfo:
        _bind_meminfo(early)


def _enter_container(spec: LaunchSpec, early: EarlyMounts) -> None:
    """Into the container's user namespace as its root, then into a mount namespace and cgroup
    namespace of its own (the cgroup namespace's root is the container's group)."""
    if early.userns_fd is not None:
        linux.setns(early.userns_fd, linux.CLONE_NEWUSER)
        os.close(early.userns_fd)
        early.userns_fd = None
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        # The uid change made us non-dumpable, which gives our /proc files to the host's
        # root; the container's root must own them (timens_offsets, later /proc/1/...).
        linux.prctl(linux.PR_SET_DUMPABLE, 1)
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP)
    # The launcher's fd of the root belongs to its mount namespace; mounts from now on are
    # made through the copy in ours.
    os.close(early.root_fd)
    early.root_fd = _own_root()


def run(spec: LaunchSpec, early: EarlyMounts, chan: Channel) -> None:
    """Never returns: execs init, or exits after reporting an error to cmld."""
    init: str | None = None
    try:
        chan.expect(MSG_GO)
        try:
            _kernel_file_systems(spec, early)
        except OSError as e:
            raise ChildError(ERR_VOL, f"preparing the root file system: {e}") from None
        try:
            _enter_container(spec, early)
        except OSError as e:
            raise ChildError(ERR_USER, f"entering the container's namespaces: {e}") from None
        confine.own_session()
        linux.sethostname(spec.hostname)
        try:
            _mount_devpts(early)
            _pivot(early)
            _stdio_to_null()
        except OSError as e:
            raise ChildError(ERR_VOL, f"preparing the root file system: {e}") from None
        if spec.netns:
            netdev.loopback_up()
        if spec.timens:
            try:
                _enter_time_namespace()
            except OSError as e:
                raise ChildError(ERR_TIME, f"time namespace: {e}") from None
        init = _choose_init(spec)
        if init is None and not spec.setup_mode:
            raise ChildError(ERR_GENERIC, _no_init_message(spec, early))
        notes: list[str] = []
        if early.cservice_problem and spec.cservice:
            notes.append(f"{CSERVICE} is not cmld's: {early.cservice_problem}")
        fds: list[int] = []
        names: list[str] = []
        sockets: list[socket.socket] = []
        for wanted, name, path, mode in ((spec.service_socket, "service", SERVICE_SOCKET, 0o660),
                                         (spec.control_socket, "control", CONTROL_SOCKET, 0o600)):
            if not wanted:
                continue
            try:
                sockets.append(_listen(path, mode))
            except OSError as e:
                raise ChildError(ERR_SERVICE, f"{name} socket {path}: {e}") from None
            fds.append(sockets[-1].fileno())
            names.append(name)
        if early.meminfo_fd >= 0:
            fds.append(early.meminfo_fd)
            names.append("meminfo")
        confine.drop_bounding(spec.cap_drop)
        seccomp_fd = -1
        if spec.seccomp_bpf:
            seccomp_fd = confine.load_seccomp(spec.seccomp_bpf)
            fds.append(seccomp_fd)
            names.append("seccomp")
        confine.drop_held(spec.cap_drop)
        chan.send({"type": MSG_SUCCESS, "fds": names, "init": init or "", "notes": notes}, fds)
        for sock in sockets:
            sock.close()
        if seccomp_fd >= 0:
            os.close(seccomp_fd)
        chan.expect(MSG_GO)
    except ChildError as e:
        _fail(chan, e.code, str(e))
    except Exception as e:
        _fail(chan, ERR_GENERIC, f"{type(e).__name__}: {e}")
    _exec_init(spec, chan, init)


def _fail(chan: Channel, code: int, message: str) -> None:
    try:
        chan.send({"type": "error", "code": code, "message": message})
    finally:
        os._exit(1)


def _exec_init(spec: LaunchSpec, chan: Channel, init: str | None) -> None:
    sync = chan.sock.fileno()
    os.set_inheritable(sync, False)
    # No fd of cmld or the launcher may reach the container; the sync socket closes on exec,
    # which is how cmld learns that init was exec'd.
    if sync > 3:
        linux.close_range(3, sync - 1)
    linux.close_range(sync + 1)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.umask(0o022)
    if init is None:  # setup mode without init: keep the namespaces alive for `run`
        while True:
            signal.pause()
    env = list(spec.env) or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    try:
        os.execve(init, spec.init, dict(e.split("=", 1) for e in env if "=" in e))  # noqa: S606 - exec without a shell is the point
    except OSError as e:
        chan.send({"type": "error", "code": ERR_GENERIC, "message": f"exec {init}: {e.strerror}"})
        os._exit(127)
