"""Constructors for the reply shapes the original sends."""

from __future__ import annotations

from collections.abc import Iterable

from cml_common.messages.container_pb2 import ContainerConfig, ContainerStatus
from cml_common.messages.control_pb2 import DaemonToController as D


def response(code: int, error: str = "") -> D:
    reply = D(code=D.RESPONSE, response=code)  # type: ignore[arg-type]
    if error:
        reply.error_message = error
    return reply


def container_configs(pairs: Iterable[tuple[str, ContainerConfig]] = ()) -> D:
    """CONTAINER_CONFIG with parallel uuid/config lists; empty lists mean failure (original)."""
    reply = D(code=D.CONTAINER_CONFIG)
    for uuid, cfg in pairs:
        reply.container_uuids.append(uuid)
        reply.container_configs.append(cfg)
    return reply


def container_status(statuses: Iterable[ContainerStatus]) -> D:
    reply = D(code=D.CONTAINER_STATUS)
    reply.container_status.extend(statuses)
    return reply


def exec_end(reason: str) -> D:
    return D(code=D.EXEC_END, exec_end_reason=reason)
