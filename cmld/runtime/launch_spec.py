"""The launch spec a start begins with, before the modules fill in theirs: identity, the run
directories, init and its environment (GuestOS `init_env`, then the container's)."""

from __future__ import annotations

import logging

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.containers.container import Container
from cmld.launcher.spec import LaunchSpec
from cmld.modules.settings import RuntimeSettings

log = logging.getLogger(__name__)


def base_spec(c: Container, gos: GuestOSConfig | None, settings: RuntimeSettings, setup: bool) -> LaunchSpec:
    init: list[str] = []
    env: list[str] = []
    if gos is not None:
        init = [gos.init_path or "/init", *gos.init_param]
        env = list(gos.init_env)
    env += list(c.config.init_env)
    run_dir = settings.run_dir / "containers" / c.uuid
    return LaunchSpec(uuid=c.uuid, name=c.name, hostname=c.name, root_dir=str(run_dir / "root"),
                      work_dir=str(run_dir / "work"), init=init, env=env, setup_mode=setup,
                      cservice=str(settings.cservice) if settings.cservice else "",
                      cservice_note=settings.cservice_note)


def log_init_notes(name: str, spec: LaunchSpec, success: dict[str, object]) -> None:
    """What the child reported about init in SUCCESS: placement notes (cservice), and which init it
    runs when the GuestOS's `init_path` is not in the container (the /sbin/cservice fallback)."""
    notes = success.get("notes")
    for note in notes if isinstance(notes, list) else []:
        log.warning("container %s: %s", name, note)
    init = success.get("init")
    if spec.init and init and init != spec.init[0]:
        log.info("container %s: init %s is not in the container: running %s with the same arguments",
                 name, spec.init[0], init)
