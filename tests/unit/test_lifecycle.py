"""The container lifecycle as pure logic: the transition table against the original's (inventory
§2.2), the module order, and a start that fails in a hook: every module cleans up, in reverse,
and the container ends STOPPED (ZOMBIE for a corrupted volume) with the hook's reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.container_pb2 import ContainerState as S
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.cgroups.driver import CgroupDriver, CgroupLimits, ContainerCgroup
from cmld.containers.container import Container
from cmld.errors import StartError, StateError
from cmld.modules.base import Module
from cmld.modules.context import StartContext
from cmld.modules.devices import DeviceAssignments
from cmld.modules.order import ModuleDeps, container_modules
from cmld.modules.settings import RuntimeSettings
from cmld.runtime.compartment import Compartment
from cmld.runtime.records import RecordStore
from cmld.runtime.transitions import ALLOWED, EXEC_STATES, FREEZABLE, STARTABLE, STOPPABLE, allowed

pytestmark = pytest.mark.unit

# The original's transitions (inventory §2.2, "Transitions" table), as (from, to).
ORIGINAL = {
    (S.STOPPED, S.STARTING), (S.REBOOTING, S.STARTING), (S.STARTING, S.STOPPED), (S.STARTING, S.SETUP),
    (S.STARTING, S.ZOMBIE), (S.STARTING, S.BOOTING), (S.BOOTING, S.RUNNING), (S.BOOTING, S.STOPPED),
    (S.RUNNING, S.FREEZING), (S.SETUP, S.FREEZING), (S.FREEZING, S.FROZEN), (S.FREEZING, S.RUNNING),
    (S.FROZEN, S.RUNNING), (S.RUNNING, S.SHUTDOWN), (S.BOOTING, S.SHUTDOWN), (S.SETUP, S.SHUTDOWN),
    (S.SHUTDOWN, S.STOPPED), (S.RUNNING, S.REBOOTING), (S.BOOTING, S.REBOOTING), (S.SETUP, S.REBOOTING),
    (S.ZOMBIE, S.STOPPED),
}


def test_every_transition_of_the_original_is_allowed() -> None:
    missing = [(S.Name(a), S.Name(b)) for a, b in ORIGINAL if not allowed(a, b)]
    assert not missing


def test_the_table_adds_only_documented_transitions() -> None:
    ours = {(a, b) for a, targets in ALLOWED.items() for b in targets}
    extra = {(S.Name(a), S.Name(b)) for a, b in ours - ORIGINAL}
    # killed in any running state (container_kill -> STOPPED via SIGCHLD); a corrupt key file
    # found before the start (STOPPED -> ZOMBIE); a stop during the start; an unfreeze back to
    # SETUP; a frozen container killed; a shutdown that ends in a reboot signal.
    assert extra == {
        ("STOPPED", "ZOMBIE"), ("STARTING", "SHUTDOWN"), ("RUNNING", "STOPPED"), ("SETUP", "STOPPED"),
        ("FREEZING", "SETUP"), ("FREEZING", "STOPPED"), ("FROZEN", "SETUP"), ("FROZEN", "STOPPED"),
        ("SHUTDOWN", "REBOOTING"), ("REBOOTING", "STOPPED"),
    }


def test_no_state_is_a_dead_end_and_every_state_is_known() -> None:
    assert set(ALLOWED) == set(S.values())
    assert all(ALLOWED[s] for s in ALLOWED)
    assert allowed(S.RUNNING, S.RUNNING)  # unchanged is a no-op, as the original
    assert not allowed(S.STOPPED, S.RUNNING) and not allowed(S.ZOMBIE, S.STARTING)


def test_action_state_sets() -> None:
    assert {S.STOPPED, S.REBOOTING} == STARTABLE
    assert {S.RUNNING, S.BOOTING, S.SETUP} == STOPPABLE  # "stoppable" in the original
    assert {S.RUNNING, S.SETUP} == FREEZABLE
    assert {S.BOOTING, S.RUNNING, S.SETUP} == EXEC_STATES


# ---------------------------------------------------------------------------- module order


async def stop_goes_on(_after: Module) -> None:
    return None


class NoCgroups(CgroupDriver):
    """The order is decided before any cgroup exists; nothing here may touch one."""

    version = 0

    def create(self, name: str, limits: CgroupLimits) -> ContainerCgroup:
        raise AssertionError("no cgroups in a unit test")

    def open_existing(self, name: str) -> ContainerCgroup | None:
        return None


def test_module_order_is_the_originals_link_order(tmp_path: Path) -> None:
    deps = ModuleDeps(settings(tmp_path), NoCgroups(), DeviceAssignments())
    names = [m.name for m in container_modules(container("a"), deps, lambda: None, stop_goes_on)]
    # c_user, c_cgroups, c_cgroups_dev, c_net, c_vol (+ its lxcfs /proc view), c_service, c_run (halt), c_time,
    # c_cap, c_seccomp
    assert names == ["userns", "cgroups", "devices", "network", "volumes", "meminfo", "service", "halt", "time",
                     "capabilities", "seccomp"]

    async def serve(_sock: object, _pid: int, _privileged: bool) -> object:
        raise AssertionError("not called here")

    c0 = Container(uuid="00000000-0000-0000-0000-000000000000", config=ContainerConfig(name="c0", guest_os="x"))
    deps.serve_control = serve  # type: ignore[assignment]
    names = [m.name for m in container_modules(c0, deps, lambda: None, stop_goes_on)]
    assert names.index("control_socket") == names.index("service") + 1  # after the service


# ---------------------------------------------------------------------------- rollback


def settings(tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings(base_dir=tmp_path, run_dir=tmp_path / "run", containers_dir=tmp_path / "containers",
                           guestos_dir=tmp_path / "os", shared_files_dir=tmp_path / "files")


def container(name: str) -> Container:
    return Container(uuid="11111111-2222-3333-4444-555555555555",
                     config=ContainerConfig(name=name, guest_os="busybox"))


class Recorder(Module):
    def __init__(self, name: str, calls: list[str], fail_in: str = "", corrupted: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail_in = fail_in
        self.corrupted = corrupted

    async def prepare(self, ctx: StartContext) -> None:
        self.calls.append(f"prepare {self.name}")
        if self.fail_in == "prepare":
            raise StartError(f"{self.name} refuses", corrupted=self.corrupted)

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        self.calls.append(f"cleanup {self.name}")
        if self.fail_in == "cleanup":
            raise RuntimeError("a cleanup that fails must not stop the others")


class Host:
    """The runtime side a compartment needs, with fake modules."""

    def __init__(self, tmp_path: Path, modules: list[Module]) -> None:
        self.settings = settings(tmp_path)
        self.records = RecordStore(self.settings.run_dir)
        self.modules = modules
        self.stopped: list[str] = []

    def guestos_config(self, c: Container) -> GuestOSConfig | None:
        return GuestOSConfig(name="busybox", version=1)

    def build_modules(self, c: Container) -> list[Module]:
        return self.modules

    def on_stopped(self, comp: Compartment) -> None:
        self.stopped.append(comp.container.uuid)


@pytest.mark.parametrize("corrupted", [False, True])
def test_a_failing_hook_rolls_every_module_back(tmp_path: Path, corrupted: bool) -> None:
    calls: list[str] = []
    mods: list[Module] = [Recorder("first", calls), Recorder("second", calls, fail_in="cleanup"),
                          Recorder("third", calls, fail_in="prepare", corrupted=corrupted),
                          Recorder("fourth", calls)]
    host = Host(tmp_path, mods)
    c = container("app")
    comp = Compartment(c, host)
    seen: list[tuple[int, int]] = []
    comp.observers.append(lambda _c, old, new: seen.append((old, new)))

    with pytest.raises(StartError, match="third refuses") as err:
        asyncio.run(comp.start())
    assert err.value.corrupted is corrupted
    assert calls == ["prepare first", "prepare second", "prepare third",
                     "cleanup fourth", "cleanup third", "cleanup second", "cleanup first"]
    end = S.ZOMBIE if corrupted else S.STOPPED
    assert c.state == end and seen == [(S.STOPPED, S.STARTING), (S.STARTING, end)]
    assert comp.last_error == "third refuses"
    # nothing of the start is left: no record, no run directory
    assert not list((tmp_path / "run").rglob("*.json"))
    assert not (tmp_path / "run" / "containers" / c.uuid).exists()


def test_preconditions_carry_the_originals_replies(tmp_path: Path) -> None:
    host = Host(tmp_path, [])
    c = container("app")
    comp = Compartment(c, host)
    with pytest.raises(StateError) as e:
        comp.check_stoppable()
    assert e.value.reply == D.CONTAINER_STOP_FAILED_NOT_RUNNING
    with pytest.raises(StateError) as e:
        asyncio.run(comp.freeze())
    assert e.value.reply == D.CMD_FAILED
    comp.set_state(S.STARTING)
    with pytest.raises(StateError) as e:
        comp.check_startable()
    assert e.value.reply == D.CONTAINER_START_EEXIST
    comp.set_state(S.ZOMBIE)
    with pytest.raises(StateError) as e:
        comp.check_startable()
    assert e.value.reply == D.CONTAINER_START_EINTERNAL and "wipe" in str(e.value)
    comp.set_state(S.RUNNING)  # not in the table: refused, state unchanged
    assert c.state == S.ZOMBIE
