"""The auditor as device.conf asks for it: off with `audit_size: 0` (the original's default),
else `audit_size` MB per queue and the extension fields for threshold and checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cml_common.auditlog.seal import load_cert
from cml_common.auditlog.verify import verify_dir
from cml_common.messages.device_pb2 import DeviceConfig

from .auditor import Auditor, Policy, capacity_bytes
from .checkpoints import Signer
from .forwarder import ForwardConfig, Forwarder
from .kernel import KernelAudit, KernelAuditError

log = logging.getLogger(__name__)


def policy_of(device: DeviceConfig) -> Policy | None:
    if not device.audit_size:
        return None
    return Policy(capacity=capacity_bytes(device.audit_size),
                  warn_percent=min(max(device.audit_warn_percent, 1), 100),
                  checkpoint_records=max(device.audit_checkpoint_records, 1),
                  checkpoint_seconds=float(max(device.audit_checkpoint_seconds, 1)))


def build_auditor(device: DeviceConfig, directory: Path, *, signer: Signer | None, known: Callable[[str], bool],
                  running: Callable[[str], bool], capacity_override: int | None = None,
                  trusted_cert: Path | None = None) -> Auditor | None:
    """`capacity_override` (bytes, cmld --audit-capacity) is for tests that fill a queue without
    writing megabytes."""
    policy = policy_of(device)
    if policy is None:
        return None
    if capacity_override:
        policy.capacity = capacity_override
    auditor = Auditor(directory, policy, signer=signer, known=known, running=running)
    auditor.open()
    if trusted_cert is not None:
        check_journal(auditor, trusted_cert)
    return auditor


NO_ANCHOR = "no trusted device certificate given"


def check_journal(auditor: Auditor, trusted_cert: Path) -> None:
    """Verify the journal as found at start (CR 3.4(2)): a violation becomes a
    `journal-integrity` record, which reaches c0's reader and the collector like any other."""
    trusted = None
    try:
        trusted = load_cert(trusted_cert.read_bytes())
    except FileNotFoundError:
        pass  # before scd made the device identity: the chain is still checked
    except (OSError, ValueError) as e:
        log.error("audit: the device certificate %s is unusable (%s); checking the chain only", trusted_cert, e)
    report = verify_dir(auditor.dir, trusted=trusted)
    problems = [p for p in report.problems if NO_ANCHOR not in p and p != "the journal is empty"
                and not p.endswith(": no journal")]
    if problems:
        log.error("audit journal integrity: %d problem(s), first: %s", len(problems), problems[0])
        auditor.log_event("FSA", "GENERIC", "journal-integrity", None, {
            "problems": str(len(problems)), "first": problems[0], "details": "; ".join(problems[:10])})
    elif report.last_seq:
        log.info("audit journal verified: %s", report.summary())


def forward_config(device: DeviceConfig) -> ForwardConfig | None:
    """None without `audit_forward_host`; ValueError when it is set without a CA to check the
    collector by (forwarding to an unauthenticated collector is refused, not silently done)."""
    if not device.audit_forward_host:
        return None
    if not device.audit_forward_ca:
        raise ValueError("audit_forward_host is set but audit_forward_ca is not: the collector cannot be authenticated")
    if bool(device.audit_forward_cert) != bool(device.audit_forward_key):
        raise ValueError("audit_forward_cert and audit_forward_key go together")
    if not 0 < device.audit_forward_port < 65536:
        raise ValueError(f"audit_forward_port {device.audit_forward_port} is not a port")
    return ForwardConfig(host=device.audit_forward_host, port=device.audit_forward_port,
                         ca=Path(device.audit_forward_ca),
                         server_name=device.audit_forward_server_name or device.audit_forward_host,
                         cert=Path(device.audit_forward_cert) if device.audit_forward_cert else None,
                         key=Path(device.audit_forward_key) if device.audit_forward_key else None)


def build_forwarder(device: DeviceConfig, auditor: Auditor, hostname: str) -> Forwarder | None:
    cfg = forward_config(device)
    if cfg is None:
        return None
    fwd = Forwarder(auditor.journal, cfg, auditor.dir / "forward.json", hostname)
    auditor.listeners.append(fwd.notify)
    return fwd


def start_kernel_audit(device: DeviceConfig, auditor: Auditor) -> KernelAudit | None:
    """cmld as the kernel's audit daemon with device.conf `audit_kernel: true` (global to the
    machine: never on a shared host); a refusal by the kernel is logged and recorded."""
    if not device.audit_kernel:
        return None
    kernel = KernelAudit(auditor)
    try:
        kernel.register()
    except KernelAuditError as e:
        log.error("kernel audit off: %s", e)
        auditor.log_event("FSA", "KAUDIT", "kernel-audit-unavailable", None, {"error": str(e)})
        return None
    kernel.start()
    auditor.stoppers.append(kernel.close)
    return kernel
