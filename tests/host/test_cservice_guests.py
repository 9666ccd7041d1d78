"""cmld's in-container service in GuestOSes we did not shape ourselves, against a real cmld.

For each field GuestOS (tests/host/field_guests.py) and with and without a user namespace: the
container reaches RUNNING through the service's BOOT_COMPLETED, its host name, /etc/hosts and
/etc/resolv.conf are as the original writes them, `stop` ends it through the guest itself (never
the kill timer), and so do 20 start/stop cycles. The GuestOS images are byte for byte unchanged.
/sbin/cservice inside is cmld's binary, root:root 0755, read-only (also for the container's root
trying to remount it), on no host file system. Besides: the init fallback, a cmld without the
binary, and a busybox init's `umount -a -r` shutdown leaving the host's /dev, /proc and /sys
writable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from . import field_guests
from .containers import create, host_leaks, install_guestos, run, start, state, uuid_of, wait_state

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not is_root(), reason="needs root (namespaces, loop mounts, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "mksquashfs", "mkfs.ext4", "nsenter"))
                       or not Path("/bin/busybox").exists() or not Path("/bin/dash").exists(),
                       reason="needs gcc, squashfs-tools, e2fsprogs, util-linux, busybox-static, dash"),
]

CSERVICE = Path(sys.prefix) / "libexec" / "cml" / "cservice"  # what this venv's cmld places
CYCLES = 20
DNS = "192.0.2.53"


@pytest.fixture(scope="module", autouse=True)
def installed_cservice_is_current() -> None:
    """cmld places the binary that scripts/setup.sh installed; a stale one would test old code."""
    src = Path(__file__).resolve().parents[2] / "service" / "cservice.c"
    assert CSERVICE.is_file() and CSERVICE.stat().st_mtime >= src.stat().st_mtime, \
        f"{CSERVICE} is missing or older than {src}: run scripts/setup.sh"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("field-guests")
    for g in field_guests.GUESTS.values():
        if g.libc == "musl" and not field_guests.musl_available():
            continue
        field_guests.build(g, out)
    return out


def start_cmld(factory: DaemonFactory, src: Path, name: str, *extra: str) -> Daemon:
    base = factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    field_guests.install(src, base, name)
    # A stop timer far longer than any test wait: a container the timer had to kill fails the test.
    return factory.start("--stop-timeout", "120", *extra, base=base)


def init_pid(d: Daemon, name: str) -> int:
    rec = json.loads((d.base.parent / "cmld-run" / "records" / f"{uuid_of(d, name)}.json").read_text())
    return int(rec["init_pid"])


def image_hashes(d: Daemon) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((d.base / "operatingsystems").rglob("*.img"))}


def host_devs() -> set[int]:
    """st_dev of every file system mounted on the host."""
    devs = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        major, minor = line.split()[2].split(":")
        devs.add(os.makedev(int(major), int(minor)))
    return devs


def inside(pid: int, path: str) -> Path:
    """`path` in the container of `pid`, its symlinks resolved in the container's root (through
    /proc/PID/root an absolute link would otherwise point into the host)."""
    root = Path(f"/proc/{pid}/root")
    p = root / path.lstrip("/")
    for _ in range(8):
        if not p.is_symlink():
            return p
        target = os.readlink(p)
        p = root / target.lstrip("/") if target.startswith("/") else p.parent / target
    raise AssertionError(f"symlink loop at {path}")


def uts_hostname(pid: int) -> str:
    return subprocess.run(["nsenter", "--uts", "-t", str(pid), "hostname"], capture_output=True, text=True,
                          check=True).stdout.strip()


def stop_and_wait(d: Daemon, name: str) -> float:
    t0 = time.monotonic()
    r = cli(d.socket, "stop", name)
    assert r.rc == 0 and "CONTAINER_STOP_OK" in r.out, r.out + r.err
    wait_state(d, name, "STOPPED", timeout=30)
    return time.monotonic() - t0


def start_and_wait(d: Daemon, name: str) -> None:
    r = start(d, name)
    assert r.rc == 0 and "CONTAINER_START_OK" in r.out, r.out + r.err
    wait_state(d, name, "RUNNING", timeout=30)


def check_cservice(pid: int, uid: int) -> None:
    """/sbin/cservice as the container sees it: cmld's binary, root:root 0755 inside, on no host
    file system, and not writable (the bind or overlay is read-only)."""
    path = Path(f"/proc/{pid}/root/sbin/cservice")
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, uid, 0o755)
    assert st.st_dev not in host_devs()
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(CSERVICE.read_bytes()).digest()
    with pytest.raises(OSError) as e:
        path.open("r+b")
    assert e.value.errno == 30  # EROFS


def check_boot(d: Daemon, name: str, guest: str, userns: bool) -> None:
    pid = init_pid(d, name)
    root = Path(f"/proc/{pid}/root")
    uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
    assert (uid != 0) == userns
    check_cservice(pid, uid)
    assert uts_hostname(pid) == name
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    line = f"127.0.1.1\t {name}\n"  # the original's exact line
    if guest == "trustx":
        # `cservice init` exec'd busybox init (which rewrites its argv to "init")
        assert os.readlink(f"/proc/{pid}/exe") == "/bin/busybox" and cmdline[0] == b"init"
        assert b"container=trustm3" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n" + line
        assert (root / "etc/hosts.stock").read_text() == "127.0.0.1\tlocalhost\n"
        assert (root / "etc/resolv.conf").read_text() == f"nameserver {DNS}\n"
        for _ in range(100):  # busybox init's sysinit ran after cservice's boot report
            if (root / "run/rcS.done").exists():
                break
            time.sleep(0.05)
        assert (root / "run/rcS.done").read_text() == "booted\n"
        return
    if guest == "debboot":
        assert cmdline == [b"/bin/sh", b"/sbin/deb-boot"]
        procs = [Path(p).read_bytes() for p in root.glob("proc/[0-9]*/cmdline")]
        assert b"/sbin/cservice\0" in procs  # the handler stays, connected
    else:
        want = {"converter": ["/app/app", "serve", "two words", "x"], "nolibc": ["/app", "serve", "static"],
                "musl": ["/app", "serve", "musl"]}[guest]
        assert cmdline == [b"/sbin/cservice", *(a.encode() for a in want)]
        for _ in range(100):  # the program starts after the boot report
            if (root / "run/app.txt").exists() and (root / "run/app.txt").read_text().count("env=PATH"):
                break
            time.sleep(0.05)
        app = (root / "run/app.txt").read_text().splitlines()
        assert [x[5:] for x in app if x.startswith("argv=")] == want
        assert app[0].split()[1] == "ppid=1"  # cservice is the program's init
        if guest == "converter":
            assert "env=GREETING=hello world" in app
    assert inside(pid, "/etc/hosts").read_text() == line  # no stock file in these images
    assert inside(pid, "/etc/resolv.conf").read_text() == f"nameserver {DNS}\n"


GUEST_IDS = [g for g in field_guests.GUESTS
             if (g != "musl" or field_guests.musl_available()) and g != "leaver"]


@pytest.mark.timeout(900)  # 20 cycles; a busybox init's halt alone takes two seconds
@pytest.mark.parametrize("userns", [True, False], ids=["userns", "no-userns"])
@pytest.mark.parametrize("guest", GUEST_IDS)
def test_field_guestos_boots_reports_and_stops(cmld_factory: DaemonFactory, built: Path, guest: str,
                                               userns: bool) -> None:
    d = start_cmld(cmld_factory, built, guest)
    before = image_hashes(d)
    name = f"c-{guest}"
    create(d, cmld_factory.tmp, name, guest, userns=userns, dns_server=DNS)
    uuid = uuid_of(d, name)
    stops = []
    for cycle in range(CYCLES if userns else 2):
        start_and_wait(d, name)
        if cycle == 0:
            check_boot(d, name, guest, userns)
        stops.append(stop_and_wait(d, name))
    log = d.log_text()
    assert f"container {name}: service reports boot completed" in log
    assert log.count(f"container {name} ({uuid}): BOOTING -> RUNNING") == len(stops)
    assert "stop timeout" not in log and "killing" not in log, log[-3000:]
    ends = re.findall(rf"container {name}: init \d+ ended \((.*?)\)", log)
    assert len(ends) == len(stops)
    # The guest ended itself: busybox init's halt, the handler's namespace poweroff, or cservice
    # after its program (which exits 0 on SIGTERM, or dies of it when the stop came before the
    # program had set up its handler: the service reports the boot before it starts the program).
    expected = {"signal SIGINT"} if guest in ("trustx", "debboot") else {"exit code 0", "exit code 143"}
    assert set(ends) <= expected, ends
    assert image_hashes(d) == before
    assert host_leaks(d.base.parent / "cmld-run", [uuid]) == []
    print(f"\n{guest} ({'userns' if userns else 'no userns'}): {len(stops)} stops, "
          f"{min(stops):.2f}..{max(stops):.2f} s")


def test_trustx_shutdown_actions_run_and_persist(cmld_factory: DaemonFactory, built: Path) -> None:
    """The OVERLAY_RW /etc keeps what rcK wrote at each stop, and cservice's /etc/hosts restores
    the stock copy at each boot (one line for the name, whatever the number of boots)."""
    d = start_cmld(cmld_factory, built, "trustx")
    create(d, cmld_factory.tmp, "tx", "trustx", dns_server=DNS)
    for _ in range(3):
        start_and_wait(d, "tx")
        stop_and_wait(d, "tx")
    start_and_wait(d, "tx")
    root = Path(f"/proc/{init_pid(d, 'tx')}/root")
    assert (root / "etc/shutdown.log").read_text() == "rcK\n" * 3
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\t tx\n"
    stop_and_wait(d, "tx")


def test_converter_program_exit_ends_the_container(cmld_factory: DaemonFactory, built: Path, tmp_path: Path) -> None:
    """The program of `cservice PROG` ends by itself: the container ends with its status (the
    original keeps an empty PID 1 and a RUNNING container)."""
    src = tmp_path / "gos"
    shutil.copytree(built / "converter-1", src / "converter-1")
    conf = (built / "converter-1.conf").read_text()
    conf = conf.replace('init_param: "serve"\ninit_param: "two words"\ninit_param: "x"',
                        'init_param: "exit"\ninit_param: "3"')
    assert 'init_param: "exit"' in conf
    (src / "converter-1.conf").write_text(conf)
    d = start_cmld(cmld_factory, src, "converter")
    create(d, cmld_factory.tmp, "once", "converter")
    r = start(d, "once")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "once", "STOPPED", timeout=30)
    log = d.log_text()
    assert "container once: service reports boot completed" in log
    assert re.search(r"container once: init \d+ ended \(exit code 3\)", log), log[-2000:]


def test_a_service_that_leaves_after_shutdown_does_not_leave_the_stop_to_the_timer(
        cmld_factory: DaemonFactory, built: Path) -> None:
    """The client that got SHUTDOWN closes and the container is still up (as when a stop meets
    `cservice init` between its boot report and its exec): the stop goes on with `halt`."""
    d = start_cmld(cmld_factory, built, "leaver")
    create(d, cmld_factory.tmp, "lv", "leaver")
    start_and_wait(d, "lv")
    stop_and_wait(d, "lv")
    log = d.log_text()
    assert "container lv: SHUTDOWN sent to the service" in log
    assert "container lv: the service closed its connection after SHUTDOWN and the container is still up" in log
    assert "container lv: halt in the container: exit 0" in log
    assert "stop timeout" not in log and re.search(r"container lv: init \d+ ended \(signal SIGINT\)", log)


# ------------------------------------------------------------------ /sbin/cservice from the container's root


@pytest.mark.parametrize("userns", [True, False], ids=["userns", "no-userns"])
@pytest.mark.parametrize("guest", ["demo", "trustx"])
def test_container_root_cannot_change_sbin_cservice(cmld_factory: DaemonFactory, built: Path, guestos_src: Path,
                                                    guest: str, userns: bool) -> None:
    """demo: read-only root, /sbin an overlay; trustx: writable root, /sbin/cservice a bind."""
    if guest == "demo":
        base = cmld_factory.tmp / "cmld-base"
        base.mkdir()
        install_guestos(guestos_src, base)
        d = cmld_factory.start("--stop-timeout", "120", base=base)
        gos = "busybox"
    else:
        d = start_cmld(cmld_factory, built, "trustx")
        gos = "trustx"
    create(d, cmld_factory.tmp, "rw", gos, userns=userns)
    start_and_wait(d, "rw")
    pid = init_pid(d, "rw")
    attempts = {
        "write": "echo x > /sbin/cservice",
        "append": "echo x >> /sbin/cservice",
        "replace": "cp /bin/busybox /sbin/cservice",
        "remove": "rm -f /sbin/cservice",
        "rename": "mv /sbin/cservice /sbin/cservice.old",
        "chmod": "chmod 4755 /sbin/cservice",
        "remount": "mount -o remount,rw /sbin/cservice",
        "remount-bind": "mount -o remount,bind,rw /sbin/cservice",
        "remount-sbin": "mount -o remount,rw /sbin",
        "umount": "umount /sbin/cservice",
        "umount-lazy": "umount -l /sbin/cservice",
        "umount-sbin": "umount -l /sbin",
    }
    for what, script in attempts.items():
        r = run(d, "rw", "nopty", "sh", "-c", script)
        assert r.rc != 0, (what, r.out, r.err)
    uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
    check_cservice(pid, uid)
    r = run(d, "rw", "nopty", "sh", "-c", "stat -c '%u %g %a' /sbin/cservice; grep -E ' /sbin(/cservice)? ' "
            "/proc/self/mountinfo")
    lines = r.out.splitlines()
    assert lines[0] == "0 0 755", r.out
    assert all(" ro," in line and "nosuid" in line and "nodev" in line if "cservice" in line.split()[4]
               else " ro," in line for line in lines[1:]), r.out
    stop_and_wait(d, "rw")


# ------------------------------------------------------------------ init fallback and a missing binary


def test_missing_init_falls_back_to_cservice_with_the_same_argv(cmld_factory: DaemonFactory,
                                                                guestos_src: Path) -> None:
    """init_path not in the container -> /sbin/cservice with [init_path, *init_param]. Also when
    init_path exists on the host (the original's rule looks there)."""
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    host_only = "/usr/bin/python3"
    assert Path(host_only).exists()
    install_guestos(guestos_src, base, name="noinit", init_path=host_only, init_param=["sleep", "1000"])
    install_guestos(guestos_src, base, name="bare", init_path="/sbin/nonexistent", init_param=[])
    d = cmld_factory.start("--stop-timeout", "120", base=base)
    create(d, cmld_factory.tmp, "fb", "noinit")
    create(d, cmld_factory.tmp, "fb2", "bare")
    for name in ("fb", "fb2"):
        start_and_wait(d, name)
    pid = init_pid(d, "fb")
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == f"{host_only}\0sleep\x001000\0".encode()
    assert os.readlink(f"/proc/{pid}/exe").endswith("/cservice")
    assert run(d, "fb", "nopty", "sh", "-c", "cat /proc/[0-9]*/comm").out.split().count("sleep") == 1
    pid2 = init_pid(d, "fb2")
    assert Path(f"/proc/{pid2}/cmdline").read_bytes() == b"/sbin/nonexistent\0"
    log = d.log_text()
    assert f"container fb: init {host_only} is not in the container: running /sbin/cservice" in log
    assert "container fb2: init /sbin/nonexistent is not in the container: running /sbin/cservice" in log
    for name in ("fb", "fb2"):  # SHUTDOWN reaches the connected cservice: it ends the container
        stop_and_wait(d, name)
    log = d.log_text()
    assert re.search(r"container fb: init \d+ ended \(exit code 143\)", log)  # sleep got SIGTERM
    assert re.search(r"container fb2: init \d+ ended \(exit code 0\)", log)


def test_missing_cservice_binary_is_a_clear_error(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)  # init_path /sbin/cservice
    install_guestos(guestos_src, base, name="own-init", init_path="/sbin/init", init_param=[])
    d = cmld_factory.start("--cservice", "/nonexistent/cservice", base=base)
    assert ("no usable cservice binary: --cservice /nonexistent/cservice: No such file or directory: "
            "containers whose init is /sbin/cservice") in d.log_text()
    create(d, cmld_factory.tmp, "needs")
    r = start(d, "needs")
    assert r.rc != 0 and "CONTAINER_START_EINTERNAL" in r.out, r.out
    assert ('error_message: "init /sbin/cservice is not available in the container: no usable cservice binary: '
            '--cservice /nonexistent/cservice: No such file or directory"') in r.out, r.out
    assert state(d, "needs") == "STOPPED"
    assert host_leaks(d.base.parent / "cmld-run", [uuid_of(d, "needs")]) == []
    # a GuestOS with its own init does not need it
    create(d, cmld_factory.tmp, "own", "own-init")
    r = start(d, "own")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "own", "BOOTING")
    assert cli(d.socket, "list").rc == 0


