"""scripts/build-guestos.py: the demo busybox GuestOS image and its GuestOSConfig."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cml_common.aioframing import read_frame
from cml_common.framing import encode_frame
from cml_common.messages.c_service_pb2 import CmldToServiceMessage as C
from cml_common.messages.c_service_pb2 import ServiceToCmldMessage as S
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
    assert (cfg.name, cfg.hardware, cfg.version, cfg.init_path) == ("busybox", "x86", 1, "/sbin/cservice")
    assert list(cfg.init_param) == ["init"]  # as GyroidOS's trustx-coreos.conf
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
    assert " init" in sbin and "cservice" not in sbin and "cml-service" not in sbin  # cmld brings cservice
    inittab = debugfs(img, "cat /etc/inittab")
    for line in ("::sysinit:/etc/init.d/rcS", "::shutdown:/etc/init.d/rcK", "::shutdown:/sbin/swapoff -a",
                 "::shutdown:/bin/umount -a -r", "::restart:/sbin/init"):
        assert line in inittab.splitlines(), line
    for script in ("rcS", "rcK"):
        assert "Mode:  0755" in debugfs(img, f"stat /etc/init.d/{script}")
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


def test_image_boots_under_cservice_init_and_halts(built: tuple[Path, Path]) -> None:
    """The unpacked image with cservice at /sbin/cservice (where cmld places it), run as
    `/sbin/cservice init` = PID 1 of new user, PID, mount and UTS namespaces in a chroot, with a
    fake cmld on /run/socket/cml-service: the service reports, writes /run/hosts and
    /run/resolv.conf through the /etc symlinks, closes and execs busybox init, which runs rcS; a
    halt (SIGUSR1, what `halt` sends) runs the shutdown actions and ends the namespace. The user
    namespace keeps `umount -a -r` away from anything of the host."""
    out, _ = built
    work = Path(tempfile.mkdtemp(prefix="cmlgos-"))  # short: socket paths are limited to 108 bytes
    try:
        root, run = work / "root", work / "run"
        root.mkdir()
        subprocess.run(["debugfs", "-R", f"rdump / {root}", str(out / "busybox-1" / "root.img")],
                       capture_output=True, check=True, timeout=60)
        service = subprocess.run(["bash", str(TOP / "scripts/build-service.sh"), str(work / "cservice")],
                                 capture_output=True, text=True, check=True, timeout=120).stdout.strip()
        shutil.copyfile(service, root / "sbin" / "cservice")
        (root / "sbin" / "cservice").chmod(0o755)
        (root / "etc" / "init.d" / "rcK").write_text("#!/bin/sh\necho rcK ran > /run/rcK.done\n")
        (run / "socket").mkdir(parents=True)
        output = asyncio.run(asyncio.wait_for(_boot_and_halt(root, run), 60))
        assert (run / "hosts").read_text() == "127.0.1.1\t guest\n"  # the original's line; no stock file
        assert (run / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
        assert (run / "rcK.done").read_text() == "rcK ran\n", output
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _boot_and_halt(root: Path, run: Path) -> bytes:
    codes: list[int] = []
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (body := await read_frame(reader)) is not None:
            code = S.FromString(body).code
            codes.append(code)
            if code == S.CONTAINER_CFG_NAME_REQ:
                msg = C(code=C.CONTAINER_CFG_NAME, container_cfg_name="guest")
                writer.write(encode_frame(msg.SerializeToString()))
            elif code == S.CONTAINER_CFG_DNS_REQ:
                msg = C(code=C.CONTAINER_CFG_DNS, container_cfg_dns="192.0.2.1")
                writer.write(encode_frame(msg.SerializeToString()))
            await writer.drain()
        closed.set()
        writer.close()

    sock = run / "socket" / "cml-service"
    server = await asyncio.start_unix_server(serve, path=str(sock))
    script = 'mount --bind "$2" "$1/run"; mount -t proc proc "$1/proc"; exec chroot "$1" /sbin/cservice init'
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--uts", "--kill-child", "sh", "-ec",
        script, "sh", str(root), str(run), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        await asyncio.wait_for(closed.wait(), 15)  # `cservice init` keeps no connection
        assert codes == [S.CONTAINER_CFG_NAME_REQ, S.CONTAINER_CFG_DNS_REQ, S.BOOT_COMPLETED]
        for _ in range(100):
            init = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if init and os.readlink(f"/proc/{init[0]}/exe").endswith("/bin/busybox"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("busybox init did not start")
        await asyncio.sleep(0.3)  # its sysinit
        os.kill(int(init[0]), signal.SIGUSR1)  # busybox `halt`
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert b"Requesting system halt" in output, output
        # reboot(HALT) by a PID namespace's init ends it with SIGINT; unshare passes that on.
        assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT), output
        return output
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        server.close()
        await server.wait_closed()
        sock.unlink(missing_ok=True)
