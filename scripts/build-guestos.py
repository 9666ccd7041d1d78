#!/usr/bin/env python3
"""Builds the demo GuestOS: a busybox root filesystem shaped like a GyroidOS GuestOS.

    build-guestos.py OUTDIR [--name busybox] [--version 1] [--verity]

writes exactly
    OUTDIR/<name>-<version>/root.img   ext4 image (no journal, made by mkfs.ext4 -d, no loop device)
    OUTDIR/<name>-<version>.conf       GuestOSConfig in protobuf text format, with the image's size
                                       and SHA-256
and prints the config's path. With --verity also OUTDIR/<name>-<version>/root.hash.img, the
dm-verity hash tree (`veritysetup format`, which needs no device-mapper), and the root hash in the
config's image_verity_sha256. The image is reproducible: fixed UUID and hash seed derived from
name and version, every timestamp set to SOURCE_DATE_EPOCH (default 2024-01-01).

As in GyroidOS (meta-trustx `trustx-coreos.conf`), init is `/sbin/cservice init`: cmld's
in-container service, which cmld places at /sbin/cservice in every container (the image has none),
reports the boot and execs busybox init (/sbin/init). The inittab is modelled on GyroidOS's:
sysinit /etc/init.d/rcS; on shutdown /etc/init.d/rcK, `swapoff -a` and `umount -a -r` (which
inside a container only ever touch the container's own mounts). cmld stops the container with
`halt` (busybox init's halt: the shutdown actions, then the end of the PID namespace).

Contents: /bin/busybox with a symlink per applet, /etc with passwd, group, hostname, inittab,
init.d/rcS and rcK. The root is mounted read-only, so /etc/hosts and /etc/resolv.conf are
symlinks into /run (a tmpfs that cmld mounts), where cservice writes them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from cml_common.messages import guestos_pb2
from cml_common.textconfig import to_text

BUSYBOX = Path("/bin/busybox")
BLOCK = 4096
SLACK = 4 * 1024 * 1024
DEFAULT_EPOCH = 1704067200  # 2024-01-01, when SOURCE_DATE_EPOCH is not set
INITTAB = """\
# busybox init of the demo GuestOS, modelled on GyroidOS's (meta-trustx busybox-inittab); cservice
# (PID 1 before this init) has already reported the boot to cmld.
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
::shutdown:/sbin/swapoff -a
::shutdown:/bin/umount -a -r
::restart:/sbin/init
"""
RCS = """\
#!/bin/sh
# Boot scripts (as GyroidOS's rcS): every executable /etc/rcS.d/S* in order, with "start".
for s in /etc/rcS.d/S*; do
    [ -x "$s" ] && "$s" start
done
exit 0
"""
RCK = """\
#!/bin/sh
# Shutdown scripts (as GyroidOS's rcK): every executable /etc/rc0.d/K* in order, with "stop".
for s in /etc/rc0.d/K*; do
    [ -x "$s" ] && "$s" stop
done
exit 0
"""
DIRS = {"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "dev": 0o755,
        "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777, "data": 0o755, "etc": 0o755,
        "root": 0o700, "var": 0o755, "mnt": 0o755, "opt": 0o755, "srv": 0o755}


def applets() -> list[str]:
    """Paths (relative to /) of every busybox applet, as `busybox --list-full` gives them."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "bin/busybox"]


def stage(root: Path, name: str) -> None:
    """Fills the staging directory with the root filesystem."""
    root.chmod(0o755)
    for d, mode in DIRS.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d).chmod(mode)
    shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for rel in applets():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            link.symlink_to("/bin/busybox")
    etc = root / "etc"
    files = {"passwd": "root:x:0:0:root:/root:/bin/sh\n", "group": "root:x:0:\n", "hostname": f"{name}\n",
             "inittab": INITTAB}
    for fname, text in files.items():
        (etc / fname).write_text(text)
        (etc / fname).chmod(0o644)
    for d in ("init.d", "rcS.d", "rc0.d"):
        (etc / d).mkdir()
        (etc / d).chmod(0o755)
    for fname, text in (("rcS", RCS), ("rcK", RCK)):
        (etc / "init.d" / fname).write_text(text)
        (etc / "init.d" / fname).chmod(0o755)
    (etc / "hosts").symlink_to("/run/hosts")
    (etc / "resolv.conf").symlink_to("/run/resolv.conf")


