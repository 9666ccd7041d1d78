"""Trust in GuestOS configs: verification at load, and PUSH_GUESTOS_CONFIG (the original's
guestos_mgr push): verify, check the version and the space, download the images with their size
and hash checked, and only then install.

Unlike the original, nothing is written into `operatingsystems/` before every image is there and
checked: a refused or failed push leaves the store exactly as it was, and a crash leaves the old
version or the new one (`commit`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import platform
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cml_common.crashpoints import crash_point
from cml_common.messages.container_pb2 import ContainerTrust
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import ConfigError, parse_text
from cmld import linux
from cmld.audit import events
from cmld.audit.signer import signer_of
from cmld.clients.scd import ScdClient, ScdError, VerifyResult
from cmld.errors import InstallError
from cmld.guestos import flash, images
from cmld.guestos.commit import commit, stage_config
from cmld.guestos.store import GuestOS, GuestOSStore

log = logging.getLogger(__name__)
ATTEMPTS = 3
CHUNK = 1 << 20
ZERO_CHUNK = bytes(CHUNK)
HW_NAMES = {"x86_64": "x86", "aarch64": "arm", "riscv64": "riscv"}


@dataclass
class TrustPolicy:
    signed_configs: bool
    locally_signed_images: bool
    provisioned: bool


def trust_of(result: VerifyResult, policy: TrustPolicy) -> int | None:
    """The trust level a verified GuestOS gets, or None if it must not be used."""
    if result == VerifyResult.GOOD:
        return ContainerTrust.SIGNED
    if result == VerifyResult.LOCALLY_SIGNED and policy.locally_signed_images:
        return ContainerTrust.LOCALLY_SIGNED
    return None


async def verify_store(store: GuestOSStore, scd: ScdClient, policy: TrustPolicy) -> None:
    """Give each loaded GuestOS its trust level. With signed_configs a GuestOS that does not
    verify (or cannot be verified: scd down) is dropped; without, it stays, UNSIGNED."""
    for gos in store.all():
        sig, cert = gos.conf_path.with_suffix(".sig"), gos.conf_path.with_suffix(".cert")
        why = ""
        if sig.exists() and cert.exists():
            try:
                result = await scd.verify_file(gos.conf_path, sig, cert, ignore_time=not policy.provisioned)
                trust = trust_of(result, policy)
                if trust is not None:
                    gos.trust = trust
                    log.info("GuestOS %s-%d: %s", gos.name, gos.version, ContainerTrust.Name(trust))
                    continue
                why = f"signature check {result.name}"
            except ScdError as e:
                why = f"cannot be verified: {e}"
        else:
            why = "no .sig/.cert"
        if policy.signed_configs:
            events.emit("FSA", "GUESTOS_MGMT", "verify-failed", None, what="installed GuestOS config",
                        name=gos.name, version=str(gos.version), reason=why)
            log.error("GuestOS %s-%d not used: %s", gos.name, gos.version, why)
            store.drop(gos)
        else:
            gos.trust = ContainerTrust.UNSIGNED
            log.warning("GuestOS %s-%d is UNSIGNED (%s); allowed because signed_configs is off",
                        gos.name, gos.version, why)


def hardware() -> str:
    m = platform.machine()
    return HW_NAMES.get(m, m)


def image_url(base: str, cfg: GuestOSConfig, image: str) -> str:
    return f"{base.rstrip('/')}/operatingsystems/{hardware()}/{cfg.name}-{cfg.version}/{image}"


def relative_file_path(url: str) -> str | None:
    """The path of a relative `file://` URL (`file://var/volatile/tmp/...`: no third slash), which
    the original resolves inside the root of the container that pushed the GuestOS; None for
    every other URL."""
    if url.startswith("file://") and not url.startswith("file:///"):
        return urllib.parse.unquote(url[len("file://"):])
    return None


def _open_source(url: str, caller_root: Path) -> BinaryIO:
    """file:// opens a local file, http(s):// downloads (no other schemes: no ftp, no local
    paths by accident). A relative file:// path is opened under the caller's root with
    RESOLVE_IN_ROOT: `..` or a symlink in it cannot reach outside the container that sent it."""
    rel = relative_file_path(url)
    if rel is not None:
        root_fd = os.open(caller_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = linux.open_in_root(root_fd, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        finally:
            os.close(root_fd)
        return _regular(fd, url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = urllib.parse.unquote(parts.path)
        return _regular(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), url)
    if parts.scheme in ("http", "https"):
        return urllib.request.urlopen(url, timeout=60)  # type: ignore[no-any-return]  # noqa: S310 (scheme checked)
    raise InstallError(f"unsupported URL scheme in {url}")


def _regular(fd: int, url: str) -> BinaryIO:
    """The opened image source as a file, if it is a regular file. It was opened non-blocking, so
    a FIFO or a device at the URL's path (a pushing container can place one in its own root)
    cannot hold the installer in open(2) for ever; such a source is refused, not read."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InstallError(f"{url} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


