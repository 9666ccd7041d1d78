"""device.conf: the device-wide settings (hosted mode, signed configs, update URL...)."""

from __future__ import annotations

import logging
from pathlib import Path

from cml_common.messages.device_pb2 import DeviceConfig, DeviceId
from cml_common.textconfig import ConfigError, load_text_file

log = logging.getLogger(__name__)


def load_device_config(path: Path) -> DeviceConfig:
    """A missing or broken device.conf yields the defaults, which are the strict settings
    (not hosted, signed configs required), so a damaged file never loosens security."""
    if not path.exists():
        log.info("no device config at %s; using defaults", path)
        return DeviceConfig()
    try:
        cfg = load_text_file(path, DeviceConfig)
    except ConfigError as e:
        log.error("ignoring device config: %s; using the strict defaults", e)
        return DeviceConfig()
    log.info(
        "device config %s: hostedmode=%s signed_configs=%s tpm_enabled=%s",
        path, cfg.hostedmode, cfg.signed_configs, cfg.tpm_enabled,
    )
    return cfg


def load_device_uuid(path: Path) -> str:
    """The device UUID that scd writes to tokens/device_id.conf; empty until scd has run."""
    if not path.exists():
        return ""
    try:
        return load_text_file(path, DeviceId).uuid
    except ConfigError as e:
        log.error("cannot read the device UUID: %s", e)
        return ""
