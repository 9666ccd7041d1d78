"""What cmld made in its own network namespace, written before it is made (write-ahead), so the
next cmld can take it away after a crash or `kill -9`.

Everything a container holds in its own namespace (its end of a veth, a moved NIC) goes with
that namespace once the next cmld has killed the container and unbound it. What lives in cmld's
namespace does not: the router ends of veths in hosted mode, the CML uplink, MAC-filter bridges,
the nftables tables, and the names of the NICs cmld renamed or lent out. Those are listed here,
in the run directory (tmpfs: a reboot clears it, as it clears the objects).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.links: dict[str, str] = {}  # interface name -> kind ("veth", "bridge")
        self.nic_names: dict[str, str] = {}  # MAC -> the name the NIC had when cmld first saw it
        self.tables = False  # cmld's nftables tables may exist in its namespace

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.links = {str(k): str(v) for k, v in dict(data.get("links", {})).items()}
            self.nic_names = {str(k): str(v) for k, v in dict(data.get("nic_names", {})).items()}
            self.tables = bool(data.get("tables", False))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError, TypeError) as e:
            log.warning("network journal %s unreadable (%s): starting from an empty one", self.path, e)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"links": self.links, "nic_names": self.nic_names, "tables": self.tables}
        # tmpfs (the run directory): the rename is what matters, an fsync would only cost time
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def add_link(self, name: str, kind: str) -> None:
        self.links[name] = kind
        self._save()

    def drop_link(self, name: str) -> None:
        if self.links.pop(name, None) is not None:
            self._save()

    def remember_nic(self, mac: str, name: str) -> None:
        if self.nic_names.get(mac) != name:
            self.nic_names[mac] = name
            self._save()

    def set_tables(self, present: bool) -> None:
        if self.tables != present:
            self.tables = present
            self._save()

    def clear_links(self) -> None:
        self.links.clear()
        self._save()