def test_a_non_elf_cservice_is_refused_at_start(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    script = tmp_path / "cservice"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    d = cmld_factory.start("--cservice", str(script))
    assert f"--cservice {script} is not an ELF executable" in d.log_text()


# ------------------------------------------------------------------ busybox init shutdown and the host


def mount_options(points: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Per-mount and super-block options of the host's mounts at `points`."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] in points:
            found[fields[4]] = (fields[5], fields[fields.index("-") + 3])
    return found


def test_busybox_init_shutdown_leaves_the_host_writable(cmld_factory: DaemonFactory, built: Path,
                                                        guestos_src: Path) -> None:
    """`umount -a -r` (GyroidOS's inittab, our demo's too) runs at every stop of these containers;
    with and without a user namespace, it must leave the host's /dev, /proc and /sys as they were."""
    points = ("/dev", "/proc", "/sys", "/dev/shm", "/dev/pts", "/sys/fs/cgroup", "/run")
    before = mount_options(points)
    assert all(opts[0].startswith("rw") for p, opts in before.items() if p in ("/dev", "/proc", "/sys")), before
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    field_guests.install(built, base, "trustx")
    d = cmld_factory.start("--stop-timeout", "120", base=base)
    for name, gos, userns in (("bu", "busybox", True), ("bn", "busybox", False), ("tu", "trustx", True),
                              ("tn", "trustx", False)):
        create(d, cmld_factory.tmp, name, gos, userns=userns)
        start_and_wait(d, name)
        stop_and_wait(d, name)
    log = d.log_text()
    assert log.count("halt in the container: exit 0") == 4
    assert mount_options(points) == before
    probe = Path(f"/dev/.cml-cservice-probe-{os.getpid()}")
    probe.write_text("x")
    probe.unlink()
    Path("/proc/self/comm").write_text("pytest")  # a /proc write of our own
    for p in ("/dev", "/proc", "/sys"):
        assert not os.statvfs(p).f_flag & os.ST_RDONLY, p
