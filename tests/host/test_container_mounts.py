"""Every GuestOS mount type in a real container: SHARED_RW, OVERLAY_RO, OVERLAY_RW, BIND_FILE(_RW),
with and without a user namespace, checked from the inside, on the host and across a restart."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file, to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import create, host_leaks, install_guestos, run, start, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
M = GuestOSMount



def ext4_image(img: Path, files: dict[str, str]) -> M:
    """A small ext4 image holding `files`; returns the SHARED-style mount entry with size and hash."""
    staging = img.with_suffix(".d")
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(staging), "-E", "root_owner=0:0", "-O", "^has_journal",
                    str(img), "2M"], check=True, capture_output=True)
    data = img.read_bytes()
    return M(image_file=img.stem, fs_type="ext4", image_size=len(data),
             image_sha2_256=hashlib.sha256(data).hexdigest())


def start_cmld_with_mounts(factory: DaemonFactory, src: Path, *, bind_source: bool = True) -> Daemon:
    base = factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(src, base, name="mounts")
    conf_path = base / "operatingsystems" / "mounts-1.conf"
    img_dir = base / "operatingsystems" / "mounts-1"
    cfg = load_text_file(conf_path, GuestOSConfig)
    opt = ext4_image(img_dir / "opt.img", {"share/hello.txt": "hello from opt\n"})
    opt.mount_point, opt.mount_type = "/opt", M.SHARED_RW
    etc = ext4_image(img_dir / "etcx.img", {"motd": "motd from etcx\n", "issue": "issue from etcx\n",
                                            "notes": "notes from etcx\n"})
    etc.mount_point, etc.mount_type = "/etc", M.OVERLAY_RO
    usr = M(image_file="usr", mount_point="/usr", fs_type="ext4", mount_type=M.OVERLAY_RW,
            def_size=16, min_size=10, max_size=64)
    issue = M(image_file="issue.txt", mount_point="/etc/issue", fs_type="none", mount_type=M.BIND_FILE)
    notes = M(image_file="notes.txt", mount_point="/etc/notes", fs_type="none", mount_type=M.BIND_FILE_RW)
    cfg.mounts.extend([opt, etc, usr, issue, notes])
    conf_path.write_text(to_text(cfg))
    shared = base / "files_shared"
    shared.mkdir(exist_ok=True)
    if bind_source:
        (shared / "issue.txt").write_text("issue from the host\n")
    (shared / "notes.txt").write_text("notes from the host\n")
    return factory.start("--stop-timeout", "10", base=base)


def sh(d: Daemon, name: str, script: str) -> tuple[int, str]:
    r = run(d, name, "nopty", "sh", "-c", script)
    return r.rc, r.out + r.err


def ok(d: Daemon, name: str, script: str) -> str:
    rc, out = sh(d, name, script)
    assert rc == 0, (script, out)
    return out


def restart(d: Daemon, name: str) -> None:
    assert cli(d.socket, "stop", name).rc == 0
    wait_state(d, name, "STOPPED", timeout=15)
    assert start(d, name).rc == 0
    wait_state(d, name, "RUNNING")


def test_mount_types_without_userns(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld_with_mounts(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "mt", "mounts", userns=False)
    r = start(d, "mt")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "mt", "RUNNING")
    uuid = uuid_of(d, "mt")
    base = cmld_factory.tmp / "cmld-base"
    opt_img = base / "operatingsystems" / "mounts-1" / "opt.img"
    opt_sha = hashlib.sha256(opt_img.read_bytes()).hexdigest()

    # SHARED_RW: the image's files, writable, the writes on a tmpfs that a restart drops
    assert ok(d, "mt", "cat /opt/share/hello.txt") == "hello from opt\n"
    ok(d, "mt", "echo scratch > /opt/new && echo more >> /opt/share/hello.txt")
    assert ok(d, "mt", "cat /opt/share/hello.txt") == "hello from opt\nmore\n"
    # OVERLAY_RO: the image's files over the root's /etc, both visible, nothing writable
    assert ok(d, "mt", "cat /etc/motd") == "motd from etcx\n"
    assert ok(d, "mt", "grep -c root /etc/passwd").strip() == "1"
    rc, out = sh(d, "mt", "touch /etc/new")
    assert rc != 0 and "read-only" in out.lower(), out
    # OVERLAY_RW: the root's /usr under the container's own image; writes persist
    assert ok(d, "mt", "test -x /usr/bin/env && echo yes").strip() == "yes"
    ok(d, "mt", "echo kept > /usr/persist")
    # BIND_FILE is read-only, BIND_FILE_RW writes through to the host file
    assert ok(d, "mt", "cat /etc/issue") == "issue from the host\n"
    rc, out = sh(d, "mt", "echo x > /etc/issue")
    assert rc != 0 and "read-only" in out.lower(), out
    ok(d, "mt", "echo written inside > /etc/notes")
    assert (base / "files_shared" / "notes.txt").read_text() == "written inside\n"
    mounts = ok(d, "mt", "cat /proc/self/mountinfo")
    for point in ("/opt", "/etc", "/usr"):
        assert any(f" {point} " in line and "overlay" in line for line in mounts.splitlines()), (point, mounts)

    restart(d, "mt")
    assert ok(d, "mt", "cat /opt/share/hello.txt") == "hello from opt\n"
    assert sh(d, "mt", "test -e /opt/new")[0] != 0
    assert ok(d, "mt", "cat /usr/persist") == "kept\n"
    # the shared image itself was never written (and passed the hash check at the restart)
    assert hashlib.sha256(opt_img.read_bytes()).hexdigest() == opt_sha
    assert (base / "containers" / uuid / "usr.img").is_file()

    assert cli(d.socket, "stop", "mt").rc == 0
    wait_state(d, "mt", "STOPPED", timeout=15)
    assert host_leaks(d.base.parent / "cmld-run", [uuid]) == []


def test_mount_types_with_userns(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld_with_mounts(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "mtu", "mounts", userns=True)
    r = start(d, "mtu")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "mtu", "RUNNING")
    uuid = uuid_of(d, "mtu")
    # overlays are shifted into the container's ID range: its root owns them and can write
    assert ok(d, "mtu", "stat -c %u:%g /opt/share/hello.txt /usr/bin /etc/motd").split() == ["0:0"] * 3
    ok(d, "mtu", "echo scratch > /opt/new && echo kept > /usr/persist && mkdir /usr/newdir")
    assert ok(d, "mtu", "stat -c %u /usr/persist /usr/newdir").split() == ["0", "0"]
    rc, out = sh(d, "mtu", "touch /etc/new")
    assert rc != 0 and "read-only" in out.lower(), out
    # as in the original, host files are not bound into a user-namespaced container
    assert ok(d, "mtu", "cat /etc/issue") == "issue from etcx\n"
    assert ok(d, "mtu", "cat /etc/notes") == "notes from etcx\n"
    assert "BIND_FILE issue.txt skipped" in d.log_text()
    restart(d, "mtu")
    assert ok(d, "mtu", "cat /usr/persist") == "kept\n"
    assert sh(d, "mtu", "test -e /opt/new")[0] != 0
    assert cli(d.socket, "stop", "mtu").rc == 0
    wait_state(d, "mtu", "STOPPED", timeout=15)
    assert host_leaks(d.base.parent / "cmld-run", [uuid]) == []
    # on disk the container's volume holds its own IDs, not the host range it ran in
    usr_img = cmld_factory.tmp / "cmld-base" / "containers" / uuid / "usr.img"
    for path in ("/upper/persist", "/upper/newdir"):
        stat = subprocess.run(["debugfs", "-R", f"stat {path}", str(usr_img)], capture_output=True, text=True,
                              check=True).stdout
        assert "User:     0   Group:     0" in stat, stat


def test_missing_bind_file_refuses_start(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = start_cmld_with_mounts(cmld_factory, guestos_src, bind_source=False)
    create(d, cmld_factory.tmp, "nobind", "mounts", userns=False)
    r = start(d, "nobind")
    assert r.rc != 0 and "shared file issue.txt is missing" in r.out + r.err, r.out + r.err
    assert "STOPPED" in cli(d.socket, "state", "nobind").out
    assert host_leaks(d.base.parent / "cmld-run", [uuid_of(d, "nobind")]) == []
