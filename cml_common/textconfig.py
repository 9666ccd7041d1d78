"""Protobuf text-format configs (device.conf, container and GuestOS configs), parsed like the
original: unknown fields and syntax errors are rejected, but missing *scalar* required fields take
their defaults. Only missing string, bytes and message fields are errors, exactly the fields
protobuf-c-text's completeness check flags (CI configs routinely omit `color`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cml_common.errors import CmlError

M = TypeVar("M", bound=Message)

MAX_CONFIG_SIZE = 4 * 1024 * 1024
_POINTER_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE)


class ConfigError(CmlError):
    """A config that cannot be used; the message says where and why."""


def _is_required(field: Any) -> bool:
    return bool(field.is_required)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def missing_required(msg: Message, prefix: str = "") -> list[str]:
    """Dotted names of required string/bytes/message fields that are not set, recursively."""
    missing: list[str] = []
    for field in msg.DESCRIPTOR.fields:
        name = prefix + field.name
        if _is_repeated(field):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for i, item in enumerate(getattr(msg, field.name)):
                    missing += missing_required(item, f"{name}[{i}].")
            continue
        if _is_required(field) and field.type in _POINTER_TYPES and not msg.HasField(field.name):
            missing.append(name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and msg.HasField(field.name):
            missing += missing_required(getattr(msg, field.name), name + ".")
    return missing


def fill_required_defaults(msg: Message) -> None:
    """Set every unset required scalar to its default, recursively. protobuf-c always
    serialises required fields, so a leniently parsed config must carry them before it is sent."""
    for field in msg.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                for item in getattr(msg, field.name):
                    fill_required_defaults(item)
            elif msg.HasField(field.name):
                fill_required_defaults(getattr(msg, field.name))
        elif _is_required(field) and not msg.HasField(field.name):
            setattr(msg, field.name, field.default_value)


def parse_text(data: bytes | str, cls: type[M], *, source: str = "<input>") -> M:
    if isinstance(data, bytes):
        if len(data) > MAX_CONFIG_SIZE:
            raise ConfigError(f"{source}: {len(data)} bytes, larger than {MAX_CONFIG_SIZE}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not UTF-8 text ({e})") from e
    else:
        text = data
    if "\x00" in text:
        raise ConfigError(f"{source}: contains a NUL byte")
    if not text.strip():
        raise ConfigError(f"{source}: empty {cls.__name__}")
    msg = cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: {e}") from e
    missing = missing_required(msg)
    if missing:
        raise ConfigError(f"{source}: required field(s) missing: {', '.join(missing)}")
    fill_required_defaults(msg)
    return msg


def load_text_file(path: Path, cls: type[M]) -> M:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_SIZE:
            raise ConfigError(f"{path}: {size} bytes, larger than {MAX_CONFIG_SIZE}")
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    return parse_text(data, cls, source=str(path))


def to_text(msg: Message) -> str:
    """Text format as the original's `protobuf_dump_message` prints it."""
    return text_format.MessageToString(msg)
