"""The launch spec a start begins with, before the modules fill in theirs: identity, the run
directories, init and its environment (GuestOS `init_env`, then the container's)."""

from __future__ import annotations

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.containers.container import Container
from cmld.launcher.spec import LaunchSpec
from cmld.modules.settings import RuntimeSettings


def base_spec(c: Container, gos: GuestOSConfig | None, settings: RuntimeSettings, setup: bool) -> LaunchSpec:
    init: list[str] = []
    env: list[str] = []
    if gos is not None:
        init = [gos.init_path or "/init", *gos.init_param]
        env = list(gos.init_env)
    env += list(c.config.init_env)
    run_dir = settings.run_dir / "containers" / c.uuid
    return LaunchSpec(uuid=c.uuid, name=c.name, hostname=c.name, root_dir=str(run_dir / "root"),
                      work_dir=str(run_dir / "work"), init=init, env=env, setup_mode=setup)
