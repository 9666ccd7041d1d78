"""What a container sees of itself: `free` (sysinfo, emulated by the seccomp supervisor) and
/proc/meminfo (cmld's view bound over it) show its ram_limit and its own usage, never the host's;
/dev/console links to the first tty node as the original does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import create, install_guestos, run, start, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


def start_cmld(factory: DaemonFactory, src: Path) -> Daemon:
    base = factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(src, base)
    return factory.start("--stop-timeout", "10", base=base)


def meminfo_kb(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB$", text, re.M)}


@pytest.mark.parametrize("userns", [True, False])
def test_free_and_meminfo_show_the_containers_limit(cmld_factory: DaemonFactory, guestos_src: Path,
                                                    userns: bool) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "mem", ram_limit=96, userns=userns)
    assert start(d, "mem").rc == 0
    wait_state(d, "mem", "RUNNING")
    try:
        host_total = meminfo_kb(Path("/proc/meminfo").read_text())["MemTotal"]
        assert host_total > 96 * 1024  # else the test proves nothing

        info = meminfo_kb(run(d, "mem", "nopty", "cat", "/proc/meminfo").out)
        assert info["MemTotal"] == 96 * 1024, info
        assert 0 < info["MemFree"] < 96 * 1024 and info["MemAvailable"] <= 96 * 1024, info

        # busybox free: sysinfo(2), answered from the cgroup (in KiB)
        out = run(d, "mem", "nopty", "free").out
        mem = next(line.split() for line in out.splitlines() if line.startswith("Mem:"))
        assert int(mem[1]) == 96 * 1024, out
        assert 0 < int(mem[2]) < 96 * 1024, out  # used: what the container itself uses

        # the view follows the container's usage: 12 MiB more in its /run tmpfs shows up
        before = meminfo_kb(run(d, "mem", "nopty", "cat", "/proc/meminfo").out)["MemFree"]
        r = run(d, "mem", "nopty", "sh", "-c", "dd if=/dev/zero of=/run/fill bs=1M count=12 2>/dev/null; "
                "sleep 2.5; cat /proc/meminfo; free; rm /run/fill")
        after = meminfo_kb(r.out)
        assert before - after["MemFree"] >= 11 * 1024, (before, after)
        assert after["Shmem"] >= 12 * 1024, after
        used = next(line.split() for line in r.out.splitlines() if line.startswith("Mem:"))
        assert int(used[4]) >= 12 * 1024 and int(used[3]) <= 84 * 1024, r.out  # shared, free

        # the view is not writable from inside, and it is no procfs of the host
        r = run(d, "mem", "nopty", "sh", "-c", "echo x > /proc/meminfo; echo rc=$?; grep -c . /proc/meminfo; "
                "grep ' /proc/meminfo ' /proc/self/mountinfo")
        assert "rc=1" in r.out, r.out
        mountinfo = r.out.strip().splitlines()[-1]
        assert " - tmpfs " in mountinfo and " ro" in mountinfo, mountinfo
        assert ".cml-meminfo" not in run(d, "mem", "nopty", "ls", "-a", "/run").out
    finally:
        cli(d.socket, "stop", "mem")
    wait_state(d, "mem", "STOPPED")


def test_dev_console_links_the_first_tty(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "con", allow_dev="c 4:1 rwm")
    assert start(d, "con").rc == 0
    wait_state(d, "con", "RUNNING")
    try:
        out = run(d, "con", "nopty", "ls", "-l", "/dev/").out
        assert re.search(r"^lrwxrwxrwx .* console -> tty1$", out, re.M), out
        assert run(d, "con", "nopty", "sh", "-c", "test -c /dev/console && echo char").out.strip() == "char"
    finally:
        cli(d.socket, "stop", "con")
    wait_state(d, "con", "STOPPED")


def test_etc_hosts_names_the_container_at_every_boot(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """The in-container service (real cmld, real cservice) writes `127.0.1.1<TAB> <name>` into
    /etc/hosts at every boot, after restoring /etc/hosts.stock when there is one (that restore is
    driven in test_cservice.py); a renamed container (update_config, applied at the next start)
    gets its new name and not the old one's line. The demo GuestOS ships no /etc/hosts, so there is
    no stock copy, as with the original."""
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "hostsa")
    assert start(d, "hostsa").rc == 0
    wait_state(d, "hostsa", "RUNNING")
    assert run(d, "hostsa", "nopty", "cat", "/etc/hosts").out == "127.0.1.1\t hostsa\n"
    assert "No such file" in run(d, "hostsa", "nopty", "cat", "/etc/hosts.stock").out
    conf = cmld_factory.tmp / "renamed.conf"
    conf.write_text('name: "hostsb"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n')
    r = cli(d.socket, "update_config", "hostsa", str(conf))
    assert r.rc == 0, r.out + r.err
    uuid = uuid_of(d, "hostsa")
    assert cli(d.socket, "stop", "hostsa").rc == 0
    wait_state(d, uuid, "STOPPED")  # the new config (and name) applies once stopped
    assert start(d, "hostsb").rc == 0
    wait_state(d, "hostsb", "RUNNING")
    try:
        assert run(d, "hostsb", "nopty", "cat", "/etc/hosts").out == "127.0.1.1\t hostsb\n"
        assert run(d, "hostsb", "nopty", "hostname").out.strip() == "hostsb"
    finally:
        cli(d.socket, "stop", "hostsb")
    wait_state(d, "hostsb", "STOPPED")


def test_allow_module_needs_enforced_signatures(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """allow_module on a kernel that does not enforce module signatures (this host has no module
    support at all): as the original, the flag is stripped, CAP_SYS_MODULE is dropped, and any
    attempt to load a module from inside is refused (EPERM), never passed to the kernel."""
    from cmld.linux import CAP
    from cmld.seccomp.module_policy import sig_enforced

    if sig_enforced():
        pytest.skip("this kernel enforces module signatures: the refusal path does not apply")
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "mods", allow_module="loop", userns=False)
    assert start(d, "mods").rc == 0
    wait_state(d, "mods", "RUNNING")
    try:
        status = run(d, "mods", "nopty", "cat", "/proc/1/status").out
        bnd = int(re.search(r"CapBnd:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
        assert not bnd & (1 << CAP["SYS_MODULE"]), status
        r = run(d, "mods", "nopty", "sh", "-c", "printf 'not a module' > /tmp/loop.ko; insmod /tmp/loop.ko; echo rc=$?")
        assert "rc=0" not in r.out, r.out
        log = d.log_text()
        assert "allow_module ignored: the kernel does not enforce module signatures" in log
        # the strict filter refuses the call itself (EPERM): SYS_MODULE is not kept, so the module
        # calls are not even notified to cmld
    finally:
        cli(d.socket, "stop", "mods")
    wait_state(d, "mods", "STOPPED")
