"""GuestOSes shaped like the ones cmld meets in the field, none of them made by our own
`build-guestos.py`: the GyroidOS core layout (meta-trustx `trustx-coreos.conf`), what the
original's `converter` makes of a Docker image, a Debian guest booted by meta-trustx's
`deb-boot-script.sh`, a guest with no libc and no shell at all, and a musl guest.

Each is a staging tree packed into squashfs or ext4 images, with a GuestOSConfig that names them
with size and SHA-256 exactly as a signed GuestOS would. Built once per test session.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text

M = GuestOSMount
HERE = Path(__file__).resolve().parent
APP_SRC = HERE / "guests" / "app.c"
BUSYBOX = Path("/bin/busybox")
BASE_DIRS = ("dev", "proc", "sys", "run", "tmp", "etc")

# meta-trustx recipes-poky/busybox/busybox-inittab/inittab, verbatim.
GYROIDOS_INITTAB = """\
# This is run first except when booting in single-user mode.

# We assume mount's are done in init script by cml-boot

::sysinit:/etc/init.d/rcS

# Stuff to do before rebooting
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
::shutdown:/sbin/swapoff -a
::shutdown:/bin/umount -a -r

# Stuff to do when restarting the init process
::restart:/sbin/init

# set hostname
null::sysinit:/bin/busybox hostname -F /etc/hostname
"""

# meta-trustx recipes-initscripts/deb-boot/files/deb-boot-script.sh, verbatim.
DEB_BOOT_SCRIPT = """\
#!/bin/sh

PATH=/sbin:/bin:/usr/sbin:/usr/bin

# setup hostname and nameserver
if [ -x /sbin/cservice ]
then
\t/sbin/cservice
elif [ -x /sbin/cml-service-container ]
then
\t/sbin/cml-service-container
fi

