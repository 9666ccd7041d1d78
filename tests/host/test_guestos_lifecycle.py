"""The GuestOS lifecycle on a device, with the real cmld (and scd for signed configs):
`guestos_version` pins the version a signed container runs; obsolete unused versions are purged at
start; images missing at start are fetched from the update server (http:// on loopback, file://)
and checked before they are used; STORE_ONLY images are fetched and stored, never mounted."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file, to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, start, wait_state
from .scdlib import SIGNED_DEVICE_CONF, launch_scd, make_pki, prepare_base, sign

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
UNSIGNED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"
EXTRA = bytes(range(256)) * 64  # a 16 KiB STORE_ONLY image


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki", "ec256")


def install_version(src: Path, base: Path, version: int, *, store_only: bool = False, pki: Path | None = None) -> Path:
    """busybox-<version> in the base dir, as the original's push leaves it (config, signature,
    images); with `store_only` an extra STORE_ONLY image."""
    cfg = load_text_file(src / "busybox-1.conf", GuestOSConfig)
    cfg.version = version
    if store_only:
        cfg.mounts.add(image_file="extra", mount_point="/extra", fs_type="ext4", mount_type=GuestOSMount.STORE_ONLY,
                       image_size=len(EXTRA), image_sha2_256=hashlib.sha256(EXTRA).hexdigest())
    gos = base / "operatingsystems"
    (gos / f"busybox-{version}").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "busybox-1" / "root.img", gos / f"busybox-{version}" / "root.img")
    if store_only:
        (gos / f"busybox-{version}" / "extra.img").write_bytes(EXTRA)
    conf = gos / f"busybox-{version}.conf"
    conf.write_text(to_text(cfg))
    if pki is not None:
        sign(conf, pki)
    return conf


def publish(base: Path, repo: Path, version: int) -> None:
    """Copy busybox-<version>'s images to an update server's layout."""
    out = repo / "operatingsystems" / "x86" / f"busybox-{version}"
    out.mkdir(parents=True, exist_ok=True)
    for img in (base / "operatingsystems" / f"busybox-{version}").glob("*.img"):
        shutil.copyfile(img, out / img.name)


def root_image_in_use(base: Path) -> set[str]:
    """The GuestOS image files under `base` that loop devices are backed by right now."""
    out = set()
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            name = f.read_text().strip()
        except OSError:
            continue
        if name.startswith(str(base / "operatingsystems")):
            out.add(str(Path(name).relative_to(base / "operatingsystems")))
    return out


def test_signed_config_pins_its_version_and_obsolete_versions_are_purged(
        cmld_factory: DaemonFactory, guestos_src: Path, pki: Path) -> None:
    tmp = cmld_factory.tmp
    base = prepare_base(tmp / "cmld-base", pki)
    install_version(guestos_src, base, 1, pki=pki)
    scd = launch_scd(cmld_factory, base)
    d = cmld_factory.start("--stop-timeout", "10", "--scd-socket", str(scd.socket), base=base,
                           device_conf=SIGNED_DEVICE_CONF)
    for name, version in (("pinned", 2), ("ghost", 7)):
        conf = tmp / f"{name}.conf"
        conf.write_text(container_conf(name, guestos_version=version))
        sig, cert = sign(conf, pki)
        r = cli(d.socket, "create", str(conf), str(sig), str(cert))
        assert r.rc == 0, r.out + r.err
    d.stop()

    # newer versions arrive (as pushes leave them); at the next start version 1 is obsolete
    # (older than the newest complete, 3, and no container runs it), 2 stays: "pinned" runs it
    install_version(guestos_src, base, 2, pki=pki)
    install_version(guestos_src, base, 3, pki=pki)
    d = cmld_factory.start("--stop-timeout", "10", "--scd-socket", str(scd.socket), base=base,
                           name="cmld2", device_conf=SIGNED_DEVICE_CONF)
    gos = base / "operatingsystems"
    assert not (gos / "busybox-1").exists() and not (gos / "busybox-1.conf").exists()
    assert not (gos / "busybox-1.sig").exists() and not (gos / "busybox-1.cert").exists()
    assert (gos / "busybox-2" / "root.img").exists() and (gos / "busybox-3" / "root.img").exists()
    assert "GuestOS busybox-1 is obsolete (no container uses it); purged" in d.log_text()

    assert "CONTAINER_START_OK" in start(d, "pinned").out
    wait_state(d, "pinned", "RUNNING")
    assert root_image_in_use(base) == {"busybox-2/root.img"}
    assert cli(d.socket, "stop", "pinned").rc == 0
    wait_state(d, "pinned", "STOPPED", timeout=15)

    r = start(d, "ghost")
    out = r.out + r.err
    assert r.rc != 0 and "version 7 (pinned by the signed config" in out and "(installed: 2, 3)" in out, out
    assert cli(d.socket, "list").rc == 0  # cmld keeps serving


def test_unsigned_config_runs_the_newest_complete_version(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_version(guestos_src, base, 1)
    d = cmld_factory.start("--stop-timeout", "10", base=base, device_conf=UNSIGNED)
    conf = cmld_factory.tmp / "app.conf"
    conf.write_text(container_conf("app", guestos_version=1))
    assert cli(d.socket, "create", str(conf)).rc == 0
    too_new = cmld_factory.tmp / "toonew.conf"
    too_new.write_text(container_conf("toonew", guestos_version=5))
    assert cli(d.socket, "create", str(too_new)).rc == 0
    d.stop()
    install_version(guestos_src, base, 2)
    install_version(guestos_src, base, 3)
    (base / "operatingsystems" / "busybox-3" / "root.img").unlink()  # 3 is incomplete
    d = cmld_factory.start("--stop-timeout", "10", base=base, name="cmld2", device_conf=UNSIGNED)
    # 1 is purged (older than 2, the newest complete); 3 stays (incomplete, newer): nothing fetched
    assert not (base / "operatingsystems" / "busybox-1.conf").exists()
    assert (base / "operatingsystems" / "busybox-3.conf").exists()
    assert "CONTAINER_START_OK" in start(d, "app").out
    wait_state(d, "app", "RUNNING")
    assert root_image_in_use(base) == {"busybox-2/root.img"}
    r = start(d, "toonew")
    assert r.rc != 0 and "asks for version 5 or newer (installed: 2, 3)" in r.out + r.err, r.out + r.err


def test_missing_images_are_fetched_at_start_over_http_and_store_only_kept(
        cmld_factory: DaemonFactory, guestos_src: Path, http_root: tuple[Path, str]) -> None:
    www, url = http_root
    base = cmld_factory.tmp / "cmld-base"
    install_version(guestos_src, base, 1, store_only=True)
    publish(base, www, 1)
    device_conf = UNSIGNED + f'update_base_url: "{url}"\n'
    d = cmld_factory.start("--stop-timeout", "10", base=base, device_conf=device_conf)
    conf = cmld_factory.tmp / "app.conf"
    conf.write_text(container_conf("app"))
    assert cli(d.socket, "create", str(conf)).rc == 0
    d.stop()

    img_dir = base / "operatingsystems" / "busybox-1"
    want = {p.name: p.read_bytes() for p in img_dir.glob("*.img")}
    # hostile first: the server has a wrong root image; nothing is replaced by it, the GuestOS stays
    # incomplete with a clear error, and the start names the missing image
    (img_dir / "root.img").unlink()
    (img_dir / "extra.img").write_bytes(EXTRA[:100])  # truncated
    good_root = (www / "operatingsystems" / "x86" / "busybox-1" / "root.img").read_bytes()
    (www / "operatingsystems" / "x86" / "busybox-1" / "root.img").write_bytes(good_root[:-1] + b"\x01")
    d = cmld_factory.start("--stop-timeout", "10", base=base, name="cmld2", device_conf=device_conf)
    wait_log(d, "GuestOS busybox-1 stays incomplete")
    log = d.log_text()
    assert "does not match the config" in log or "bytes, the config says" in log, log
    assert not (img_dir / "root.img").exists() and not list(img_dir.glob(".*part"))
    r = start(d, "app")
    assert r.rc != 0 and "root.img" in r.out + r.err, r.out + r.err
    d.stop()

    # the server is right again: the next start fetches both images and the container runs
    (www / "operatingsystems" / "x86" / "busybox-1" / "root.img").write_bytes(good_root)
    d = cmld_factory.start("--stop-timeout", "10", base=base, name="cmld3", device_conf=device_conf)
    wait_log(d, "GuestOS busybox-1 is complete")
    assert {p.name: p.read_bytes() for p in img_dir.glob("*.img")} == want
    assert "CONTAINER_START_OK" in start(d, "app").out
    wait_state(d, "app", "RUNNING")
    # the STORE_ONLY image is stored, never mounted
    assert root_image_in_use(base) == {"busybox-1/root.img"}
    assert "/extra" not in cli(d.socket, "run", "app", "cat", "/proc/mounts").out


def test_store_only_image_is_fetched_by_a_push_over_file(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    tmp = cmld_factory.tmp
    staging = tmp / "staging"
    conf = install_version(guestos_src, staging, 4, store_only=True)
    repo = tmp / "repo"
    publish(staging, repo, 4)
    cfg = load_text_file(conf, GuestOSConfig)
    cfg.update_base_url = f"file://{repo}"
    conf.write_text(to_text(cfg))
    d = cmld_factory.start(base=tmp / "cmld-base", device_conf=UNSIGNED)
    r = cli(d.socket, "push_guestos_config", str(conf), timeout=120)
    assert r.rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in r.out, r.out + r.err
    assert (d.base / "operatingsystems" / "busybox-4" / "extra.img").read_bytes() == EXTRA
    # a STORE_ONLY image that does not match its hash is refused like any other image
    (repo / "operatingsystems" / "x86" / "busybox-5").mkdir(parents=True)
    shutil.copyfile(staging / "operatingsystems" / "busybox-4" / "root.img",
                    repo / "operatingsystems" / "x86" / "busybox-5" / "root.img")
    (repo / "operatingsystems" / "x86" / "busybox-5" / "extra.img").write_bytes(EXTRA[::-1])
    cfg.version = 5
    conf5 = tmp / "busybox-5.conf"
    conf5.write_text(to_text(cfg))
    r = cli(d.socket, "push_guestos_config", str(conf5), timeout=120)
    assert r.rc != 0 and "extra.img" in r.out + r.err, r.out + r.err
    assert not (d.base / "operatingsystems" / "busybox-5.conf").exists()


def wait_log(d: Daemon, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in d.log_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the log:\n{d.log_text()}")
