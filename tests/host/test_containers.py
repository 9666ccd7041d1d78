"""Real containers from the busybox GuestOS, checked from the inside and the outside."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import create, host_leaks, install_guestos, run, start, state, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]



def start_cmld(factory: DaemonFactory, src: Path, *extra: str, **gos: object) -> Daemon:
    base = factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(src, base, **gos)
    return factory.start("--stop-timeout", "10", *extra, base=base)


def run_dir(d: Daemon) -> Path:
    return d.base.parent / "cmld-run"


def init_pid(d: Daemon, uuid: str) -> int:
    rec = json.loads((run_dir(d) / "records" / f"{uuid}.json").read_text())
    return int(rec["init_pid"])


def out_of(d: Daemon, name: str, *argv: str) -> str:
    r = run(d, name, "nopty", *argv)
    assert r.rc == 0, (r.rc, r.out, r.err)
    return r.out


def cap_mask(names: frozenset[str]) -> int:
    from cmld.linux import CAP

    mask = 0
    for n in names:
        mask |= 1 << CAP[n]
    return mask


@pytest.mark.req("OS 01", "TSF Container Isolation")
def test_userns_container_isolation(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "iso", ram_limit=64, assign_cpus="0")
    r = start(d, "iso")
    assert r.rc == 0 and "CONTAINER_START_OK" in r.out, r.out + r.err
    wait_state(d, "iso", "RUNNING")
    uuid = uuid_of(d, "iso")
    pid = init_pid(d, uuid)

    # own PID 1 (busybox init), hostname from the service, an own netns with lo up and the
    # original's default veth `host0` (tests/host/test_network.py has the rest)
    assert out_of(d, "iso", "cat", "/proc/1/comm").strip() == "init"
    assert out_of(d, "iso", "hostname").strip() == "iso"
    assert out_of(d, "iso", "ls", "/sys/class/net").split() == ["host0", "lo"]
    assert "UP" in out_of(d, "iso", "ip", "link", "show", "lo")
    assert Path(f"/run/netns/{uuid}").exists()
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    # user namespace: uid 0 is host uid 100000 + k*100000, 65536 IDs
    fields = out_of(d, "iso", "cat", "/proc/self/uid_map").split()
    assert fields[0] == "0" and int(fields[1]) % 100000 == 0 and int(fields[1]) >= 100000 and fields[2] == "65536"
    assert os.stat(f"/proc/{pid}").st_uid == int(fields[1])
    # capability bounding set: exactly the allow list of an ordinary userns container, in init and
    # in an exec session, and nothing effective, permitted or inheritable beyond it
    from cmld.modules.capabilities import kept_caps

    kept = cap_mask(kept_caps(userns=True, c0=False, setup=False, allow_modules=False, allow_time=False))
    for where in ("/proc/1/status", "/proc/self/status"):
        status = out_of(d, "iso", "cat", where)
        for field in ("CapBnd", "CapEff", "CapPrm"):
            assert int(re.search(rf"{field}:\s*([0-9a-f]+)", status).group(1), 16) == kept, (where, field)  # type: ignore[union-attr]
        for field in ("CapInh", "CapAmb"):
            assert int(re.search(rf"{field}:\s*([0-9a-f]+)", status).group(1), 16) == 0, (where, field)  # type: ignore[union-attr]
    # no fd of the daemon in init: only its stdio, all the container's own /dev/null
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert set(fds) == {"0", "1", "2"} and set(fds.values()) == {"/dev/null"}, fds
    inside_fds = out_of(d, "iso", "ls", "-l", "/proc/1/fd")
    assert "socket" not in inside_fds and "pipe" not in inside_fds and ".log" not in inside_fds
    # /dev, /proc, /sys are fresh superblocks; a remount inside does not reach the host
    for path in ("/dev", "/proc", "/sys"):
        assert os.stat(f"/proc/{pid}/root{path}").st_dev != os.stat(path).st_dev, path
    run(d, "iso", "nopty", "mount", "-o", "remount,ro", "/dev")
    host_dev = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if ln.split()[4] == "/dev"]
    assert (host_dev and " rw," in host_dev[0] + ",") or host_dev[0].split()[5].startswith("rw"), host_dev
    assert not os.path.exists(f"/proc/{pid}/root/dev/mem")
    # devices: allowed ones open; /dev/mem (c 1:1) can be neither created nor opened
    assert out_of(d, "iso", "sh", "-c", "echo x > /dev/null && head -c 4 /dev/urandom | wc -c").strip() == "4"
    r = run(d, "iso", "nopty", "mknod", "/dev/mem", "c", "1", "1")
    assert r.rc != 0
    r = run(d, "iso", "nopty", "mknod", "/dev/null2", "c", "1", "3")
    assert r.rc == 0, r.out + r.err  # allowed device: emulated by cmld's seccomp supervisor
    assert out_of(d, "iso", "sh", "-c", "echo hi > /dev/null2 && echo ok").strip() == "ok"
    # cgroups: memory limit, cpuset, pids limit
    cg = json.loads((run_dir(d) / "records" / f"{uuid}.json").read_text())["cgroup_dirs"]
    mem = next(Path(p) for p in cg if "/memory/" in p)
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert "Cpus_allowed_list:\t0\n" in out_of(d, "iso", "cat", "/proc/self/status")
    pids = next(Path(p) for p in cg if "/pids/" in p)
    assert int((pids / "pids.max").read_text()) > 0
    # exec relays stdout and stderr and the exit status
    r = run(d, "iso", "nopty", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.rc == 7 and "out" in r.out and "err" in r.out
    # time namespace: the container's uptime starts at its start
    assert float(out_of(d, "iso", "cut", "-d.", "-f1", "/proc/uptime").strip()) < 60

    # freeze stops the processes, unfreeze resumes them
    out_of(d, "iso", "sh", "-c", "(while true; do echo x >> /tmp/cnt; sleep 0.01; done) </dev/null >/dev/null 2>&1 &")
    cnt = Path(f"/proc/{pid}/root/tmp/cnt")
    time.sleep(0.3)
    assert cli(d.socket, "freeze", "iso").rc == 0
    assert state(d, "iso") == "FROZEN"
    n1 = len(cnt.read_text())
    time.sleep(0.3)
    assert len(cnt.read_text()) == n1
    assert cli(d.socket, "unfreeze", "iso").rc == 0
    assert state(d, "iso") == "RUNNING"
    time.sleep(0.3)
    assert len(cnt.read_text()) > n1

    # stop: SHUTDOWN to the service, busybox init powers off, STOPPED, nothing left behind
    r = cli(d.socket, "stop", "iso")
    assert r.rc == 0 and "CONTAINER_STOP_OK" in r.out
    wait_state(d, "iso", "STOPPED", timeout=15)
    assert host_leaks(run_dir(d), [uuid]) == []
    log = d.log_text()
    for a, b in (("STOPPED", "STARTING"), ("STARTING", "BOOTING"), ("BOOTING", "RUNNING"), ("RUNNING", "FREEZING"),
                 ("FREEZING", "FROZEN"), ("FROZEN", "RUNNING"), ("RUNNING", "SHUTDOWN"), ("SHUTDOWN", "STOPPED")):
        assert f"{a} -> {b}" in log, (a, b)


@pytest.mark.req("OS 01")
def test_container_without_userns(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "nous", userns=False, allow_dev="c 10:237 rwm")
    assert start(d, "nous").rc == 0
    wait_state(d, "nous", "RUNNING")
    uuid = uuid_of(d, "nous")
    assert out_of(d, "nous", "cat", "/proc/self/uid_map").split() == ["0", "0", "4294967295"]
    status = out_of(d, "nous", "cat", "/proc/1/status")
    bnd = int(re.search(r"CapBnd:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
    from cmld.linux import CAP

    for cap in ("SYS_ADMIN", "SYS_MODULE", "SYS_TIME", "SYS_CHROOT", "MAC_ADMIN"):
        assert not bnd & (1 << CAP[cap]), cap
    assert bnd & (1 << CAP["MKNOD"])
    # without CAP_SYS_ADMIN nothing can be (re)mounted, so host superblocks are safe
    for argv in (("mount", "-t", "tmpfs", "x", "/mnt"), ("mount", "-o", "remount,ro", "/proc")):
        r = run(d, "nous", "nopty", *argv)
        assert r.rc != 0 and re.search("not permitted|permission denied", r.out + r.err, re.I), (argv, r.out, r.err)
    # the devices cgroup: /dev/mem can neither be made nor opened; the allowed loop-control can
    assert run(d, "nous", "nopty", "mknod", "/dev/mem", "c", "1", "1").rc != 0
    assert run(d, "nous", "nopty", "mknod", "/dev/lc2", "c", "10", "237").rc == 0
    assert out_of(d, "nous", "sh", "-c", "exec 3</dev/lc2 && echo opened").strip() == "opened"
    # a runtime DEV_ACCESS grant of /dev/mem's number makes mknod possible, a deny takes it away
    assert cli(d.socket, "dev_access", "nous", "c 1:1 rwm").rc == 0
    assert run(d, "nous", "nopty", "mknod", "/dev/mem", "c", "1", "1").rc == 0
    assert cli(d.socket, "dev_access", "nous", "c 1:1 rw").rc == 0
    r = run(d, "nous", "nopty", "head", "-c", "1", "/dev/mem")
    assert r.rc != 0 and "not permitted" in r.out.lower(), r.out
    assert cli(d.socket, "stop", "nous").rc == 0
    wait_state(d, "nous", "STOPPED", timeout=15)
    assert host_leaks(run_dir(d), [uuid]) == []


@pytest.mark.req("CR 4.2 (2)")
def test_reboot_setup_volumes_and_wipe(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "vol")
    uuid = uuid_of(d, "vol")
    assert start(d, "vol").rc == 0
    wait_state(d, "vol", "RUNNING")
    # the EMPTY data image was created on first start and keeps its content
    out_of(d, "vol", "sh", "-c", "echo kept > /data/file && sync")
    assert (d.base / "containers" / uuid / "data.img").exists()
    # reboot inside: init exits by SIGHUP -> REBOOTING -> started again
    pid1 = init_pid(d, uuid)
    run(d, "vol", "nopty", "reboot")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rec = run_dir(d) / "records" / f"{uuid}.json"
        if rec.exists() and init_pid(d, uuid) not in (0, pid1) and state(d, "vol") == "RUNNING":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(d.log_text()[-2000:])
    assert "RUNNING -> REBOOTING" in d.log_text()
    assert out_of(d, "vol", "cat", "/data/file").strip() == "kept"
    assert cli(d.socket, "stop", "vol").rc == 0
    wait_state(d, "vol", "STOPPED", timeout=15)
    # setup mode
    assert start(d, "vol", "--setup").rc == 0
    wait_state(d, "vol", "SETUP")
    assert cli(d.socket, "stop", "vol").rc == 0
    wait_state(d, "vol", "STOPPED", timeout=15)
    # wipe deletes the container's images
    assert cli(d.socket, "wipe", "vol").rc == 0
    assert not list((d.base / "containers" / uuid).glob("*.img"))
    assert host_leaks(run_dir(d), [uuid]) == []


def test_autostart_and_cmld_stop_ends_containers(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "auto", allow_autostart=True)
    create(d, cmld_factory.tmp, "manual")
    uuids = [uuid_of(d, "auto"), uuid_of(d, "manual")]
    assert d.stop() == 0
    d2 = cmld_factory.start("--stop-timeout", "10", base=d.base)
    wait_state(d2, "auto", "RUNNING")
    assert state(d2, "manual") == "STOPPED"
    assert d2.stop() == 0  # a stopping cmld stops its containers
    assert host_leaks(run_dir(d2), uuids) == []
