"""GuestOS configs on disk: operatingsystems/<name>-<version>.conf (+ .sig, .cert, image dir)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from cml_common.fsutil import remove_quietly
from cml_common.messages.container_pb2 import ContainerTrust
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import ConfigError, load_text_file
from cmld.guestos import images
from cmld.guestos.commit import recover

log = logging.getLogger(__name__)


@dataclass
class GuestOS:
    config: GuestOSConfig
    conf_path: Path
    # Set by guestos_install.verify_store / the push: SIGNED, LOCALLY_SIGNED or UNSIGNED.
    trust: int = ContainerTrust.UNSIGNED

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> int:
        return self.config.version

    @property
    def image_dir(self) -> Path:
        return self.conf_path.with_suffix("")

    @property
    def complete(self) -> bool:
        """Every image is there with its stated size (the original's quick check, not cached:
        images can be fetched or lost while cmld runs)."""
        return images.is_complete(self.image_dir, self.config)


class GuestOSStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_name: dict[str, dict[int, GuestOS]] = {}

    def load(self) -> None:
        """At cmld's start: an install a crash interrupted is finished or undone first."""
        self._by_name.clear()
        if not self.directory.is_dir():
            log.info("no GuestOS directory %s", self.directory)
            return
        recover(self.directory)
        for path in sorted(self.directory.glob("*.conf")):
            try:
                cfg = load_text_file(path, GuestOSConfig)
            except ConfigError as e:
                log.error("skipping GuestOS config: %s", e)
                continue
            expected = f"{cfg.name}-{cfg.version}.conf"
            if "/" in cfg.name or not cfg.name:
                log.error("skipping GuestOS config %s: invalid name %r", path, cfg.name)
                continue
            if path.name != expected:
                log.error("skipping GuestOS config %s: name/version say it should be %s", path, expected)
                continue
            self._by_name.setdefault(cfg.name, {})[cfg.version] = GuestOS(cfg, path)
            log.info("loaded GuestOS %s version %d", cfg.name, cfg.version)

    def latest(self, name: str, *, complete: bool = False) -> GuestOS | None:
        """The newest version, or with `complete` the newest whose images are all there."""
        versions = self._by_name.get(name, {})
        for v in sorted(versions, reverse=True):
            if not complete or versions[v].complete:
                return versions[v]
        return None

    def get(self, name: str, version: int) -> GuestOS | None:
        return self._by_name.get(name, {}).get(version)

    def versions(self, name: str) -> list[int]:
        return sorted(self._by_name.get(name, {}))

    def latest_all(self) -> list[GuestOS]:
        return [self._by_name[n][max(self._by_name[n])] for n in sorted(self._by_name)]

    def all(self) -> list[GuestOS]:
        return [g for n in sorted(self._by_name) for _, g in sorted(self._by_name[n].items())]

    def add(self, gos: GuestOS) -> None:
        self._by_name.setdefault(gos.name, {})[gos.version] = gos

    def drop(self, gos: GuestOS) -> None:
        """Forget a GuestOS (it failed verification); its files stay for the operator to look at."""
        versions = self._by_name.get(gos.name, {})
        versions.pop(gos.version, None)
        if not versions:
            self._by_name.pop(gos.name, None)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def remove_latest(self, name: str) -> GuestOS:
        """Delete the newest version's config, signature, certificate and images."""
        gos = self.latest(name)
        if gos is None:
            raise KeyError(name)
        remove_quietly(gos.conf_path, gos.conf_path.with_suffix(".sig"), gos.conf_path.with_suffix(".cert"))
        shutil.rmtree(gos.image_dir, ignore_errors=True)
        del self._by_name[name][gos.version]
        if not self._by_name[name]:
            del self._by_name[name]
        return gos

    def purge(self, gos: GuestOS) -> None:
        """Delete one version as the original's guestos_purge: its image files (and hash trees),
        its config, signature and certificate, then its directory if nothing else is left in it."""
        for m in gos.config.mounts:
            remove_quietly(gos.image_dir / f"{m.image_file}.img", gos.image_dir / f"{m.image_file}.hash.img")
        remove_quietly(gos.conf_path, gos.conf_path.with_suffix(".sig"), gos.conf_path.with_suffix(".cert"))
        try:
            gos.image_dir.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("GuestOS %s-%d: %s is not removed: %s", gos.name, gos.version, gos.image_dir, e.strerror)
        self.drop(gos)

    def clear(self) -> None:
        self._by_name.clear()
