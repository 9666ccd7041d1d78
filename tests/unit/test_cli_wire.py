"""The CLI's fast protobuf codec (cml_control/wire.py) against the protobuf runtime: its tables
match the generated descriptors, its requests are the runtime's bytes, and every reply it prints
is text_format's output byte for byte; whatever it does not cover goes to the runtime."""

from __future__ import annotations

import random

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cml_common.messages.container_pb2 import ContainerConfig, ContainerStatus
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController, LogMessage
from cml_control import wire
from cml_control.reply import ProtocolError, Reply

pytestmark = pytest.mark.unit

KINDS = {FieldDescriptor.TYPE_ENUM: wire.ENUM, FieldDescriptor.TYPE_BOOL: wire.BOOL,
         FieldDescriptor.TYPE_UINT64: wire.UINT64, FieldDescriptor.TYPE_STRING: wire.STRING,
         FieldDescriptor.TYPE_BYTES: wire.BYTES, FieldDescriptor.TYPE_MESSAGE: wire.MESSAGE}


def check_schema(schema: wire.Schema, desc: Descriptor, skipped: frozenset[int] = frozenset()) -> None:
    assert schema.full_name == desc.full_name
    numbers = {f.number for f in desc.fields} - skipped
    assert set(schema.by_number) == numbers, desc.full_name
    for fd in desc.fields:
        if fd.number in skipped:
            continue
        f = schema.by_number[fd.number]
        assert (f.name, f.kind, f.repeated, f.required) == (
            fd.name, KINDS[fd.type], fd.is_repeated, fd.is_required), fd.full_name
        if fd.enum_type is not None:
            assert f.enum == {v.number: v.name for v in fd.enum_type.values}, fd.full_name
        if fd.message_type is not None:
            assert f.message is not None
            check_schema(f.message, fd.message_type)


def test_tables_match_the_descriptors() -> None:
    check_schema(wire.DAEMON_TO_CONTROLLER, DaemonToController.DESCRIPTOR, wire.UNSUPPORTED_REPLY_FIELDS)
    check_schema(wire.CONTROLLER_TO_DAEMON, ControllerToDaemon.DESCRIPTOR)
    commands = {v.number: v.name for v in ControllerToDaemon.Command.DESCRIPTOR.values}
    assert commands == wire.COMMAND


# ------------------------------------------------------------------------------ random messages

TEXTS = ["", "demo", "a b\tc\nd\re", 'quote " and \' and \\', "ünïcödé ✓ 名前", "\x00\x01\x7f", "x" * 300,
         "ef014bf8-82fa-4fe8-8803-6ad03746f1cc"]
BLOBS = [b"", b"\x00\xff\x80 binary", bytes(range(256)), b"-----BEGIN CERTIFICATE-----\n"]
UINTS = [0, 1, 127, 128, 2**32, 2**63, 2**64 - 1]


def fill(msg: object, desc: Descriptor, rng: random.Random, depth: int = 0,
         skip: frozenset[int] = frozenset()) -> None:
    fields = [f for f in desc.fields if f.number not in skip]
    rng.shuffle(fields)  # set in random order: printing must still follow field numbers
    for fd in fields:
        if not fd.is_required and rng.random() < 0.5:
            continue
        count = rng.randint(0, 3) if fd.is_repeated else 1
        for _ in range(count):
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                sub = getattr(msg, fd.name).add() if fd.is_repeated else getattr(msg, fd.name)
                fill(sub, fd.message_type, rng, depth + 1)
                if not fd.is_repeated:
                    sub.SetInParent()
                continue
            if fd.type == FieldDescriptor.TYPE_ENUM:
                value: object = rng.choice(fd.enum_type.values).number
            elif fd.type == FieldDescriptor.TYPE_BOOL:
                value = rng.random() < 0.5
            elif fd.type == FieldDescriptor.TYPE_UINT64:
                value = rng.choice(UINTS)
            elif fd.type == FieldDescriptor.TYPE_STRING:
                value = rng.choice(TEXTS)
            else:
                value = rng.choice(BLOBS)
            if fd.is_repeated:
                getattr(msg, fd.name).append(value)
            else:
                setattr(msg, fd.name, value)


@pytest.mark.parametrize("seed", range(300))
def test_reply_text_is_text_format(seed: int) -> None:
    rng = random.Random(seed)
    pb = DaemonToController()
    fill(pb, DaemonToController.DESCRIPTOR, rng, skip=wire.UNSUPPORTED_REPLY_FIELDS)
    body = pb.SerializeToString()
    reply = Reply(body)
    assert reply.msg.schema is not None  # the fast path decoded it
    assert reply.text() == text_format.MessageToString(pb)
    assert reply.code == pb.code


@pytest.mark.parametrize("seed", range(200))
def test_requests_are_the_runtime_bytes(seed: int) -> None:
    rng = random.Random(seed)
    pb = ControllerToDaemon()
    fill(pb, ControllerToDaemon.DESCRIPTOR, rng)

    def as_dict(m: object) -> dict[str, object]:
        out: dict[str, object] = {}
        for fd, value in m.ListFields():  # type: ignore[attr-defined]
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                out[fd.name] = as_dict(value)
            else:
                out[fd.name] = list(value) if fd.is_repeated else value
        return out

    assert wire.encode(wire.CONTROLLER_TO_DAEMON, as_dict(pb)) == pb.SerializeToString()