# sleep forever to keep container alive
while true; do sleep 86400; done
"""


@dataclass
class Image:
    file: str
    mount_point: str
    fs_type: str
    mount_type: int
    tree: str = ""  # staging tree packed into the image (shared images only)
    def_size: int = 0


@dataclass
class Guest:
    name: str
    init_path: str
    images: list[Image]
    init_param: list[str] = field(default_factory=list)
    init_env: list[str] = field(default_factory=list)
    libc: str = ""
    note: str = ""


GUESTS = {
    # trustx-coreos.conf: cservice init, SHARED_RW squashfs root, OVERLAY_RW /etc, tmpfs /data/
    "trustx": Guest("trustx", "/sbin/cservice", [
        Image("root", "/", "squashfs", M.SHARED_RW, tree="trustx"),
        Image("etc", "/etc", "ext4", M.OVERLAY_RW, def_size=12),
        Image("tmpfs", "/data/", "tmpfs", M.EMPTY, def_size=12),
    ], init_param=["init"], init_env=["container=trustm3"], libc="busybox"),
    # converter.c: SHARED_RW squashfs root, a Docker volume as EMPTY ext4, entrypoint + cmd as init_param
    "converter": Guest("converter", "/sbin/cservice", [
        Image("root", "/", "squashfs", M.SHARED_RW, tree="converter"),
        Image("volume_1", "/data", "ext4", M.EMPTY),
    ], init_param=["/app/app", "serve", "two words", "x"],
        init_env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello world"],
        libc="glibc"),
    # Debian userland (dash, coreutils: glibc) started by deb-boot-script.sh; read-only ext4 root
    "debboot": Guest("debboot", "/sbin/deb-boot", [Image("root", "/", "ext4", M.SHARED, tree="debboot")],
                     libc="glibc"),
    # one static program and nothing else: no libc, no shell, no /sbin
    "nolibc": Guest("nolibc", "/sbin/cservice", [Image("root", "/", "squashfs", M.SHARED_RW, tree="nolibc")],
                    init_param=["/app", "serve", "static"], libc="none"),
    # busybox init and a service of its own that leaves on SHUTDOWN without ending the container
    "leaver": Guest("leaver", "/sbin/init", [Image("root", "/", "squashfs", M.SHARED_RW, tree="leaver")],
                    libc="busybox", note="not a field GuestOS: a misbehaving service"),
    # musl, read-only root that ships a stale /sbin/cservice of its own (exits 99)
    "musl": Guest("musl", "/sbin/cservice", [Image("root", "/", "squashfs", M.SHARED, tree="musl")],
                  init_param=["/app", "serve", "musl"], libc="musl"),
}


def musl_available() -> bool:
    return shutil.which("musl-gcc") is not None


def _run(argv: list[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {p.stderr or p.stdout}")


def _dirs(root: Path, *names: str) -> None:
    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
    if (root / "tmp").exists():
        (root / "tmp").chmod(0o1777)


def _copy(src: Path, dst: Path, mode: int = 0o755) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def _with_libs(binary: Path, root: Path, dest: str) -> None:
    """The binary at `dest` and the shared libraries ldd names, at their own paths."""
    _copy(binary, root / dest.lstrip("/"))
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            _copy(Path(lib).resolve(), root / lib.lstrip("/"))


def _script(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(0o755)


def compile_app(work: Path, kind: str) -> Path:
    out = work / f"app-{kind}"
    if kind == "static":
        _run(["gcc", "-static", "-O2", "-o", str(out), str(APP_SRC)])
    elif kind == "glibc":
        _run(["gcc", "-O2", "-o", str(out), str(APP_SRC)])
    elif kind == "musl":
        _run(["musl-gcc", "-O2", "-o", str(out), str(APP_SRC)])
    else:
        raise ValueError(kind)
    return out


def _busybox(root: Path) -> None:
    _dirs(root, *BASE_DIRS, "bin", "sbin", "usr/bin", "usr/sbin", "data", "etc/init.d", "var")
    _copy(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        if rel != "bin/busybox" and not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).symlink_to("/bin/busybox")


def _tree_leaver(root: Path, work: Path) -> None:
    _busybox(root)
    _copy(compile_app(work, "static"), root / "app")
    (root / "etc" / "inittab").write_text("::once:/app leave-on-shutdown\n::shutdown:/bin/umount -a -r\n")


def _tree_trustx(root: Path, work: Path) -> None:
    _busybox(root)
    etc = root / "etc"
    (etc / "inittab").write_text(GYROIDOS_INITTAB)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n")
    # No /etc/hostname: the inittab's `hostname -F /etc/hostname` then keeps cservice's name.
    _script(root, "etc/init.d/rcS", "#!/bin/sh\necho booted > /run/rcS.done\n")
    # rcK leaves a trace on the persistent /etc (OVERLAY_RW): proof that the shutdown actions ran.
    _script(root, "etc/init.d/rcK", "#!/bin/sh\necho rcK >> /etc/shutdown.log\n")


def _tree_converter(root: Path, work: Path) -> None:
    _dirs(root, *BASE_DIRS, "bin", "sbin", "usr/bin", "data")
    _with_libs(compile_app(work, "glibc"), root, "/app/app")


def _tree_debboot(root: Path, work: Path) -> None:
    _dirs(root, *BASE_DIRS, "bin", "sbin", "usr/bin")
    _with_libs(Path("/bin/dash"), root, "/bin/sh")
    _with_libs(Path("/bin/sleep"), root, "/bin/sleep")
    _script(root, "sbin/deb-boot", DEB_BOOT_SCRIPT)
    (root / "etc" / "hosts").symlink_to("/run/hosts")
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")


def _tree_nolibc(root: Path, work: Path) -> None:
    _dirs(root, *BASE_DIRS)
    _copy(compile_app(work, "static"), root / "app")


def _tree_musl(root: Path, work: Path) -> None:
    _dirs(root, *BASE_DIRS, "sbin", "lib")
    _copy(compile_app(work, "musl"), root / "app")
    _copy(Path("/lib/ld-musl-x86_64.so.1").resolve(), root / "lib" / "ld-musl-x86_64.so.1")
    stale = work / "stale.c"
    stale.write_text("int main(void) { return 99; }\n")
    _run(["gcc", "-static", "-o", str(root / "sbin" / "cservice"), str(stale)])
    (root / "etc" / "hosts").symlink_to("/run/hosts")
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")


TREES = {"leaver": _tree_leaver, "trustx": _tree_trustx, "converter": _tree_converter, "debboot": _tree_debboot,
         "nolibc": _tree_nolibc, "musl": _tree_musl}


def _pack(tree: Path, img: Path, fs_type: str) -> None:
    if fs_type == "squashfs":
        _run(["mksquashfs", str(tree), str(img), "-noappend", "-quiet", "-no-progress", "-all-root"])
    elif fs_type == "ext4":
        _run(["mkfs.ext4", "-q", "-F", "-d", str(tree), "-O", "^has_journal", "-E", "root_owner=0:0", str(img), "32M"])
    else:
        raise ValueError(fs_type)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(guest: Guest, out: Path) -> Path:
    """out/<name>-1/<image>.img and out/<name>-1.conf; returns the config's path."""
    work = out / f".work-{guest.name}"
    work.mkdir(parents=True, exist_ok=True)
    imgdir = out / f"{guest.name}-1"
    imgdir.mkdir(parents=True, exist_ok=True)
    cfg = GuestOSConfig(name=guest.name, hardware="x86", version=1, init_path=guest.init_path)
    cfg.init_param.extend(guest.init_param)
    cfg.init_env.extend(guest.init_env)
    cfg.description.en = f"test GuestOS {guest.name}"
    for image in guest.images:
        m = cfg.mounts.add(image_file=image.file, mount_point=image.mount_point, fs_type=image.fs_type,
                           mount_type=image.mount_type)  # type: ignore[arg-type]
        if image.def_size or image.mount_type == M.EMPTY:
            m.def_size = image.def_size
        if image.tree:
            tree = work / image.tree
            tree.mkdir()
            TREES[image.tree](tree, work)
            img = imgdir / f"{image.file}.img"
            _pack(tree, img, image.fs_type)
            m.image_size = img.stat().st_size
            m.image_sha2_256 = sha256(img)
            m.image_sha1 = hashlib.sha1(img.read_bytes(), usedforsecurity=False).hexdigest()
    shutil.rmtree(work)
    conf = out / f"{guest.name}-1.conf"
    conf.write_text(to_text(cfg))
    return conf


def install(src: Path, base: Path, name: str) -> None:
    """Copy a built GuestOS into a cmld base directory."""
    dst = base / "operatingsystems"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / f"{name}-1", dst / f"{name}-1", dirs_exist_ok=True)
    shutil.copyfile(src / f"{name}-1.conf", dst / f"{name}-1.conf")
