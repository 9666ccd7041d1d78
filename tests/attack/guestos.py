"""The attack programs (compiled at test time) and the GuestOSes the attacker containers run:
the demo busybox GuestOS plus the attack program, BIND_FILE mounts of host files, and a variant
with a writable persistent /opt."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file, to_text

from ..host.containers import install_guestos

PROGS = Path(__file__).resolve().parent / "progs"
GUESTOS = "attackos"
ATK = "/opt/atk"
M = GuestOSMount


def build_programs(out: Path) -> dict[str, Path]:
    """Compiles the attack program (static: the busybox guest has no libc) and the two host
    helpers. About two seconds."""
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, static in (("atk", True), ("surfatk", True), ("sentinel", False), ("daemonwrap", False)):
        dst = out / name
        cmd = ["gcc", "-O2", "-Wall", "-o", str(dst), str(PROGS / f"{name}.c")]
        if static:
            cmd[1:1] = ["-static"]
            cmd.append("-lpthread")
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"gcc {name}.c: {p.stderr}")
        built[name] = dst
    return built


def ext4_image(img: Path, files: dict[str, bytes], mode: dict[str, int]) -> M:
    staging = img.with_suffix(".d")
    staging.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        if rel.endswith("/"):
            (staging / rel).mkdir(parents=True, exist_ok=True)
            continue
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
        (staging / rel).chmod(mode.get(rel, 0o644))
    size_kb = 1024 + sum(len(d) for d in files.values()) // 1024 * 2
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(staging), "-E", "root_owner=0:0", "-O", "^has_journal",
                    str(img), f"{size_kb}k"], check=True, capture_output=True)
    shutil.rmtree(staging)
    data = img.read_bytes()
    return M(image_file=img.stem, fs_type="ext4", image_size=len(data),
             image_sha2_256=hashlib.sha256(data).hexdigest())


def install_attackos(src: Path, base: Path, atk: Path) -> None:
    """The demo busybox GuestOS plus: the attack program on a SHARED image at /opt, and a
    BIND_FILE and a BIND_FILE_RW of files_shared/ onto files of that image (skipped by cmld for
    user-namespaced containers, as the original does)."""
    install_guestos(src, base, name=GUESTOS)
    conf_path = base / "operatingsystems" / f"{GUESTOS}-1.conf"
    cfg = load_text_file(conf_path, GuestOSConfig)
    img_dir = base / "operatingsystems" / f"{GUESTOS}-1"
    if not (img_dir / "attack.img").exists() or not (base / "files_shared").exists():
        opt = ext4_image(img_dir / "attack.img", {"atk": atk.read_bytes(), "bind-ro.txt": b"image ro\n",
                                                 "bind-rw.txt": b"image rw\n", "cache/": b""},
                         {"atk": 0o755})
        opt.mount_point, opt.mount_type = "/opt", M.SHARED
        cfg.mounts.extend([opt,
                           M(image_file="atk-ro.txt", mount_point="/opt/bind-ro.txt", fs_type="none",
                             mount_type=M.BIND_FILE),
                           M(image_file="atk-rw.txt", mount_point="/opt/bind-rw.txt", fs_type="none",
                             mount_type=M.BIND_FILE_RW)])
        for m in cfg.mounts:
            if m.mount_point == "/data":
                m.def_size = 32  # the disk-filling attack fills it
        conf_path.write_text(to_text(cfg))
        shared = base / "files_shared"
        shared.mkdir(exist_ok=True)
        (shared / "atk-ro.txt").write_text("shared with the host, read-only\n")
        (shared / "atk-rw.txt").write_text("shared with the host, writable\n")


def install_racyos(base: Path) -> None:
    """attackos with the attack image under a writable, persistent overlay (OVERLAY_RW /opt) and
    a tmpfs mounted at /opt/cache: a mount point inside a volume the container writes (the
    symlink attack tries to replace it for the next start)."""
    src = load_text_file(base / "operatingsystems" / f"{GUESTOS}-1.conf", GuestOSConfig)
    cfg = GuestOSConfig()
    cfg.CopyFrom(src)
    cfg.name = "racyos"
    del cfg.mounts[:]
    cfg.mounts.extend(m for m in src.mounts if m.mount_type not in (M.BIND_FILE, M.BIND_FILE_RW))
    cfg.mounts.extend([M(image_file="optrw", mount_point="/opt", fs_type="ext4", mount_type=M.OVERLAY_RW,
                         def_size=8, min_size=8, max_size=16),
                       M(image_file="cache", mount_point="/opt/cache", fs_type="tmpfs", mount_type=M.EMPTY,
                         def_size=1)])
    dst = base / "operatingsystems" / "racyos-1"
    dst.mkdir(exist_ok=True)
    for img in (base / "operatingsystems" / f"{GUESTOS}-1").glob("*.img"):
        if not (dst / img.name).exists():
            os.link(img, dst / img.name)
    (base / "operatingsystems" / "racyos-1.conf").write_text(to_text(cfg))


INSTALLOS = "instos"


def install_installos(base: Path) -> None:
    """attackos with `feature_install_guest`: its containers get cmld's unprivileged control
    socket at /run/socket/cml-control (the surface of test_install_guest.py)."""
    src = load_text_file(base / "operatingsystems" / f"{GUESTOS}-1.conf", GuestOSConfig)
    cfg = GuestOSConfig()
    cfg.CopyFrom(src)
    cfg.name = INSTALLOS
    cfg.feature_install_guest = True
    dst = base / "operatingsystems" / f"{INSTALLOS}-1"
    dst.mkdir(exist_ok=True)
    for img in (base / "operatingsystems" / f"{GUESTOS}-1").glob("*.img"):
        if not (dst / img.name).exists():
            os.link(img, dst / img.name)
    (base / "operatingsystems" / f"{INSTALLOS}-1.conf").write_text(to_text(cfg))
