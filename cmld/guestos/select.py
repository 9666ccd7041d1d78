"""Which GuestOS version a container runs, and which versions are obsolete (the original's
cmld_container_new and guestos_mgr_purge_obsolete).

With signed configs the container config cannot be rewritten, so its `guestos_version` pins the
version exactly (a signed config is a statement about one signed GuestOS). Without, the newest
complete version is used, never one older than the config asks for.
"""

from __future__ import annotations

from collections.abc import Iterable

from cml_common.messages.container_pb2 import ContainerConfig
from cmld.errors import CmldError
from cmld.guestos.store import GuestOS, GuestOSStore


class GuestOSUnavailable(CmldError):
    """No installed GuestOS version fits a container's config; the message says what is there."""


def _installed(store: GuestOSStore, name: str) -> str:
    versions = store.versions(name)
    return "installed: " + ", ".join(str(v) for v in versions) if versions else "none is installed"


def for_container(store: GuestOSStore, cfg: ContainerConfig, signed_configs: bool) -> GuestOS:
    """The GuestOS the container runs; GuestOSUnavailable says why there is none."""
    name = cfg.guest_os
    if signed_configs:
        gos = store.get(name, cfg.guestos_version)
        if gos is None:
            raise GuestOSUnavailable(
                f"GuestOS {name!r} version {cfg.guestos_version} (pinned by the signed config's "
                f"guestos_version) is not installed ({_installed(store, name)})")
        return gos
    # The newest complete version; if none is complete, the newest, so that the start names the
    # image that is missing.
    gos = store.latest(name, complete=True) or store.latest(name)
    if gos is None:
        raise GuestOSUnavailable(f"GuestOS {name!r} is not installed")
    if gos.version < cfg.guestos_version:
        raise GuestOSUnavailable(
            f"GuestOS {name!r}: the config asks for version {cfg.guestos_version} or newer "
            f"({_installed(store, name)})")
    return gos


def in_use(store: GuestOSStore, configs: Iterable[ContainerConfig], signed_configs: bool) -> set[tuple[str, int]]:
    """(name, version) of every GuestOS a container would run now."""
    used: set[tuple[str, int]] = set()
    for cfg in configs:
        try:
            gos = for_container(store, cfg, signed_configs)
        except GuestOSUnavailable:
            continue
        used.add((gos.name, gos.version))
    return used


def obsolete(store: GuestOSStore, used: set[tuple[str, int]]) -> list[GuestOS]:
    """Versions older than the newest complete one of their name that no container uses (the
    original's rule; a version newer than that, still incomplete, is never obsolete)."""
    out = []
    for gos in store.all():
        newest = store.latest(gos.name, complete=True)
        if newest is not None and gos.version < newest.version and (gos.name, gos.version) not in used:
            out.append(gos)
    return out