def check_push_urls(cfg: GuestOSConfig) -> None:
    """What a push over an unprivileged control socket (a `feature_install_guest` container) may
    name as the image source: only a relative file:// URL, which is resolved in that container's
    own root, or none (the device's update server). An absolute file:// URL would be opened in
    cmld's root, the host's, and an http(s) URL would make cmld, on the host's network, fetch
    for a container whose own network is confined."""
    url = cfg.update_base_url
    if url and relative_file_path(url) is None:
        raise InstallError(f"update_base_url {url!r}: a push from inside a container may only name a relative "
                           "file:// URL (its own files)")


def fetch(url: str, dest: Path, max_bytes: int, caller_root: Path = Path("/")) -> None:
    """Never more than `max_bytes`. Runs of zeros are skipped, not written, so a sparse image
    (the original's CI pushes 1-3 GiB `truncate`d images) stays sparse on disk."""
    total = 0
    with _open_source(url, caller_root) as f, open(dest, "wb") as out:
        while chunk := f.read(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise InstallError(f"{url} is larger than the {max_bytes} bytes the config states")
            if len(chunk) == CHUNK and chunk == ZERO_CHUNK:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
        out.truncate(total)


def check_download(path: Path, m: GuestOSMount, name: str) -> None:
    size = path.stat().st_size
    if m.HasField("image_size") and size != m.image_size:
        raise InstallError(f"{name}: {size} bytes, the config says {m.image_size}")
    if m.image_sha2_256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        if h.hexdigest() != m.image_sha2_256.lower():
            raise InstallError(f"{name}: SHA-256 {h.hexdigest()} does not match the config")


def writes_device(cfg: GuestOSConfig) -> bool:
    """A system update: the `kernel` pseudo-GuestOS or any config with a FLASH image."""
    return cfg.name == flash.KERNEL or any(m.mount_type == GuestOSMount.FLASH for m in cfg.mounts)


class GuestOSInstaller:
    def __init__(self, store: GuestOSStore, scd: ScdClient) -> None:
        self.store = store
        self.scd = scd
        self.kernel_slots: flash.KernelSlots | None = None  # the A/B update, when cmld runs it
        self._lock = asyncio.Lock()

    async def check(self, raw: bytes, sig: bytes, cert: bytes, policy: TrustPolicy,
                    unprivileged: bool = False) -> tuple[GuestOSConfig, int]:
        """Verify and parse a pushed config; raises InstallError with the reason. A push over an
        unprivileged socket (from inside a `feature_install_guest` container) must be signed
        whatever device.conf says, as every push in the original, and may only name its own
        files as the image source (`check_push_urls`)."""
        if unprivileged:
            check_push_urls(self._parse(raw))  # first: the reason a hostile URL is refused is named
            if not (sig and cert):
                raise InstallError("a push from inside a container must be signed (no signature and certificate)")
        if sig or cert:
            try:
                result = await self.scd.verify_buf(raw, sig, cert, ignore_time=not policy.provisioned)
            except ScdError as e:
                raise InstallError(f"the signature cannot be checked: {e}") from e
            trust = trust_of(result, policy)
            if trust is None:
                events.emit("FSA", "GUESTOS_MGMT", "verify-failed", None, what="pushed GuestOS config",
                            result=result.name, signer=signer_of(cert))
                raise InstallError(f"signature check {result.name}")
            good = "verify-good" if result == VerifyResult.GOOD else "verify-locally-signed"
            events.emit("SSA", "GUESTOS_MGMT", good, None, what="pushed GuestOS config", signer=signer_of(cert))
        elif policy.signed_configs:
            raise InstallError("device.conf requires signed configs and the push has no signature and certificate")
        else:
            trust = ContainerTrust.UNSIGNED
        cfg = self._parse(raw)
        if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
            raise InstallError(f"invalid GuestOS name {cfg.name!r}")
        installed = self.store.latest(cfg.name)
        if installed is not None and cfg.version < installed.version:
            raise InstallError(f"version {cfg.version} is older than the installed {installed.version}")
        if unprivileged and trust != ContainerTrust.SIGNED and writes_device(cfg):
            # FLASH images go to the device's own partitions and kernel slots, outside every
            # container: only a vendor-signed config may do that from inside a container.
            raise InstallError(f"{cfg.name} writes FLASH images (device partitions, kernels): a push from inside a "
                               f"container must be vendor-signed for that, this one is {ContainerTrust.Name(trust)}")
        if unprivileged and installed is not None and trust > installed.trust:  # SIGNED=1 < LOCALLY_SIGNED < UNSIGNED
            # The original lets a container that registered the local CA replace any GuestOS with
            # one it signed itself: the software of every other container using it.
            raise InstallError(f"{cfg.name} is installed {ContainerTrust.Name(installed.trust)}: a push from inside a "
                               f"container may not replace it with a {ContainerTrust.Name(trust)} one")
        return cfg, trust

    @staticmethod
    def _parse(raw: bytes) -> GuestOSConfig:
        try:
            return parse_text(raw, GuestOSConfig, source="pushed GuestOS config")
        except ConfigError as e:
            raise InstallError(str(e)) from e

    async def install(self, raw: bytes, sig: bytes, cert: bytes, cfg: GuestOSConfig, trust: int,
                      device_base_url: str, caller_root: Path = Path("/")) -> GuestOS:
        """`device_base_url` (device.conf) is used when the GuestOS config names no update URL;
        a relative file:// URL is resolved in `caller_root` (the pushing container's root)."""
        async with self._lock:
            gos = await asyncio.to_thread(self._install, raw, sig, cert, cfg, trust,
                                          cfg.update_base_url or device_base_url, caller_root)
        events.emit("SSA", "GUESTOS_MGMT", "push-os", None, name=cfg.name, version=str(cfg.version),
                    trust=ContainerTrust.Name(trust))
        return gos

    def _install(self, raw: bytes, sig: bytes, cert: bytes, cfg: GuestOSConfig, trust: int, base: str,
                 caller_root: Path) -> GuestOS:
        files = images.image_files(cfg)
        directory = self.store.directory
        directory.mkdir(parents=True, exist_ok=True)
        final_dir = directory / f"{cfg.name}-{cfg.version}"
        # A FLASH target that must not be written is refused now, before any download.
        flash.targets(cfg, final_dir, directory.parent, self._retarget)
        need = sum(f.mount.image_size for f in files if not f.is_hash_tree)
        free = shutil.disk_usage(directory).free
        if need > free:
            raise InstallError(f"not enough space: {need >> 20} MiB of images, {free >> 20} MiB free")
        staging = Path(tempfile.mkdtemp(prefix=f".{cfg.name}-{cfg.version}.", dir=directory))
        try:
            for f in files:
                existing = final_dir / f.name
                target = staging / f.name
                if existing.exists() and not f.is_hash_tree:
                    try:
                        check_download(existing, f.mount, f.name)
                        os.link(existing, target)
                        crash_point("install.image")
                        continue
                    except (InstallError, OSError):
                        pass
                if not base:
                    raise InstallError(f"{f.name}: no update_base_url in the GuestOS config or device.conf")
                self._download(image_url(base, cfg, f.name), target, None if f.is_hash_tree else f.mount,
                               f.name, caller_root)
                crash_point("install.image")
            conf = directory / f"{cfg.name}-{cfg.version}.conf"
            stage_config(staging, raw, sig, cert)
            crash_point("install.staged")
            commit(staging, final_dir, conf)  # a config on disk means a complete GuestOS
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        gos = GuestOS(cfg, conf, trust)
        self.store.add(gos)
        self._flash(gos)
        return gos

    def _flash(self, gos: GuestOS) -> None:
        """FLASH images once everything is there (the original's download_complete_cb): a failed
        `kernel` update is deleted again, any other GuestOS stays installed; both answer FAILED."""
        slots = self.kernel_slots if gos.name == flash.KERNEL else None
        try:
            n = flash.flash(gos, self.store.directory.parent, self._retarget)
            if slots is not None:
                slots.boot_other_once()
        except InstallError as e:
            if gos.name == flash.KERNEL:
                log.error("update %s-%d failed: %s; the update is deleted", gos.name, gos.version, e)
                self.store.purge(gos)
            raise
        if n:
            log.warning("GuestOS %s-%d: %d partition(s) flashed", gos.name, gos.version, n)

    @property
    def _retarget(self) -> flash.Retarget | None:
        return self.kernel_slots.flash_target if self.kernel_slots is not None else None

    async def fetch_missing(self, gos: GuestOS, device_base_url: str) -> None:
        """Fetch the images of an installed GuestOS that are missing or of the wrong size (at
        start: the original's guestos_mgr_update_images). Each file is checked before it replaces
        anything; a failure leaves the GuestOS as it was."""
        async with self._lock:
            await asyncio.to_thread(self._fetch_missing, gos, gos.config.update_base_url or device_base_url)

    def _fetch_missing(self, gos: GuestOS, base: str) -> None:
        todo = images.missing(gos.image_dir, gos.config)
        if not todo:
            return
        what = ", ".join(f.name for f in todo)
        if not base:
            raise InstallError(f"{what}: no update_base_url in the GuestOS config or device.conf")
        if relative_file_path(base) is not None:
            raise InstallError(f"{what}: {base} is relative to the container that pushes the GuestOS; "
                               "there is none at start")
        log.warning("GuestOS %s-%d is incomplete (%s); fetching from %s", gos.name, gos.version, what, base)
        gos.image_dir.mkdir(parents=True, exist_ok=True)
        for stale in gos.image_dir.glob(".*.img.part"):  # a fetch a crash interrupted
            stale.unlink(missing_ok=True)
        for f in todo:
            part = gos.image_dir / f".{f.name}.part"
            self._download(image_url(base, gos.config, f.name), part, None if f.is_hash_tree else f.mount,
                           f.name, Path("/"))
            os.replace(part, gos.image_dir / f.name)
        log.info("GuestOS %s-%d is complete", gos.name, gos.version)

    @staticmethod
    def _download(url: str, target: Path, m: GuestOSMount | None, name: str, caller_root: Path) -> None:
        limit = m.image_size if m is not None and m.HasField("image_size") else 1 << 40
        last: Exception | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                fetch(url, target, limit, caller_root)
                if m is not None:
                    check_download(target, m, name)
                log.info("GuestOS image %s from %s (attempt %d)", name, url, attempt)
                return
            except (InstallError, OSError) as e:
                last = e
                target.unlink(missing_ok=True)
                log.warning("GuestOS image %s from %s: attempt %d of %d failed: %s", name, url, attempt, ATTEMPTS, e)
        why = str(last)
        raise InstallError(why if why.startswith(f"{name}:") else f"{name}: {why}")