def set_times(root: Path, epoch: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for entry in filenames + dirnames:
            os.utime(Path(dirpath) / entry, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def content_bytes(root: Path) -> int:
    """Space the files and directories take in whole blocks (fast symlinks take none)."""
    total = BLOCK
    for dirpath, dirnames, filenames in os.walk(root):
        total += BLOCK * len(dirnames)
        for f in filenames:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += -(-p.stat().st_size // BLOCK) * BLOCK
    return total


def make_image(root: Path, img: Path, fs_uuid: uuid.UUID, epoch: int) -> None:
    blocks = -(-(content_bytes(root) + SLACK) // BLOCK)
    # E2FSPROGS_FAKE_TIME sets the times mke2fs itself writes (superblock, /, lost+found);
    # the files of the staging directory keep theirs (set_times).
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), "-L", "root", "-U", str(fs_uuid),
                    "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-O", "^has_journal", "-b", str(BLOCK),
                    str(img), str(blocks)], check=True, env=env)


def clamp_times(img: Path, root: Path, script: Path, epoch: int) -> None:
    """mkfs.ext4 -d copies each file's ctime and atime (moved by reading the file), neither of which
    can be set on the staging files; set them in the image with debugfs."""
    paths = sorted("/" + str(p.relative_to(root)) for p in root.rglob("*"))
    script.write_text("".join(f'sif "{p}" {field} @{epoch}\n' for p in paths for field in ("atime", "ctime")))
    p = subprocess.run(["debugfs", "-w", "-f", str(script), str(img)], capture_output=True, text=True, check=True,
                       env=dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch)))
    errors = [line for line in p.stderr.splitlines() if line and not line.startswith("debugfs ")]
    if errors:
        raise RuntimeError(f"debugfs: {errors[0]}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verity_format(img: Path, hash_img: Path, name: str, version: int) -> str:
    """The hash tree with a salt and UUID derived from name and version (reproducible)."""
    salt = hashlib.sha256(f"cml-guestos:{name}-{version}:verity".encode()).hexdigest()
    vuuid = uuid.uuid5(uuid.NAMESPACE_URL, f"cml-guestos:{name}-{version}:verity")
    out = subprocess.run(["veritysetup", "format", "--salt", salt, "--uuid", str(vuuid), str(img), str(hash_img)],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"^Root hash:\s*([0-9a-f]{64})\s*$", out, re.M)
    if m is None:
        raise RuntimeError(f"veritysetup printed no root hash: {out}")
    return m.group(1)


def guestos_config(name: str, version: int, img: Path) -> guestos_pb2.GuestOSConfig:
    M = guestos_pb2.GuestOSMount
    cfg = guestos_pb2.GuestOSConfig(name=name, hardware="x86", version=version, init_path="/sbin/cservice")
    cfg.init_param.append("init")
    cfg.description.en = f"{name} {version}: busybox under cmld's in-container service (demo GuestOS)"
    cfg.mounts.append(M(image_file="root", mount_point="/", fs_type="ext4", mount_type=M.SHARED,
                        image_size=img.stat().st_size, image_sha2_256=sha256(img)))
    cfg.mounts.append(M(image_file="data", mount_point="/data", fs_type="ext4", mount_type=M.EMPTY,
                        def_size=64, min_size=16, max_size=1024))
    cfg.mounts.append(M(image_file="tmp", mount_point="/tmp",  # noqa: S108
                        fs_type="tmpfs", mount_type=M.EMPTY, def_size=16))
    return cfg


def build(outdir: Path, name: str, version: int, verity: bool = False) -> Path:
    # mke2fs takes E2FSPROGS_FAKE_TIME=0 for "unset", so 0 becomes 1.
    epoch = max(1, int(os.environ.get("SOURCE_DATE_EPOCH", str(DEFAULT_EPOCH))))
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"cml-guestos:{name}-{version}:root")
    imgdir = outdir / f"{name}-{version}"
    imgdir.mkdir(parents=True, exist_ok=True)
    img = imgdir / "root.img"
    conf = outdir / f"{name}-{version}.conf"
    tmp_img = imgdir / ".root.img.tmp"
    tmp_conf = outdir / f".{name}-{version}.conf.tmp"
    try:
        with tempfile.TemporaryDirectory(prefix="guestos-") as staging:
            root = Path(staging) / "root"
            root.mkdir()
            stage(root, name)
            set_times(root, epoch)
            with tmp_img.open("wb"):  # mkfs.ext4 creates a missing file too, but not quietly
                pass
            make_image(root, tmp_img, fs_uuid, epoch)
            clamp_times(tmp_img, root, Path(staging) / "debugfs.cmds", epoch)
        cfg = guestos_config(name, version, tmp_img)
        if verity:
            cfg.mounts[0].image_verity_sha256 = verity_format(tmp_img, imgdir / "root.hash.img", name, version)
        tmp_conf.write_text(to_text(cfg))
        tmp_img.replace(img)
        tmp_conf.replace(conf)
    finally:
        tmp_img.unlink(missing_ok=True)
        tmp_conf.unlink(missing_ok=True)
    return conf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the demo busybox GuestOS (root.img + GuestOSConfig).")
    ap.add_argument("outdir", type=Path, help="output directory")
    ap.add_argument("--name", default="busybox", help="GuestOS name (default busybox)")
    ap.add_argument("--version", type=int, default=1, help="GuestOS version, an integer (default 1)")
    ap.add_argument("--verity", action="store_true", help="also a dm-verity hash tree (root.hash.img)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        ap.error(f"invalid name {args.name!r}")
    if not 0 <= args.version < 2**64:
        ap.error("version must be a non-negative 64-bit integer")
    try:
        conf = build(args.outdir.resolve(), args.name, args.version, args.verity)
    except (subprocess.CalledProcessError, RuntimeError) as e:
        print(f"build-guestos: {e}", file=sys.stderr)
        return 1
    print(conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