def test_request_helper_and_unset_fields() -> None:
    body = wire.request("GET_CONTAINER_STATUS", system_services=None, container_uuids=["u"])
    assert ControllerToDaemon.FromString(body) == ControllerToDaemon(command=ControllerToDaemon.GET_CONTAINER_STATUS,
                                                                     container_uuids=["u"])
    # start parameters without a key: present but empty, so cmld uses the default key
    body = wire.request("CONTAINER_START", container_uuids=["u"], container_start_params={})
    msg = ControllerToDaemon.FromString(body)
    assert msg.HasField("container_start_params") and not msg.container_start_params.HasField("key")
    assert msg.container_start_params.key == "0" * 128
    # a PIN that is not UTF-8 goes through as typed
    pin = b"\xff\xfe".decode("utf-8", "surrogateescape")
    body = wire.request("CONTAINER_START", container_start_params={"key": pin})
    assert b"\xff\xfe" in body
    for bad in ({"nope": 1}, {"container_uuids": "not a list"}, {"exec_pty": "yes"}, {"command": 999}):
        with pytest.raises(ValueError):
            wire.encode(wire.CONTROLLER_TO_DAEMON, {"command": 3, **bad})
    with pytest.raises(ValueError):
        wire.encode(wire.CONTROLLER_TO_DAEMON, {})


def status(**kw: object) -> ContainerStatus:
    base: dict[str, object] = dict(uuid="u", name="n", type=1, state=4, uptime=1, created=2, guestos="g",
                                   trust_level=3, cryptfs_mode=1)
    base.update(kw)
    return ContainerStatus(**base)  # type: ignore[arg-type]


def test_what_the_fast_path_hands_to_the_runtime() -> None:
    good = DaemonToController(code=DaemonToController.CONTAINER_STATUS, container_status=[status()])
    body = good.SerializeToString()
    # configs: printed by the runtime, identically
    with_config = DaemonToController(code=DaemonToController.CONTAINER_CONFIG,
                                     container_configs=[ContainerConfig(name="a", guest_os="b", color=0, type=1,
                                                                        token_type=2)])
    cases = {
        "configs": with_config.SerializeToString(),
        "unknown field": body + b"\xa0\x1f\x01",  # field 500, varint
        "unknown enum": DaemonToController(code=DaemonToController.RESPONSE).SerializeToString() + b"\x68\x63",
        "message twice": DaemonToController(code=DaemonToController.LOG_MESSAGE_FRAGMENT,
                                            log_message=LogMessage(name="a", msg="b")).SerializeToString() * 2,
        "wrong wire type": b"\x08\x03" + b"\x3d\x00\x00\x00\x00",  # field 7 as fixed32
    }
    for name, data in cases.items():
        with pytest.raises(wire.Unsupported):
            wire.decode_reply(data)
        pb = DaemonToController()
        try:
            pb.MergeFromString(data)
        except Exception:  # the runtime refuses it: so must the Reply
            with pytest.raises(ProtocolError):
                Reply(data)
            continue
        if not pb.IsInitialized():
            with pytest.raises(ProtocolError):
                Reply(data)
            continue
        reply = Reply(data)
        assert reply.msg.schema is None, name
        assert reply.text() == text_format.MessageToString(pb), name


@pytest.mark.parametrize("data", [
    b"", b"\x08", b"\x10\x01", b"\x08\x03\x3a\x05abc", b"\x08\x03\x3a\x02\x0a\x01x",
    b"\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x08\x0d\xf2\x12\x02\xc3\x28",
])
def test_invalid_replies_are_refused(data: bytes) -> None:
    """Missing code, truncated field, a status missing required fields, an overlong varint,
    invalid UTF-8 in a string: never printed as if fine."""
    with pytest.raises(wire.Unsupported):
        wire.decode_reply(data)
    pb = DaemonToController()
    try:
        pb.MergeFromString(data)
        valid = pb.IsInitialized()
    except Exception:
        valid = False
    if valid:
        assert Reply(data).text() == text_format.MessageToString(pb)
    else:
        with pytest.raises(ProtocolError):
            Reply(data)


def test_find_varint_and_bytes() -> None:
    cfg = ContainerConfig(name="a", guest_os="b", color=0, type=1, token_type=1)
    other = ContainerConfig(name="c", guest_os="d", color=0, type=1, token_type=2)
    body = DaemonToController(code=4, container_configs=[cfg, other], error_message="x").SerializeToString()
    first = wire.find_bytes(body, 8)
    assert first is not None and ContainerConfig.FromString(first).name == "a"
    assert wire.find_varint(first, [30]) == 1
    assert wire.find_varint(ContainerConfig(name="a", guest_os="b", color=0).SerializePartialToString(), [30]) is None
    assert wire.find_bytes(b"\x08\x03", 8) is None
    assert wire.find_bytes(b"\x42\x10abc", 8) is None  # truncated
    assert wire.find_varint(b"\x08", [1]) is None


def test_escape_matches_text_format() -> None:
    from google.protobuf import text_encoding

    data = bytes(range(256))
    assert wire.escape(data) == text_encoding.CEscape(data, as_utf8=False)
    text = "".join(chr(i) for i in range(1, 300)) + "\U0001f600 \u2028"
    assert wire.escape_text(text) == text_encoding.CEscape(text, as_utf8=True)
