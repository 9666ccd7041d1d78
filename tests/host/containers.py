"""Helpers for tests that run real containers: the demo GuestOS, configs, state polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import load_text_file, to_text

from ..conftest import CliResult, Daemon, cli

REPO = Path(__file__).resolve().parents[2]
_BUILT: dict[str, Path] = {}


def demo_guestos(cache: Path) -> Path:
    """Build the busybox GuestOS once per test process; returns the operatingsystems dir."""
    key = str(cache)
    if key not in _BUILT:
        out = cache / "operatingsystems"
        if not (out / "busybox-1.conf").exists():
            out.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(out)], check=True,
                           capture_output=True, timeout=120)
        _BUILT[key] = out
    return _BUILT[key]


def install_guestos(src: Path, base: Path, *, name: str = "busybox", **changes: object) -> GuestOSConfig:
    """Copy the demo GuestOS into a base dir, optionally as a variant (other name, init...)."""
    dst = base / "operatingsystems"
    dst.mkdir(parents=True, exist_ok=True)
    cfg = load_text_file(src / "busybox-1.conf", GuestOSConfig)
    cfg.name = name
    for k, v in changes.items():
        if k == "init_param":
            del cfg.init_param[:]
            cfg.init_param.extend(v)  # type: ignore[arg-type]
        else:
            setattr(cfg, k, v)
    img_dir = dst / f"{name}-1"
    img_dir.mkdir(exist_ok=True)
    for img in (src / "busybox-1").glob("*.img"):
        target = img_dir / img.name
        if not target.exists():
            shutil.copyfile(img, target)
    (dst / f"{name}-1.conf").write_text(to_text(cfg))
    return cfg


def container_conf(name: str, guestos: str = "busybox", **fields: object) -> str:
    lines = [f'name: "{name}"', f'guest_os: "{guestos}"', "color: 0", "type: CONTAINER", "token_type: NONE"]
    for k, v in fields.items():
        values = v if isinstance(v, list) else [v]
        for item in values:
            if isinstance(item, bool):
                lines.append(f"{k}: {'true' if item else 'false'}")
            elif isinstance(item, int):
                lines.append(f"{k}: {item}")
            else:
                lines.append(f'{k}: "{item}"')
    return "\n".join(lines) + "\n"


def create(d: Daemon, tmp: Path, name: str, guestos: str = "busybox", **fields: object) -> str:
    conf = tmp / f"{name}-{uuid.uuid4().hex[:6]}.conf"
    conf.write_text(container_conf(name, guestos, **fields))
    r = cli(d.socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err
    return name


def state(d: Daemon, name: str) -> str:
    r = cli(d.socket, "state", name)
    for line in r.out.splitlines():
        if line.strip().startswith("state:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no state for {name}: {r.out} {r.err}")


def wait_state(d: Daemon, name: str, want: str, timeout: float = 20) -> float:
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        last = state(d, name)
        if last == want:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed {last}, wanted {want}; log:\n{d.log_text()[-3000:]}")


def start(d: Daemon, name: str, *extra: str) -> CliResult:
    return cli(d.socket, "start", name, *extra)


def run(d: Daemon, name: str, *argv: str, timeout: float = 30) -> CliResult:
    return cli(d.socket, "run", name, *argv, timeout=timeout)


def own_cgroup_dirs() -> list[Path]:
    """The cgroups this test runs in, one per hierarchy: the cmlds it starts make their containers'
    cgroups below them, so a left-over of an earlier, killed run elsewhere is not counted."""
    root = Path("/sys/fs/cgroup")
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers:
            names = [c.removeprefix("name=") for c in controllers.split(",")]
            mounts = [root / n for n in names if (root / n).is_dir()]
        else:
            mounts = [root / "unified" if (root / "unified").is_dir() else root]
        dirs += [m / path.lstrip("/") for m in mounts[:1]]
    return [d for d in dirs if d.is_dir()]


def host_leaks(run_dir: Path, uuids: list[str]) -> list[str]:
    """What a container could have left on the host: mounts, loop devices, cgroups, netns, records."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    for u in uuids:
        if u in mounts:
            found.append(f"mount of {u}")
        if Path(f"/run/netns/{u}").exists():
            found.append(f"netns {u}")
        for top in own_cgroup_dirs():
            # os.walk, not glob: other tests' cgroups come and go during the walk (ignored errors)
            for d, subdirs, _ in os.walk(top):
                if u in subdirs:
                    found.append(f"cgroup {Path(d) / u}")
        if (run_dir / "records" / f"{u}.json").exists():
            found.append(f"record {u}")
        if (run_dir / "containers" / u).exists():
            found.append(f"run dir {u}")
    for line in loops.splitlines():
        if str(run_dir.parent) in line:
            found.append(f"loop {line}")
    return found


def uuid_of(d: Daemon, name: str) -> str:
    r = cli(d.socket, "state", name)
    for line in r.out.splitlines():
        if line.strip().startswith("uuid:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise AssertionError(r.out)
