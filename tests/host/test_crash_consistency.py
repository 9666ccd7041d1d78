"""Crash consistency (issue 12, item 4): cmld SIGKILLed at every step of create, start, stop, wipe,
remove and GuestOS install, then started again on the same base and run directories.

The kill comes from inside, at a named step (`CML_CRASH_AT`, cml_common/crashpoints.py), not after
a guessed sleep. After the restart, every case checks:
- nothing leaked: no mount, loop device, cgroup, netns binding, record or run dir of the container
  (`host_leaks`), no process in its cgroups, no zombie child of the new cmld, no temp file,
  staging directory or orphaned file in the base directory;
- nothing stuck: the container is STOPPED and starts again (a wiped one can be wiped again; a
  removed one is gone with all its files; a created one exists completely or not at all);
- nothing lost: what the container wrote to its volume before the kill is there after the restart
  (not synced, only written).
"""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.paths import C0_UUID
from cml_common.textconfig import load_text_file, to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, host_leaks, install_guestos, run, start, state, uuid_of, wait_state

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not is_root(), reason="needs root (namespaces, loop mounts, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "mkfs.ext4", "debugfs", "losetup"))
                       or not Path("/bin/busybox").exists(),
                       reason="building the demo GuestOS needs gcc, e2fsprogs and /bin/busybox"),
]
FAST = ("--stop-timeout", "4", "--boot-timeout", "30")

# (operation, crash point); the point names are documented in README "Crash consistency".
CASES = [
    ("create", "create.files"), ("create", "create.config"),
    ("start", "start.record"), ("start", "start.prepared"), ("start", "start.launcher"),
    ("start", "start.init_forked"), ("start", "start.post_clone"), ("start", "start.exec"),
    ("first_start", "start.mkfs"),
    ("stop", "stop.shutdown"), ("stop", "stop.init_exited"), ("stop", "stop.modules_cleaned"),
    ("stop", "stop.cleaned"),
    ("wipe", "wipe.key"), ("wipe", "wipe.file"), ("wipe", "wipe.done"),
    ("remove", "remove.config"), ("remove", "remove.files"), ("remove", "remove.done"),
    ("install", "install.image"), ("install", "install.staged"), ("install", "install.replaced"),
    ("install", "install.swapped"), ("install", "install.config"),
]
LEFTOVER = re.compile(r"(\.tmp\d*$|\.img\.tmp$|\.replaced-version$|^\.pending\.|^\.[^/]+-\d+\.[A-Za-z0-9_]{8}$)")


@dataclass
class Env:
    factory: DaemonFactory
    tmp: Path
    base: Path
    src: Path
    uuids: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.tmp / "cmld-run"

    def cmld(self, crash_at: str | None = None) -> Daemon:
        return self.factory.start(*FAST, "--no-autostart", base=self.base,
                                  env={"CML_CRASH_AT": crash_at} if crash_at else None)

    def create(self, d: Daemon, name: str = "c") -> str:
        conf = self.tmp / f"{name}.conf"
        conf.write_text(container_conf(name, ram_limit=64))
        r = cli(d.socket, "create", str(conf))
        assert r.rc == 0, r.out + r.err
        u = uuid_of(d, name)
        self.uuids.append(u)
        return u


@pytest.fixture
def env(cmld_factory: DaemonFactory, tmp_path: Path, guestos_src: Path) -> Iterator[Env]:
    base = tmp_path / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    e = Env(cmld_factory, tmp_path, base, guestos_src)
    try:
        yield e
    finally:
        cmld_factory.stop_all()


# ---------------------------------------------------------------------- helpers


def write_token(d: Daemon, path: str) -> str:
    """A token written to the container's volume (write(2) returned; no sync)."""
    token = secrets.token_hex(8)
    r = run(d, "c", "nopty", "sh", "-c", f"echo {token} > {path}")
    assert r.rc == 0, r.out + r.err
    return token


def running(d: Daemon) -> None:
    r = start(d, "c")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "c", "RUNNING", timeout=20)


def stopped(d: Daemon) -> None:
    assert cli(d.socket, "stop", "c").rc == 0
    wait_state(d, "c", "STOPPED", timeout=20)


def crashed(d: Daemon, point: str) -> None:
    """cmld killed itself at `point` (and not for another reason)."""
    try:
        rc = d.proc.wait(60)
    except Exception as e:  # pragma: no cover - the report says what happened
        raise AssertionError(f"cmld did not crash at {point}: {d.log_text()[-3000:]}") from e
    assert rc == -signal.SIGKILL, (rc, d.log_text()[-3000:])
    assert f"crash point {point} " in d.log_text(), d.log_text()[-3000:]


