"""One reply of cmld: decoded by the fast codec (wire.py) when it can, by the protobuf runtime
otherwise, and printed in protobuf text format (or JSON) either way."""

from __future__ import annotations

from . import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from google.protobuf.message import Message


class ProtocolError(Exception):
    """A body that is not a valid DaemonToController."""


def _runtime_parse(body: bytes) -> Message:
    # The protobuf runtime costs ~45 ms to import: only replies the fast codec does not cover
    # (configs, unknown fields, invalid ones) and --json pay it.
    from cml_common import framing
    from cml_common.messages.control_pb2 import DaemonToController

    try:
        return framing.parse(DaemonToController, body)
    except framing.MessageError as e:
        raise ProtocolError(f"cmld sent an invalid reply: {e}") from None


def _from_runtime(m: Message) -> wire.Msg:
    values: dict[str, object] = {}
    for fd, value in m.ListFields():
        if fd.message_type is not None:
            values[fd.name] = [_from_runtime(v) for v in value] if fd.is_repeated else _from_runtime(value)
        else:
            values[fd.name] = list(value) if fd.is_repeated else value
    return wire.Msg(None, values)


class Reply:
    __slots__ = ("_runtime", "body", "msg")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._runtime: Message | None = None
        try:
            self.msg = wire.decode_reply(body)
        except wire.Unsupported:
            self._runtime = _runtime_parse(body)
            self.msg = _from_runtime(self._runtime)

    @property
    def code(self) -> int:
        return self.msg.get_int("code", 1)

    @property
    def code_name(self) -> str:
        return wire.CODE.get(self.code, str(self.code))

    def has_response(self) -> bool:
        return self.msg.has("response")

    @property
    def response(self) -> int:
        return self.msg.get_int("response", 1)

    @property
    def response_name(self) -> str:
        return wire.RESPONSE.get(self.response, str(self.response))

    def statuses(self) -> list[wire.Msg]:
        return self.msg.get_msgs("container_status")

    def text(self) -> str:
        """Protobuf text format, as the original's protobuf_dump_message prints it."""
        if self._runtime is None:
            return wire.to_text(self.msg)
        from cml_common.textconfig import to_text

        return to_text(self._runtime)

    def json(self) -> str:
        import json

        from google.protobuf import json_format

        m = self._runtime if self._runtime is not None else _runtime_parse(self.body)
        return json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True)) + "\n"
