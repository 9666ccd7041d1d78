"""scripts/build-guestos.py: the demo busybox GuestOS image and its GuestOSConfig."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("mkfs.ext4", "debugfs", "gcc"))
                       or not Path("/bin/busybox").exists(), reason="needs e2fsprogs, gcc and busybox-static"),
]

TOP = Path(__file__).resolve().parents[2]


def build(outdir: Path, *args: str, env: dict[str, str] | None = None) -> Path:
    p = subprocess.run([sys.executable, str(TOP / "scripts/build-guestos.py"), str(outdir), *args],
                       capture_output=True, text=True, timeout=300, check=False, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return Path(p.stdout.strip())


def debugfs(img: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(img)], capture_output=True, text=True, timeout=60,
                          check=True).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("guestos")
    return out, build(out)


def test_outputs_and_config(built: tuple[Path, Path]) -> None:
    out, conf = built
    img = out / "busybox-1" / "root.img"
    assert conf == out / "busybox-1.conf"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "busybox-1", "busybox-1.conf", "busybox-1/root.img"]

    cfg = load_text_file(conf, GuestOSConfig)
    assert (cfg.name, cfg.hardware, cfg.version, cfg.init_path) == ("busybox", "x86", 1, "/sbin/init")
    assert cfg.description.en
    root, data, tmp = cfg.mounts
    assert (root.image_file, root.mount_point, root.fs_type, root.mount_type) == ("root", "/", "ext4",
                                                                                  GuestOSMount.SHARED)
    assert root.image_size == img.stat().st_size
    assert root.image_sha2_256 == sha256(img)
    assert (data.mount_point, data.fs_type, data.mount_type) == ("/data", "ext4", GuestOSMount.EMPTY)
    assert (data.def_size, data.min_size, data.max_size) == (64, 16, 1024)
    assert (tmp.mount_point, tmp.fs_type, tmp.mount_type, tmp.def_size) == ("/tmp", "tmpfs", GuestOSMount.EMPTY, 16)


def test_image_contents(built: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = built
    img = out / "busybox-1" / "root.img"
    subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, timeout=60, check=True)
    stats = debugfs(img, "stats")
    assert "Filesystem volume name:   root" in stats
    assert "has_journal" not in stats

    sbin = debugfs(img, "ls -l /sbin")
    assert " cml-service" in sbin and " init" in sbin
    assert debugfs(img, "cat /etc/inittab") == "::once:/sbin/cml-service\n::shutdown:/bin/true\n"
    assert debugfs(img, "cat /etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n"
    assert 'Fast link dest: "/run/hosts"' in debugfs(img, "stat /etc/hosts")
    assert 'Fast link dest: "/run/resolv.conf"' in debugfs(img, "stat /etc/resolv.conf")
    assert 'Fast link dest: "/bin/busybox"' in debugfs(img, "stat /bin/sh")
    assert "Mode:  01777" in debugfs(img, "stat /tmp")
    for d in ("dev", "proc", "sys", "run", "data", "root", "var"):
        assert f" {d}\n" in debugfs(img, "ls -l /"), d
    applets = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        assert debugfs(img, f'stat "/{rel}"'), rel  # empty output: not found

    # The service in the image is the static binary and runs (not PID 1, bad usage: exit 2).
    svc = tmp_path / "cml-service"
    subprocess.run(["debugfs", "-R", f"dump /sbin/cml-service {svc}", str(img)], capture_output=True, check=True)
    svc.chmod(0o755)
    p = subprocess.run([str(svc), "--bogus"], capture_output=True, text=True, timeout=10, check=False)
    assert p.returncode == 2 and p.stderr.startswith("usage: cml-service")


def test_reproducible_and_named(built: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = built
    again = build(tmp_path / "again")
    assert sha256(tmp_path / "again" / "busybox-1" / "root.img") == sha256(out / "busybox-1" / "root.img")
    assert again.read_text() == (out / "busybox-1.conf").read_text()

    other = build(tmp_path / "other", "--name", "tiny", "--version", "7")
    assert other == tmp_path / "other" / "tiny-7.conf"
    cfg = load_text_file(other, GuestOSConfig)
    assert (cfg.name, cfg.version) == ("tiny", 7)
    img = tmp_path / "other" / "tiny-7" / "root.img"
    assert cfg.mounts[0].image_sha2_256 == sha256(img) != sha256(out / "busybox-1" / "root.img")
    assert debugfs(img, "cat /etc/hostname") == "tiny\n"