def procs_of(uuid: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cg = (p / "cgroup").read_text()
            st = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if uuid in cg and st not in ("Z", "X"):
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{p.name} {cmd}")
    return found


def zombie_children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                rest = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if rest[0] == "Z" and int(rest[1]) == pid:
                out.append(int(p.name))
    return out


def leftover_files(base: Path) -> list[str]:
    """Temp files, staging or replaced directories, and files of containers that have no config."""
    found = [str(p.relative_to(base)) for p in base.rglob("*") if LEFTOVER.search(p.name)]
    cdir = base / "containers"
    configs = {p.stem for p in cdir.glob("*.conf")}
    for d in (cdir, base / "keys"):
        for p in d.iterdir() if d.is_dir() else []:
            m = re.match(r"^[0-9a-f-]{36}", p.name)
            if m and m.group(0) not in configs and m.group(0) != C0_UUID:
                found.append(f"{p.relative_to(base)} (no config)")
    return found


def problems_after_restart(env: Env, d: Daemon) -> list[str]:
    problems = [f"leak: {x}" for x in host_leaks(env.run_dir, env.uuids)]
    problems += [f"process of {u}: {p}" for u in env.uuids for p in procs_of(u)]
    problems += [f"left in the base dir: {x}" for x in leftover_files(env.base)]
    time.sleep(0.2)
    problems += [f"zombie child of cmld: {z}" for z in zombie_children(d.proc.pid)]
    return problems


def gos_conf() -> str:
    return "operatingsystems/busybox-1.conf"


def publish_same_version(env: Env) -> Path:
    """The installed demo GuestOS pushed again (same name and version: it replaces itself), its
    image served from a file:// update tree."""
    repo = env.tmp / "repo"
    cfg = load_text_file(env.base / gos_conf(), GuestOSConfig)
    cfg.update_base_url = f"file://{repo}"
    img_dir = repo / "operatingsystems" / "x86" / "busybox-1"
    img_dir.mkdir(parents=True)
    shutil.copyfile(env.src / "busybox-1" / "root.img", img_dir / "root.img")
    conf = env.tmp / "push" / "busybox-1.conf"
    conf.parent.mkdir()
    conf.write_text(to_text(cfg))
    return conf


# ---------------------------------------------------------------------- the cases


@pytest.mark.parametrize(("op", "point"), CASES, ids=[p for _, p in CASES])
def test_cmld_killed_at(env: Env, op: str, point: str) -> None:
    tokens: dict[str, str] = {}
    d = env.cmld()
    if op != "create":
        env.create(d)
    if op not in ("create", "first_start"):
        running(d)
        tokens["/data/before"] = write_token(d, "/data/before")
        stopped(d)
    d.stop()

    d = env.cmld(crash_at=point)
    if op == "create":
        conf = env.tmp / "c.conf"
        conf.write_text(container_conf("c", ram_limit=64))
        cli(d.socket, "create", str(conf))
    elif op in ("start", "first_start"):
        start(d, "c")
    elif op == "stop":
        running(d)
        tokens["/data/during"] = write_token(d, "/data/during")
        cli(d.socket, "stop", "c")
    elif op == "wipe":
        cli(d.socket, "wipe", "c")
    elif op == "remove":
        cli(d.socket, "remove", "c")
    elif op == "install":
        cli(d.socket, "push_guestos_config", str(publish_same_version(env)), timeout=120)
    crashed(d, point)

    d = env.cmld()
    problems = problems_after_restart(env, d)
    listing = cli(d.socket, "list").out
    if op == "create":
        exists = "name: \"c\"" in listing
        assert exists == (point == "create.config"), listing
        if exists:
            env.uuids.append(uuid_of(d, "c"))
    if op == "remove":
        assert "name: \"c\"" not in listing, "a removed container is back"
        assert not list((env.base / "containers").glob(f"{env.uuids[0]}*")), "files of the removed container"
    elif not (op == "create" and point == "create.files"):
        assert state(d, "c") == "STOPPED", state(d, "c")
        if op == "wipe":
            r = cli(d.socket, "wipe", "c")
            assert r.rc == 0, r.out + r.err
        running(d)
        for path, token in tokens.items() if op != "wipe" else ():
            r = run(d, "c", "nopty", "cat", path)
            if r.out.strip() != token:
                problems.append(f"data lost: {path} reads {r.out.strip()!r}, {token!r} was written before the kill")
        stopped(d)
    if op == "install":
        img = env.base / "operatingsystems" / "busybox-1" / "root.img"
        if not img.exists() or img.read_bytes() != (env.src / "busybox-1" / "root.img").read_bytes():
            problems.append("the GuestOS image is missing or differs")
    problems += problems_after_restart(env, d)
    assert problems == [], "\n".join(problems) + "\n" + d.log_text()[-3000:]
