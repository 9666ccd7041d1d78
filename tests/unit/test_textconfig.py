"""Lenient text-format parsing, as protobuf-c-text does it."""

from __future__ import annotations

import pytest

from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import ConfigError, parse_text, to_text

pytestmark = pytest.mark.unit


def test_missing_required_scalars_take_defaults_and_are_sent() -> None:
    cfg = parse_text(b'name: "a"\nguest_os: "b"\n', ContainerConfig)
    assert cfg.IsInitialized()
    assert cfg.HasField("color") and cfg.color == 0 and cfg.token_type == 2 and cfg.userns


def test_missing_required_string_is_an_error() -> None:
    with pytest.raises(ConfigError, match="guest_os"):
        parse_text('name: "a"', ContainerConfig)


def test_nested_required_strings_are_checked() -> None:
    text = 'name: "g" hardware: "x" version: 1 description { en: "d" } mounts { image_file: "r" }'
    with pytest.raises(ConfigError, match=r"mounts\[0\]\.mount_point"):
        parse_text(text, GuestOSConfig)


@pytest.mark.parametrize("data,why", [
    (b"", "empty"), (b"  \n\t", "empty"), (b"name: \"a\" \x00", "NUL"), (b"\xff\xfe", "UTF-8"),
    (b'name: "a"\nguest_os: "b"\nbogus: 1\n', "bogus"), (b'name: "a"\nguest_os: "b"\nram_limit: "x"\n', "ram_limit"),
    (b'name: "a" guest_os:', "Expected string"), (b"x" * (4 * 1024 * 1024 + 1), "larger"),
])
def test_bad_input_is_rejected_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_text(data, ContainerConfig, source="t.conf")


def test_round_trip_text() -> None:
    cfg = parse_text('name: "a"\nguest_os: "b"\nassign_cpus: "0-1"\n', ContainerConfig)
    again = parse_text(to_text(cfg), ContainerConfig)
    assert again == cfg
