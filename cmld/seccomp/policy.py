"""The seccomp policy of an ordinary container, as data: at least as strict as Docker's default
profile (moby `profiles/seccomp/default.json`), with the original's emulations on top.

Structure (x86-64):

* `ALLOWED`: allowed whatever the container's capabilities (Docker's unconditional list, minus
  io_uring; plus system calls newer than that list that open nothing new, by number where the
  host's libseccomp does not know them yet).
* `BY_CAPABILITY`: allowed only if the container keeps that capability, as Docker's "includes
  caps" groups. CAP_SYS_ADMIN (only held inside a user namespace) opens the mount API, new
  namespaces, setns, pivot_root, chroot needs CAP_SYS_CHROOT, the module calls CAP_SYS_MODULE.
* everything else is refused with EPERM, Docker's default action. `DENIED` names the refused
  calls that matter, each with the reason (the tests check that none of them is allowed unless a
  kept capability's group opens it). clone3 answers ENOSYS where its flags would need checking
  (glibc falls back to clone, whose flags the filter sees).
* argument rules (`filter.py`): personality only with the harmless personas, socket not
  AF_VSOCK (nor a uevent netlink socket where `uevents` is off, see modules/seccomp.py), clone
  without namespace flags (unless CAP_SYS_ADMIN), userfaultfd only with UFFD_USER_MODE_ONLY,
  sched_setscheduler only to SCHED_OTHER/BATCH/IDLE, ioctl not TIOCSTI.
* notified to cmld (`supervisor.py`): mknod/mknodat of devices, the clock-setting calls, and
  reboot (the PID-namespace reboot, done by cmld for the container, which holds no CAP_SYS_BOOT);
  for a container without a user namespace also inotify_init/inotify_init1 (an instance charged
  to the container's own account by its inotify broker, not to host root's).
"""

from __future__ import annotations

# Docker's unconditional allow list, as far as x86-64 has the calls (i386-only names dropped).
ALLOWED = (
    "accept", "accept4", "access", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod", "chown",
    "clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchownat",
    "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs",
    "fsync", "ftruncate", "futex", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "get_robust_list", "getrusage", "getsid",
    "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr", "link", "linkat",
    "listen", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mlock", "mlock2", "mlockall", "mmap", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl",
    "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
    "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
    "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat",
    "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_setaffinity", "sched_setparam", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid", "setgid",
    "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setxattr", "shmat",
    "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "socketpair", "splice", "stat",
    "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill",
    "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
    "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
    # Docker: allowed on amd64; and from kernel 4.8 on (seccomp runs after a tracer's changes)
    "arch_prctl", "modify_ldt", "ptrace", "process_vm_readv", "process_vm_writev",
)

# Newer than Docker's list above (and partly than this host's libseccomp): x86-64 numbers. Each
# only works on what the caller could already reach (its own files, mounts, memory, futexes).
ALLOWED_NEWER = {
    "uretprobe": 335, "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453, "futex_wake": 454,
    "futex_wait": 455, "futex_requeue": 456, "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "file_getattr": 468, "file_setattr": 469,
}

# Allowed only if the container keeps the capability (Docker's groups; see DENIED for the calls
# of its groups that stay refused here whatever the capabilities).
BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "SYS_ADMIN": ("clone3", "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr", "move_mount",
                  "open_tree", "pivot_root", "setdomainname", "sethostname", "setns", "umount2", "unshare"),
    "SYS_CHROOT": ("chroot",),
    "SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "SYS_BOOT": ("reboot",),  # without it, reboot is notified to cmld (below)
    "SYS_TTY_CONFIG": ("vhangup",),
    "SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages",
                 "move_pages"),
}
ALLOWED_NEWER_BY_CAPABILITY = {"SYS_ADMIN": {"open_tree_attr": 467}}

# Refused (the default EPERM) unless a capability group above opens the call: why each is not
# for an ordinary container.
DENIED = {
    "open_by_handle_at": "any inode of a file system the container has a mount of, hidden ones too (CVE 'shocker')",
    "bpf": "eBPF programs: tracing of the whole machine, kernel memory, signals to any process",
    "perf_event_open": "performance monitoring of the whole machine and the kernel",
    "lookup_dcookie": "kernel profiling (oprofile) interface",
    "keyctl": "kernel keyrings are not namespaced: keys of other users and of the host",
    "add_key": "kernel keyrings are not namespaced",
    "request_key": "kernel keyrings are not namespaced; may call the host's request-key helper",
    "io_uring_setup": "io_uring: its operations do not pass this filter",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    "kexec_load": "loading a new kernel",
    "kexec_file_load": "loading a new kernel",
    "init_module": "kernel modules (allowed with allow_module)",
    "finit_module": "kernel modules (allowed with allow_module)",
    "delete_module": "kernel modules (allowed with allow_module)",
    "iopl": "I/O port access",
    "ioperm": "I/O port access",
    "quotactl": "disk quotas of the host's file systems",
    "quotactl_fd": "disk quotas of the host's file systems",
    "acct": "process accounting of the host",
    "swapon": "the host's swap",
    "swapoff": "the host's swap",
    "syslog": "the kernel log",
    "kcmp": "comparing kernel objects of other processes (Docker: CAP_SYS_PTRACE only)",
    "pidfd_getfd": "taking file descriptors of other processes (Docker: CAP_SYS_PTRACE only)",
    "process_madvise": "memory advice for other processes (Docker: CAP_SYS_PTRACE only)",
    "fanotify_init": "file system notification of the whole mount or file system",
    "sched_setattr": "scheduling classes cannot be checked here (real-time, deadline): sched_setscheduler is",
    "uselib": "obsolete a.out loader",
    "ustat": "obsolete",
    "sysfs": "obsolete",
    "nfsservctl": "obsolete",
    "vhangup": "hangs up the terminal (CAP_SYS_TTY_CONFIG)",
    "get_mempolicy": "NUMA placement (CAP_SYS_NICE)",
    "mbind": "NUMA placement (CAP_SYS_NICE)",
    "set_mempolicy": "NUMA placement (CAP_SYS_NICE)",
    "set_mempolicy_home_node": "NUMA placement (CAP_SYS_NICE)",
    "migrate_pages": "moving pages of other processes (CAP_SYS_NICE)",
    "move_pages": "moving pages of other processes (CAP_SYS_NICE)",
    "chroot": "CAP_SYS_CHROOT",
    **{name: "mounts and namespaces (CAP_SYS_ADMIN, held only inside a user namespace)" for name in
       BY_CAPABILITY["SYS_ADMIN"] if name != "clone3"},
}

# Notified to cmld (emulated or refused there).
MKNOD_MODE_ARG = {"mknod": 1, "mknodat": 2}
TIME_SYSCALLS = ("clock_settime", "clock_adjtime", "adjtimex", "settimeofday")
REBOOT = "reboot"
INOTIFY_INIT = ("inotify_init", "inotify_init1")  # notified without a user namespace (the broker)

# Argument rules.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)  # PER_LINUX, PER_LINUX32, UNAME26 (+32), query
AF_VSOCK = 40
AF_NETLINK = 16
NETLINK_KOBJECT_UEVENT = 15
# clone(2) namespace flags: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (Docker's mask)
CLONE_NAMESPACE_FLAGS = 0x7E020000
UFFD_USER_MODE_ONLY = 1
SCHED_RESET_ON_FORK = 0x40000000
SCHED_POLICIES = (0, 3, 5)  # SCHED_OTHER, SCHED_BATCH, SCHED_IDLE; never FIFO, RR or DEADLINE
TIOCSTI = 0x5412
