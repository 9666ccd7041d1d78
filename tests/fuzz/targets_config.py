"""In-process fuzz targets for the text configs: device.conf, device_id.conf, container configs,
GuestOS configs, the verifier's config and its event-log policy (JSON), each through the same
functions the daemons and tools call (the lenient text parse and the checks on top). The only
error a bad config may raise is ConfigError (PolicyError for the JSON policy)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cml_common import textconfig
from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.device_pb2 import DeviceConfig, DeviceId
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import ConfigError
from cml_rattestation import attest, refpolicy
from cml_rattestation.outcome import parse_hex
from cmld.containers.store import parse_container_config
from cmld.device.config import load_device_config, load_device_uuid
from tests.fuzz.registry import scratch

_TMP = scratch("cfg")


def _write(name: str, data: bytes) -> Path:
    p = _TMP / name
    p.write_bytes(data)
    return p


def _roundtrip(msg: object) -> None:
    """What a parse accepted prints back to text that parses to the same message (cmld prints
    configs with to_text for GET_CONTAINER_CONFIG and `cml-control config`)."""
    text = textconfig.to_text(msg)  # type: ignore[arg-type]
    if text.strip():
        again = textconfig.parse_text(text, type(msg))  # type: ignore[arg-type]
        if again != msg:
            raise AssertionError(f"{type(msg).__name__} does not survive to_text/parse_text")


def cfg_device(data: bytes) -> None:
    """device.conf as cmld reads it (a broken file gives the strict defaults), and device_id.conf."""
    path = _write("device.conf", data)
    cfg = load_device_config(path)
    if not isinstance(cfg, DeviceConfig):
        raise AssertionError("load_device_config returned something else")
    with contextlib.suppress(ConfigError):
        _roundtrip(textconfig.parse_text(data, DeviceConfig))
    load_device_uuid(_write("device_id.conf", data))
    with contextlib.suppress(ConfigError):
        textconfig.parse_text(data, DeviceId)


def cfg_container(data: bytes) -> None:
    """A container config as CREATE_CONTAINER and the store read it: parse and validate."""
    try:
        cfg = parse_container_config(data, "fuzz")
    except ConfigError:
        return
    if not isinstance(cfg, ContainerConfig) or not cfg.name or not cfg.guest_os:
        raise AssertionError("a container config without name or guest_os passed validation")
    _roundtrip(cfg)


def cfg_guestos(data: bytes) -> None:
    """A GuestOS config as PUSH_GUESTOS_CONFIG and the store read it."""
    try:
        cfg = textconfig.parse_text(data, GuestOSConfig, source="fuzz")
    except ConfigError:
        return
    _roundtrip(cfg)


def cfg_rattestation(data: bytes) -> None:
    """The verifier's config file, with its checks, and the hex of its golden PCR values."""
    try:
        cfg = attest.load_config(_write("rattestation.conf", data))
    except ConfigError:
        return
    for p in cfg.pcr_values:
        with contextlib.suppress(ValueError):
            parse_hex(p.value)
    _roundtrip(cfg)


def eventlog_policy(data: bytes) -> None:
    """The verifier's JSON reference policy for the UEFI event log."""
    with contextlib.suppress(refpolicy.PolicyError):
        refpolicy.EventLogPolicy.load(_write("policy.json", data))
