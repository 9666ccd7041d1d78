"""A small protobuf wire codec for the control protocol, so the CLI starts without the protobuf
runtime.

Importing the protobuf runtime and the generated control messages costs about 45 ms, more than
the whole `cml-control state` budget: a script that polls `state` in a loop pays start-up on
every call. This module encodes any ControllerToDaemon and decodes the DaemonToController replies
of every command except those carrying GuestOS or container configs, and prints them in protobuf
text format byte for byte as `google.protobuf.text_format.MessageToString` does.

It is deliberately narrow: a reply with anything it does not know (a field outside the tables
below, an unknown enum value, a repeated singular field, invalid UTF-8, a missing required
field) raises Unsupported, and the caller decodes that reply with the real protobuf runtime
instead (reply.py). So the fast path can only ever print what the runtime would print.

The tables mirror proto/control.proto and proto/container.proto; tests/unit/test_cli_wire.py
compares every entry with the generated descriptors and every printed reply with text_format.
"""

from __future__ import annotations

from .schema import (
    _UINT64_MAX,
    _VARINT_KINDS,
    ASSIGN_INTERFACE_PARAMS,
    BOOL,
    BYTES,
    CODE,
    COMMAND,
    CONTAINER_START_PARAMS,
    CONTAINER_STATE,
    CONTAINER_STATUS,
    CONTAINER_TRUST,
    CONTAINER_TYPE,
    CONTROLLER_TO_DAEMON,
    CRYPTFS_MODE,
    DAEMON_TO_CONTROLLER,
    DEVICE_STATS,
    ENUM,
    LOG_MESSAGE,
    MESSAGE,
    RESPONSE,
    STATE,
    STRING,
    UINT64,
    UNSUPPORTED_REPLY_FIELDS,
    C,
    D,
    Field,
    Msg,
    R,
    Schema,
    Unsupported,
)

# The tables are part of this module's interface (callers use wire.D, wire.R...).
__all__ = [
    "ASSIGN_INTERFACE_PARAMS",
    "BOOL",
    "BYTES",
    "CODE",
    "COMMAND",
    "CONTAINER_START_PARAMS",
    "CONTAINER_STATE",
    "CONTAINER_STATUS",
    "CONTAINER_TRUST",
    "CONTAINER_TYPE",
    "CONTROLLER_TO_DAEMON",
    "CRYPTFS_MODE",
    "DAEMON_TO_CONTROLLER",
    "DEVICE_STATS",
    "ENUM",
    "LOG_MESSAGE",
    "MESSAGE",
    "RESPONSE",
    "STATE",
    "STRING",
    "UINT64",
    "UNSUPPORTED_REPLY_FIELDS",
    "C",
    "D",
    "Field",
    "Msg",
    "R",
    "Schema",
    "Unsupported",
    "decode",
    "decode_reply",
    "encode",
    "escape",
    "escape_text",
    "find_bytes",
    "find_varint",
    "read_varint",
    "request",
    "to_text",
]


# ------------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(s: str) -> bytes:
    # PINs typed at a prompt may not be UTF-8: their bytes go through unchanged.
    return s.encode("utf-8", "surrogateescape")


def _encode_value(f: Field, value: object) -> bytes:
    if f.kind in _VARINT_KINDS:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
            raise ValueError(f"{f.name}: {value!r} is not a valid value")
        if f.kind == ENUM and f.enum is not None and value not in f.enum:
            raise ValueError(f"{f.name}: {value} is not a known value")
        return _varint(f.number << 3) + _varint(value)
    if f.kind == MESSAGE:
        if not isinstance(value, dict) or f.message is None:
            raise ValueError(f"{f.name}: a message wants a dict")
        data = encode(f.message, value)
    elif isinstance(value, str):
        data = _utf8(value)
    elif isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        raise ValueError(f"{f.name}: {type(value).__name__} is not a string")
    return _varint(f.number << 3 | 2) + _varint(len(data)) + data


def encode(schema: Schema, values: dict[str, object]) -> bytes:
    """Serialize like the protobuf runtime: fields in number order, a None value is unset."""
    for name in values:
        if name not in schema.by_name:
            raise ValueError(f"{schema.full_name} has no field {name!r}")
    for name in schema.required:
        if values.get(name) is None:
            raise ValueError(f"{schema.full_name}: required field {name!r} is missing")
    out = bytearray()
    for f in schema.ordered:
        value = values.get(f.name)
        if value is None:
            continue
        if f.repeated:
            if not isinstance(value, list | tuple):
                raise ValueError(f"{f.name}: a repeated field wants a list")
            for item in value:
                out += _encode_value(f, item)
        else:
            out += _encode_value(f, value)
    return bytes(out)


def request(command: str, **fields: object) -> bytes:
    """A ControllerToDaemon body: request("GET_CONTAINER_STATUS", system_services=True)."""
    return encode(CONTROLLER_TO_DAEMON, {"command": C[command], **fields})


