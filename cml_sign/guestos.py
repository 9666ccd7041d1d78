"""Build a signed GuestOS from a root filesystem directory or tar (user docs §3.3):

    <out>/<name>-<version>/root.img        squashfs (mksquashfs)
    <out>/<name>-<version>/root.hash.img   dm-verity hash tree (`veritysetup format`, no device-mapper)
    <out>/<name>-<version>.conf            GuestOSConfig with image_size, image_sha2_256, image_verity_sha256
    <out>/<name>-<version>.sig / .cert     signature and chain (sign.py)

Everything is built in a temporary directory inside <out> and renamed into place at the end, so
a failed build leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from cml_common.messages import guestos_pb2
from cml_common.textconfig import to_text

from .sign import sign_config
from .signer import Signer

ROOT_HASH = re.compile(r"^Root hash:\s*([0-9a-f]+)\s*$", re.M)


class GuestOSError(Exception):
    pass


def _run(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise GuestOSError(f"{cmd[0]} is not installed") from e
    if p.returncode != 0:
        raise GuestOSError(f"{' '.join(cmd[:2])} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _rootfs(src: Path, work: Path) -> Path:
    if src.is_dir():
        return src
    if not tarfile.is_tarfile(src):
        raise GuestOSError(f"{src} is neither a directory nor a tar archive")
    root = work / "rootfs"
    root.mkdir()
    # GNU tar (Python 3.11.2 lacks extraction filters): it strips leading "/", refuses members
    # with "..", and keeps owners, modes and device nodes when run as root.
    _run(["tar", "--extract", "--file", str(src), "--directory", str(root), "--numeric-owner",
          "--same-permissions"])
    return root


def build(rootfs: Path, out: Path, name: str, version: int, hardware: str, signer: Signer,
          cert_files: list[Path], init: str = "/sbin/init", description: str | None = None,
          mount_type: str = "SHARED_RW") -> Path:
    stem = f"{name}-{version}"
    final_dir, final_conf = out / stem, out / f"{stem}.conf"
    if final_dir.exists() or final_conf.exists():
        raise GuestOSError(f"{final_conf} or {final_dir} exists already")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=out))
    try:
        root = _rootfs(rootfs, work)
        images = work / stem
        images.mkdir()
        img, hash_img = images / "root.img", images / "root.hash.img"
        _run(["mksquashfs", str(root), str(img), "-noappend", "-quiet", "-no-progress"])
        fmt = _run(["veritysetup", "format", str(img), str(hash_img)])
        m = ROOT_HASH.search(fmt)
        if not m:
            raise GuestOSError(f"veritysetup printed no root hash: {fmt}")
        cfg = guestos_pb2.GuestOSConfig(name=name, hardware=hardware, version=version, init_path=init)
        cfg.description.en = description or f"{name} {version}"
        mount = cfg.mounts.add(image_file="root", mount_point="/", fs_type="squashfs",
                               mount_type=guestos_pb2.GuestOSMount.Type.Value(mount_type))
        mount.image_size = img.stat().st_size
        mount.image_sha2_256 = _sha256(img)
        mount.image_verity_sha256 = m.group(1)
        conf = work / f"{stem}.conf"
        conf.write_text(to_text(cfg))
        sig, cert = sign_config(conf, signer, cert_files)
        for p in (sig, cert, conf):
            p.rename(out / p.name)
        images.rename(final_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final_conf
