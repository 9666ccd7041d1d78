"""The auditor as device.conf asks for it: off with `audit_size: 0` (the original's default),
else `audit_size` MB per queue and the extension fields for threshold and checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cml_common.messages.device_pb2 import DeviceConfig

from .auditor import Auditor, Policy, capacity_bytes
from .checkpoints import Signer


def policy_of(device: DeviceConfig) -> Policy | None:
    if not device.audit_size:
        return None
    return Policy(capacity=capacity_bytes(device.audit_size),
                  warn_percent=min(max(device.audit_warn_percent, 1), 100),
                  checkpoint_records=max(device.audit_checkpoint_records, 1),
                  checkpoint_seconds=float(max(device.audit_checkpoint_seconds, 1)))


def build_auditor(device: DeviceConfig, directory: Path, *, signer: Signer | None, known: Callable[[str], bool],
                  running: Callable[[str], bool], capacity_override: int | None = None) -> Auditor | None:
    """`capacity_override` (bytes, cmld --audit-capacity) is for tests that fill a queue without
    writing megabytes."""
    policy = policy_of(device)
    if policy is None:
        return None
    if capacity_override:
        policy.capacity = capacity_override
    auditor = Auditor(directory, policy, signer=signer, known=known, running=running)
    auditor.open()
    return auditor
