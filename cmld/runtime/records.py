"""Runtime records under the run directory (tmpfs: a reboot clears them, as it ends containers).

Written before the launcher runs and updated once init exists, so a cmld killed at any point
of a start or stop leaves enough behind for the next cmld to stop the container and clean up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cml_common.fsutil import write_atomic
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


class RecordStore:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "records"

    def path(self, uuid: str) -> Path:
        return self.dir / f"{uuid}.json"

    def write(self, ctx: StartContext) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        rec = {"uuid": ctx.uuid, "name": ctx.container.name, "init_pid": ctx.init_pid,
               "cgroup_dirs": [str(p) for p in ctx.cgroup.paths] if ctx.cgroup is not None else [],
               "netns": ctx.netns_path,
               "run_dir": str(ctx.run_dir)}
        write_atomic(self.path(ctx.uuid), json.dumps(rec).encode(), mode=0o600)

    def remove(self, ctx: StartContext) -> None:
        self.path(ctx.uuid).unlink(missing_ok=True)

    def all(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                rec = json.loads(p.read_text())
                if isinstance(rec, dict) and isinstance(rec.get("uuid"), str):
                    out.append(rec)
                    continue
            except (OSError, ValueError):
                pass
            log.warning("discarding unreadable runtime record %s", p)
            p.unlink(missing_ok=True)
        return out
