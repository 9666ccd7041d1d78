"""Disclosure: reading what belongs to the host, to the daemon or to another container.

Each attack runs as root of an ordinary container (`cml-control run <c> nopty /opt/atk ...`), in
both user-namespace modes, and must be refused; afterwards the daemon, the victim container and
the host must be as they were. An attack that works today is a strict xfail naming its hole.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from .arena import Arena
from .conftest import Judge, modes


@modes()
def test_disclosure_open_by_handle_at_bind_file(arena: Arena, mode: str, judge: Judge,
                                                 unaffected: Callable[[], None]) -> None:
    """The "shocker" attack: a forged handle of the root directory of the file system behind a
    BIND_FILE mount, then any file below it (here the host's secret)."""
    out = arena.attack(mode, "obh", "/opt/bind-ro.txt", "host/secret.txt", "read")
    if out.verdict == "SUCCEEDED":
        assert arena.host_secret in out.text, out.output  # it really is the host's file
    judge(out)
    unaffected()


@modes()
@pytest.mark.req("TSF Container Isolation")
def test_disclosure_open_by_handle_at_other_container_image(arena: Arena, mode: str, judge: Judge,
                                                             unaffected: Callable[[], None]) -> None:
    """Through the same forged handle: the victim container's data image, searched for the
    canary the victim wrote into its /data."""
    rel = f"cmld-base/containers/{arena.victim_uuid}/data.img"
    out = arena.attack(mode, "obh", "/opt/bind-ro.txt", rel, "grep", arena.canary)
    judge(out)
    unaffected()


@modes()
def test_disclosure_open_by_handle_at_capability(arena: Arena, mode: str, judge: Judge,
                                                 unaffected: Callable[[], None]) -> None:
    """The root of the above: open_by_handle_at itself (on the container's own root, where no
    bind mount is involved) must be refused."""
    judge(arena.attack(mode, "handle_own"))
    unaffected()


@modes()
def test_disclosure_bpf_tracepoint_lists_host_processes(arena: Arena, mode: str, judge: Judge,
                                                        unaffected: Callable[[], None]) -> None:
    assert arena.sentinel is not None
    out = arena.attack(mode, "bpf_procs", str(arena.sentinel.pid))
    judge(out)
    unaffected()


@modes()
def test_disclosure_bpf_reads_host_process_memory(arena: Arena, mode: str, judge: Judge,
                                                  unaffected: Callable[[], None]) -> None:
    """probe_read_kernel of a host process's registers, probe_read_user of its buffer."""
    assert arena.sentinel is not None
    out = arena.attack(mode, "bpf_readmem", str(arena.sentinel.pid))
    if out.verdict == "SUCCEEDED":
        assert arena.sentinel.secret in out.text, out.output
    judge(out)
    unaffected()


@modes()
def test_disclosure_perf_event_all_cpus_and_kernel(arena: Arena, mode: str, judge: Judge,
                                                   unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "perf_all"))
    unaffected()