# ------------------------------------------------------------------------------- decoding


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise Unsupported("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise Unsupported("varint too long")
    if result > _UINT64_MAX:
        raise Unsupported("varint above 64 bits")
    return result, pos


def decode(schema: Schema, buf: bytes) -> Msg:
    values: dict[str, object] = {}
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        f = schema.by_number.get(number)
        if f is None:
            raise Unsupported(f"{schema.full_name}: field {number} is not in the fast tables")
        value: object
        if f.kind in _VARINT_KINDS:
            if wire_type != 0:
                raise Unsupported(f"{f.name}: wire type {wire_type}")
            raw, pos = read_varint(buf, pos)
            if f.kind == BOOL:
                value = raw != 0
            elif f.kind == ENUM:
                if f.enum is None or raw not in f.enum:
                    raise Unsupported(f"{f.name}: unknown enum value {raw}")
                value = raw
            else:
                value = raw
        else:
            if wire_type != 2:
                raise Unsupported(f"{f.name}: wire type {wire_type}")
            length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise Unsupported(f"{f.name}: truncated")
            data = buf[pos:pos + length]
            pos += length
            if f.kind == STRING:
                try:
                    value = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise Unsupported(f"{f.name}: not UTF-8") from None
            elif f.kind == BYTES:
                value = data
            else:
                assert f.message is not None
                value = decode(f.message, data)
        if f.repeated:
            items = values.setdefault(f.name, [])
            assert isinstance(items, list)
            items.append(value)
        elif f.name in values and f.kind == MESSAGE:
            raise Unsupported(f"{f.name}: sent twice (the runtime would merge)")
        else:
            values[f.name] = value  # a scalar sent twice: the last one wins, as in the runtime
    for name in schema.required:
        if name not in values:
            raise Unsupported(f"{schema.full_name}: required field {name!r} missing")
    return Msg(schema, values)


def decode_reply(body: bytes) -> Msg:
    return decode(DAEMON_TO_CONTROLLER, body)


def find_bytes(buf: bytes, number: int) -> bytes | None:
    """The first length-delimited field `number` at the top level (e.g. container_configs[0]),
    without a schema; None if absent or unreadable."""
    try:
        pos = 0
        end = len(buf)
        while pos < end:
            tag, pos = read_varint(buf, pos)
            wire_type = tag & 7
            if wire_type == 0:
                _, pos = read_varint(buf, pos)
            elif wire_type == 2:
                length, pos = read_varint(buf, pos)
                if pos + length > end:
                    return None
                if tag >> 3 == number:
                    return buf[pos:pos + length]
                pos += length
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            else:
                return None
    except Unsupported:
        return None
    return None


def find_varint(buf: bytes, path: list[int]) -> int | None:
    """The first varint at a path of field numbers through nested messages (the first element of
    repeated ones), without a schema; None if absent or unreadable. For single values such as
    container_configs[0].token_type, where a full decode is not worth it."""
    try:
        pos = 0
        end = len(buf)
        while pos < end:
            tag, pos = read_varint(buf, pos)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                value, pos = read_varint(buf, pos)
                if number == path[0] and len(path) == 1:
                    return value
            elif wire_type == 2:
                length, pos = read_varint(buf, pos)
                if pos + length > end:
                    return None
                if number == path[0] and len(path) > 1:
                    return find_varint(buf[pos:pos + length], path[1:])
                pos += length
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                return None
    except Unsupported:
        return None
    return None


# ------------------------------------------------------------------------------- text format


def _escape_table() -> list[str]:
    table = [chr(i) if 32 <= i < 127 else f"\\{i:03o}" for i in range(256)]
    for ch, esc in (("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ('"', '\\"'), ("'", "\\'"), ("\\", "\\\\")):
        table[ord(ch)] = esc
    return table


_ESCAPES = _escape_table()
_TEXT_ESCAPES = {i: _ESCAPES[i] for i in range(128) if _ESCAPES[i] != chr(i)}


def escape(data: bytes) -> str:
    """text_format's CEscape of a bytes field: printable ASCII as is, the rest in octal."""
    return "".join([_ESCAPES[b] for b in data])


def escape_text(text: str) -> str:
    """text_format's CEscape of a string field (as_utf8, its default): only ASCII control
    characters, quotes and backslashes are escaped; other characters stay as they are."""
    return text.translate(_TEXT_ESCAPES)


def to_text(msg: Msg, indent: int = 0) -> str:
    """protobuf text format, as text_format.MessageToString(msg) prints it."""
    schema = msg.schema
    if schema is None:
        raise Unsupported("a message from the protobuf runtime")
    pad = " " * indent
    out: list[str] = []
    for f in schema.ordered:
        if f.name not in msg.values:
            continue
        value = msg.values[f.name]
        items = value if f.repeated and isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, Msg):
                out.append(f"{pad}{f.name} {{\n{to_text(item, indent + 2)}{pad}}}\n")
            elif f.kind == ENUM and f.enum is not None and isinstance(item, int):
                out.append(f"{pad}{f.name}: {f.enum[item]}\n")
            elif isinstance(item, bool):
                out.append(f"{pad}{f.name}: {'true' if item else 'false'}\n")
            elif isinstance(item, str):
                out.append(f'{pad}{f.name}: "{escape_text(item)}"\n')
            elif isinstance(item, bytes):
                out.append(f'{pad}{f.name}: "{escape(item)}"\n')
            else:
                out.append(f"{pad}{f.name}: {item}\n")
    return "".join(out)
