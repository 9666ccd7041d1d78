"""`python -m cmld.launcher.pidns_reboot PIDFD CMD`: the reboot(2) a container asked for, made in
its PID namespace on its behalf (cmld's seccomp supervisor runs this; the container holds no
CAP_SYS_BOOT, which in the host's user namespace would also allow kexec_load).

PIDFD is a pidfd of the container's init, held by cmld since the start: a dead init's PID
reused by another process can never redirect this. The helper joins only that PID namespace
and forks: the child, inside it, calls reboot(2), which ends the namespace (init dies as by
SIGHUP for a restart, SIGINT for halt or power off: what cmld already reads as reboot or stop).
Exit status 0: done; 2: refused here; other: reboot(2) failed (100 + errno).
"""

from __future__ import annotations

import os
import signal
import sys

from cmld import linux


def main() -> None:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    pidfd, cmd = int(sys.argv[1]), int(sys.argv[2])
    own = os.stat("/proc/self/ns/pid").st_ino
    linux.setns(pidfd, linux.CLONE_NEWPID)
    os.close(pidfd)
    if os.stat("/proc/self/ns/pid_for_children").st_ino == own:
        print("cml pidns_reboot: the target is this process's own PID namespace: refused", file=sys.stderr)
        os._exit(2)
    pid = os.fork()
    if pid == 0:
        try:
            linux.reboot_pid_namespace(cmd, not_in=own)
        except OSError as e:
            print(f"cml pidns_reboot: {e}", file=sys.stderr)
            os._exit(100 + (e.errno or 0) if (e.errno or 0) < 100 else 99)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        os._exit(0)  # the namespace ended before our child had finished exiting
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        print(f"cml pidns_reboot: {type(e).__name__}: {e}", file=sys.stderr)
        os._exit(1)