@modes()
def test_disclosure_keyring_daemon_session_key(arena: Arena, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """A key in cmld's session keyring (the arena gave cmld one) must not be readable."""
    desc, payload = arena.cmld_key
    out = arena.attack(mode, "keys_list", "session", desc)
    if out.verdict == "SUCCEEDED":
        assert payload in out.text, out.output
    judge(out)
    unaffected()


@modes()
@pytest.mark.req("TSF Container Isolation")
def test_disclosure_keyring_other_container_key(arena: Arena, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """The victim puts a key in its session keyring; the attacker looks for it in its own."""
    desc = f"atk-victim-{mode}"
    payload = "victim-key-" + os.urandom(6).hex()
    arena.victim_key(desc, payload)
    out = arena.attack(mode, "keys_list", "session", desc)
    if out.verdict == "SUCCEEDED":
        assert payload in out.text, out.output
    judge(out)
    unaffected()


@modes()
def test_disclosure_proc_masks_removable(arena: Arena, mode: str, judge: Judge,
                                        unaffected: Callable[[], None]) -> None:
    """/proc/keys, /proc/timer_list, /proc/interrupts... are masked; unmounting a mask or
    mounting a fresh proc must not show them."""
    judge(arena.attack(mode, "proc_unmask"))
    unaffected()


@modes()
def test_disclosure_kernel_log_syslog(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "sys", "syslog"))
    unaffected()


@modes()
@pytest.mark.req("OS 05")
def test_disclosure_host_process_memory_by_pid(arena: Arena, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """process_vm_readv, ptrace and /proc/<pid>/mem of the host sentinel, by its host PID and
    the address of its secret (the worst case: the attacker knows both)."""
    s = arena.sentinel
    assert s is not None
    judge(arena.attack(mode, "pid_attack", str(s.pid), s.addr, s.secret))
    unaffected()


@modes()
@pytest.mark.req("TSF Container Isolation")
def test_disclosure_other_container_process_memory(arena: Arena, mode: str, judge: Judge,
                                                   unaffected: Callable[[], None]) -> None:
    """The same against a process of the victim container, by its host PID and by its PID
    inside the victim."""
    host_pid, inner_pid, addr, secret = arena.victim_sleeper
    by_host_pid = judge(arena.attack(mode, "pid_attack", str(host_pid), addr, secret))
    by_inner_pid = judge(arena.attack(mode, "pid_attack", str(inner_pid), addr, secret))
    assert by_host_pid.verdict == by_inner_pid.verdict == "blocked"
    unaffected()


@modes()
def test_disclosure_exec_helper_proc_files(arena: Arena, mode: str, judge: Judge,
                                          unaffected: Callable[[], None]) -> None:
    """The exec helper that `cml-control run` puts into the container is a process of the
    container's PID namespace: its command line, environment and memory map must not tell the
    container about the host (host PIDs, cgroup paths, binaries and their addresses)."""
    judge(arena.attack(mode, "helper", "procfiles"))
    unaffected()


@modes()
def test_disclosure_cgroup2_host_hierarchy(arena: Arena, mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "cgroup2_view"))
    unaffected()


DEVICES = {
    "mem": ("c", 1, 1),
    "port": ("c", 1, 4),
    "kmsg": ("c", 1, 11),
}


def _disk(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return ("b", os.major(st.st_rdev), os.minor(st.st_rdev))


@pytest.mark.parametrize("device", ["mem", "port", "kmsg", "host_disk", "arena_disk", "victim_volume"])
@modes()
@pytest.mark.req("TSF Device Access Control", "CR 7.7")
def test_disclosure_device(arena: Arena, mode: str, device: str, judge: Judge,
                           unaffected: Callable[[], None]) -> None:
    """mknod of a device the container is not given, then open and read it: kernel memory, I/O
    ports, the kernel log, the host's root disk, the arena's disk, and the loop device behind
    the victim container's data volume."""
    if device in DEVICES:
        t, major, minor = DEVICES[device]
    elif device == "host_disk":
        root_dev = os.stat("/").st_dev
        t, major, minor = "b", os.major(root_dev), os.minor(root_dev)
    elif device == "arena_disk":
        assert arena.fs is not None
        t, major, minor = _disk(arena.fs.device)
    else:
        import subprocess

        loops = subprocess.run(["losetup", "-j", str(arena.base / "containers" / arena.victim_uuid / "data.img")],
                               capture_output=True, text=True, check=True).stdout
        assert loops, "the victim's data image is not on a loop device"
        t, major, minor = _disk(loops.split(":")[0])
    judge(arena.attack(mode, "dev", t, str(major), str(minor)))
    unaffected()


@modes()
@pytest.mark.req("CR 5.1", "NDR 5.2", "CR 7.7")
def test_disclosure_network_interfaces_only_lo(arena: Arena, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """Only lo and the container's own veth (the original's default `host0`): no interface of the
    host or of another container."""
    judge(arena.attack(mode, "net_ifaces", "host0"))
    unaffected()


@modes()
@pytest.mark.req("CR 5.1", "NDR 5.2")
def test_disclosure_network_host_services(arena: Arena, mode: str, judge: Judge,
                                          unaffected: Callable[[], None]) -> None:
    """A TCP listener of the host (on every address) and the usual ways out: nothing reachable.
    The container has a route (its `host0` to the router); the firewall and the router's
    namespace, not a missing route, keep the host and the outside away."""
    import socket

    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # listening everywhere on the host: the point
        listener.listen(8)
        port = listener.getsockname()[1]
        targets = [f"127.0.0.1:{port}", "10.0.2.2:53", "8.8.8.8:53", "1.1.1.1:443"]
        addrs = [a for a in _host_addresses() if not a.startswith("127.")]
        targets += [f"{a}:{port}" for a in addrs]
        judge(arena.attack(mode, "net_connect", *targets))
    unaffected()


def _host_addresses() -> list[str]:
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


@modes()
@pytest.mark.req("CR 5.1", "TSF Container Isolation")
def test_disclosure_host_abstract_unix_socket(arena: Arena, mode: str, judge: Judge,
                                              unaffected: Callable[[], None]) -> None:
    import socket

    name = "atk-host-" + os.urandom(4).hex()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("\0" + name)
        s.listen(4)
        judge(arena.attack(mode, "net_abstract", name))
    unaffected()


@modes()
def test_disclosure_host_files_by_chroot_escape(arena: Arena, mode: str, judge: Judge,
                                                unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "chroot_escape", str(arena.hostdir / "secret.txt")))
    unaffected()
