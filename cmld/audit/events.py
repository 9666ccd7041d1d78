"""Where cmld's code reports an audit event, without depending on the audit subsystem.

Code at the point an event happens calls `emit(...)`; cmld's main installs the auditor as the
sink. With auditing off (device.conf `audit_size: 0`, the original's default) there is no sink
and `emit` does nothing, as the original's `audit_log_event`.

The control client's identity (SO_PEERCRED uid and pid) travels in a context variable set by the
control dispatcher around each command, so an event deep inside a handler (a wrong PIN, a refused
signature) carries who asked for it.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Sink(Protocol):
    def log_event(self, category: str, evclass: str, event: str, subject: str | None,
                  meta: dict[str, str]) -> None: ...


client: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("audit_client", default=None)
_sinks: list[Sink] = []  # at most one: the auditor


def install(sink: Sink | None) -> None:
    _sinks.clear()
    if sink is not None:
        _sinks.append(sink)


def enabled() -> bool:
    return bool(_sinks)


def emit(category: str, evclass: str, event: str, subject: str | None = None, *, with_client: bool = True,
         **meta: str) -> None:
    """Never raises: a failure to audit is logged (and recorded by the auditor where it can).
    `with_client=False` for events of the system's own making: tasks started during a command
    inherit its context, so a container's later transitions would otherwise name that client."""
    emit_meta(category, evclass, event, subject, meta, with_client=with_client)


def emit_meta(category: str, evclass: str, event: str, subject: str | None, meta: dict[str, str], *,
              with_client: bool = True) -> None:
    if not _sinks:
        return
    meta = dict(meta)
    who = client.get() if with_client else None
    if who is not None:
        meta.setdefault("client_uid", str(who[0]))
        meta.setdefault("client_pid", str(who[1]))
    try:
        _sinks[0].log_event(category, evclass, event, subject, meta)
    except Exception:
        log.exception("audit event %s.%s.%s not recorded", category, evclass, event)
