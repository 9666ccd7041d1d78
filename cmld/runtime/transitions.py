"""Which state changes the lifecycle allows (the original's transition table, §2.2)."""

from __future__ import annotations

from cml_common.messages.container_pb2 import ContainerState as S

ALLOWED: dict[int, frozenset[int]] = {
    S.STOPPED: frozenset({S.STARTING, S.ZOMBIE}),  # ZOMBIE: a corrupt key file, found before the start
    S.STARTING: frozenset({S.BOOTING, S.SETUP, S.STOPPED, S.ZOMBIE, S.SHUTDOWN}),
    S.BOOTING: frozenset({S.RUNNING, S.SHUTDOWN, S.STOPPED, S.REBOOTING}),
    S.RUNNING: frozenset({S.FREEZING, S.SHUTDOWN, S.STOPPED, S.REBOOTING}),
    S.SETUP: frozenset({S.FREEZING, S.SHUTDOWN, S.STOPPED, S.REBOOTING}),
    S.FREEZING: frozenset({S.FROZEN, S.RUNNING, S.SETUP, S.STOPPED}),
    S.FROZEN: frozenset({S.RUNNING, S.SETUP, S.STOPPED}),
    S.SHUTDOWN: frozenset({S.STOPPED, S.REBOOTING}),
    S.REBOOTING: frozenset({S.STARTING, S.STOPPED}),
    S.ZOMBIE: frozenset({S.STOPPED}),
}

STOPPABLE = frozenset({S.RUNNING, S.BOOTING, S.SETUP})
STARTABLE = frozenset({S.STOPPED, S.REBOOTING})
FREEZABLE = frozenset({S.RUNNING, S.SETUP})
EXEC_STATES = frozenset({S.BOOTING, S.RUNNING, S.SETUP})


def allowed(old: int, new: int) -> bool:
    return old == new or new in ALLOWED.get(old, frozenset())
