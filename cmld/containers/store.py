"""Container configs on disk (containers/<uuid>.conf, .sig, .cert, .created, .uid, <uuid>/) and
the in-memory registry built from them.

The exact config bytes a client sent are stored, never a re-serialisation: a signature covers
those bytes, and operators diff the files they pushed.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import time
import uuid as uuidlib
from pathlib import Path

from cml_common.crashpoints import crash_point
from cml_common.fsutil import fsync_dir, remove_quietly, write_atomic
from cml_common.messages.container_pb2 import ContainerConfig, ContainerState, ContainerTokenType, ContainerType
from cml_common.paths import C0_UUID, Layout
from cml_common.textconfig import ConfigError, load_text_file, parse_text
from cmld.containers import leftovers
from cmld.containers.container import Container
from cmld.crypt import scrub
from cmld.net import allow

log = logging.getLogger(__name__)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NAME_MAX = 64
_CREATED = struct.Struct("=q")  # native time_t, as the original writes <uuid>.created
# Files a wipe keeps: the dm layout marker and the token pairing flag (inventory §2.10).
WIPE_KEEPS = frozenset({"not-stacked", "token_is_paired"})


def validate_config(cfg: ContainerConfig, source: str) -> None:
    """Semantic checks on top of the text parse, so a bad name never reaches the runtime."""
    name = cfg.name
    if not name:
        raise ConfigError(f"{source}: container name is empty")
    if len(name) > NAME_MAX:
        raise ConfigError(f"{source}: container name longer than {NAME_MAX} characters")
    if not name.isprintable() or "/" in name or name.strip() != name:
        raise ConfigError(f"{source}: container name {name!r} has forbidden characters")
    if not cfg.guest_os:
        raise ConfigError(f"{source}: guest_os is empty")
    try:
        allow.parse(cfg.net_allow)
    except allow.AllowInvalid as e:
        raise ConfigError(f"{source}: {e}") from None


def parse_container_config(data: bytes, source: str) -> ContainerConfig:
    cfg = parse_text(data, ContainerConfig, source=source)
    validate_config(cfg, source)
    return cfg


class ContainerStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._containers: dict[str, Container] = {}

    # ------------------------------------------------------------------ queries

    def all(self) -> list[Container]:
        """c0 first, then by creation time and name: a stable order for listings."""
        return sorted(
            self._containers.values(), key=lambda c: (not c.is_c0, c.created, c.name, c.uuid)
        )

    def get(self, uuid: str) -> Container | None:
        return self._containers.get(uuid)

    def by_name(self, name: str) -> Container | None:
        return next((c for c in self.all() if c.name == name), None)

    def name_taken(self, name: str, except_uuid: str | None = None) -> bool:
        return any(c.name == name and c.uuid != except_uuid for c in self._containers.values())

    def uses_guestos(self, name: str) -> bool:
        return any(c.config.guest_os == name for c in self._containers.values())

    # ------------------------------------------------------------------ loading

    def _read_created(self, uuid: str, conf: Path) -> int:
        path = self.layout.containers / f"{uuid}.created"
        try:
            raw = path.read_bytes()
            if len(raw) == _CREATED.size:
                return int(_CREATED.unpack(raw)[0])
            log.warning("%s has %d bytes, expected %d; using the config's mtime", path, len(raw), _CREATED.size)
        except FileNotFoundError:
            pass
        return int(conf.stat().st_mtime)

    def _load_one(self, path: Path) -> Container | None:
        uuid = path.stem
        if not UUID_RE.match(uuid):
            log.error("skipping container config %s: file name is not <uuid>.conf", path)
            return None
        try:
            cfg = load_text_file(path, ContainerConfig)
            validate_config(cfg, str(path))
        except ConfigError as e:
            log.error("skipping container config: %s", e)
            return None
        return Container(uuid=uuid, config=cfg, created=self._read_created(uuid, path))

    def load(self) -> None:
        """At cmld's start: what an interrupted create or remove left is swept first."""
        self._containers.clear()
        leftovers.sweep(self.layout)
        self.reload()

    def reload(self) -> list[str]:
        """Re-read every config. Active containers keep running with their config (a change is
        applied when they stop); stopped ones are replaced; vanished stopped ones are dropped."""
        if not self.layout.containers.is_dir():
            return []
        seen: set[str] = set()
        for path in sorted(self.layout.containers.glob("*.conf")):
            fresh = self._load_one(path)
            if fresh is None:
                continue
            if self.name_taken(fresh.name, except_uuid=fresh.uuid) and fresh.uuid not in self._containers:
                clash = self.by_name(fresh.name)
                log.warning("container %s has the same name %r as %s", fresh.uuid, fresh.name,
                            clash.uuid if clash else "?")
            seen.add(fresh.uuid)
            old = self._containers.get(fresh.uuid)
            if old is None:
                self._containers[fresh.uuid] = fresh
                log.info("loaded container %s (%s)", fresh.uuid, fresh.name)
            elif old.is_active:
                old.pending_config = fresh.config
                old.implicit = False
            else:
                old.implicit = False
                old.config = fresh.config
                old.created = fresh.created
        for uuid in list(self._containers):
            c = self._containers[uuid]
            if uuid not in seen and not c.is_active and not c.implicit:
                log.info("container %s has no config any more; dropped", uuid)
                del self._containers[uuid]
        return sorted(seen)

    def add_implicit_c0(self, guestos: str, version: int) -> Container:
        """The management container the original builds when no c0 config exists: name c0,
        1024 MB, its own netns, no userns, no token, the newest complete version of its GuestOS
        (pinned, so that it runs that version with signed configs too); kept in memory only."""
        cfg = ContainerConfig(name="c0", guest_os=guestos, guestos_version=version, ram_limit=1024, color=0xFFFFFF00,
                              type=ContainerType.CONTAINER, token_type=ContainerTokenType.NONE,
                              userns=False, netns=True)
        c0 = Container(uuid=C0_UUID, config=cfg, created=0, implicit=True)
        self._containers[C0_UUID] = c0
        log.info("implicit c0 from GuestOS %s version %d", guestos, version)
        return c0

    # ------------------------------------------------------------------ changes

    def create(self, raw: bytes, cfg: ContainerConfig, sig: bytes = b"", cert: bytes = b"") -> Container:
        self.layout.containers.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            uuid = str(uuidlib.uuid4())
            if uuid not in self._containers and uuid != C0_UUID:
                break
        created = int(time.time())
        conf = self.layout.container_conf(uuid)
        try:
            write_atomic(conf.with_suffix(".created"), _CREATED.pack(created))
            if sig or cert:
                write_atomic(conf.with_suffix(".sig"), sig)
                write_atomic(conf.with_suffix(".cert"), cert)
            crash_point("create.files")
            write_atomic(conf, raw)  # last: a config file exists only when complete
            crash_point("create.config")
        except OSError:
            self._remove_files(uuid)
            raise
        container = Container(uuid=uuid, config=cfg, created=created)
        self._containers[uuid] = container
        return container

    def update(self, container: Container, raw: bytes, cfg: ContainerConfig,
               sig: bytes = b"", cert: bytes = b"") -> None:
        conf = self.layout.container_conf(container.uuid)
        if sig or cert:
            write_atomic(conf.with_suffix(".sig"), sig)
            write_atomic(conf.with_suffix(".cert"), cert)
        else:
            remove_quietly(conf.with_suffix(".sig"), conf.with_suffix(".cert"))
        write_atomic(conf, raw)
        if container.is_active:
            container.pending_config = cfg
        else:
            container.config = cfg

    def _remove_files(self, uuid: str) -> None:
        """The config first (the commit point: without it there is no container at the next start,
        and `leftovers.sweep` finishes the rest), then its other files, then its directory."""
        conf = self.layout.container_conf(uuid)
        remove_quietly(conf)
        fsync_dir(conf.parent)
        crash_point("remove.config")
        remove_quietly(
            conf.with_suffix(".sig"), conf.with_suffix(".cert"), conf.with_suffix(".created"),
            conf.with_suffix(".uid"), conf.with_suffix(".uid.bad"),
        )
        # The data must not be recoverable from what stays on the disk: keys and headers zeroed first.
        for key in (self.layout.container_key(uuid), self.layout.containers / f"{uuid}-oci.key"):
            scrub.destroy_key_file(key)
        scrub.scrub_images(self.layout.container_dir(uuid))
        crash_point("remove.files")
        shutil.rmtree(self.layout.container_dir(uuid), ignore_errors=True)

    def remove(self, container: Container) -> None:
        if container.is_active:
            raise RuntimeError(f"container {container.uuid} is {ContainerState.Name(container.state)}")
        # The config goes first: if we crash half-way, no config means no container at the next
        # start, and the leftovers are only data files without an owner.
        self._remove_files(container.uuid)
        del self._containers[container.uuid]

    def wipe(self, container: Container) -> list[str]:
        """Delete the container's key and images; return what was removed."""
        if container.is_active:
            raise RuntimeError("cannot wipe an active container")
        removed = []
        key = self.layout.container_key(container.uuid)
        if scrub.destroy_key_file(key):
            removed.append(str(key))
        crash_point("wipe.key")
        cdir = self.layout.container_dir(container.uuid)
        scrub.scrub_images(cdir)
        if cdir.is_dir():
            for p in sorted(cdir.iterdir()):
                if p.name in WIPE_KEEPS:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(str(p))
                crash_point("wipe.file")
        return removed

    def forget_all(self) -> None:
        self._containers.clear()
