"""Structured inputs for the daemon fuzzers: protobuf messages built from the descriptors, then
mutated on the wire.

A seeded `random.Random` decides everything, so a campaign is reproducible from its seed. What
it produces, per request:

- a message of the request type with every field reachable: each optional field set or not,
  repeated fields of 0..4 items, nested messages recursively, every enum value of the schema,
  strings and bytes from a dictionary of hostile values (paths into /dev and /proc, URL forms,
  format strings, long and non-ASCII text) and random ones;
- a *target field* (the command or code) drawn evenly over its enum, so every command is reached
  at the same rate whatever the rest of the message looks like;
- wire-level mutations of that encoding: an enum or scalar field given an out-of-range value,
  unknown fields appended, a field repeated, bytes flipped, inserted or cut, a wrong wire type;
- or a mutation of a seed from the checked-in corpus (captured frames).

`Overrides` lets a campaign point fields at live objects (the UUID of a running container), with
a probability, so commands reach past the "no such container" check.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import EncodeError, Message

FD = FieldDescriptor

HOSTILE_STRINGS: tuple[str, ...] = (
    "", " ", "a", "..", "../../../../etc/shadow", "/", "/dev/zero", "/dev/urandom", "/dev/full",
    "/proc/self/mem", "/proc/self/fd/0", "/proc/kcore", "/sys/kernel/notes", "/run/socket/cml-control",
    "file:///dev/zero", "file://../../../etc/passwd", "file:///etc/shadow", "file://", "http://127.0.0.1:1/x",
    "https://127.0.0.1:1/", "ftp://127.0.0.1/x", "%s%s%s%n", "{0}{1}", "\\x00", "\n\n", "\t", "\u202e",
    "é" * 17, "\U0001f600", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-a-uuid", "A" * 255, "B" * 4097, "c" * 70000, "-1", "0", "18446744073709551616", "c 4:1 rwm",
    "b *:* rwm", "a", "eth0", "veth0", "lo", "; rm -rf /", "$(reboot)", "`id`", "..%2f..%2f", "root", "nobody",
    "trustme", "SHA256", "/sbin/init", "/bin/sh", "sh", "-c", "echo hi", "default", "x" * 33,
)
HOSTILE_BYTES: tuple[bytes, ...] = (
    b"", b"\x00", b"\xff" * 64, b"\x00" * 32, b"\x00" * 20, b"\x00" * 48, bytes(range(256)), b"A" * 70000,
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n", b"0\x82\xff\xff", b"0\x80\x00\x00",
    b"\x80\x18" + b"\x00" * 30,
)
INTS: tuple[int, ...] = (0, 1, -1, 2, 7, 11, 12, 23, 24, 31, 32, 48, 64, 127, 128, 255, 256, 4096, 65535, 65536,
                         2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1)
_INT_RANGE = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1), FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}


@dataclass
class Overrides:
    """Values a campaign injects: field name -> (probability, producer)."""

    by_field: dict[str, tuple[float, Callable[[random.Random], object]]] = field(default_factory=dict)
    # field name -> values that must never be sent (e.g. EXIT to tpm2d during a campaign)
    excluded_enum_values: dict[str, frozenset[int]] = field(default_factory=dict)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


class MessageGen:
    """Random messages and wire mutations for one request type."""

    def __init__(self, cls: type[Message], rng: random.Random, *, target_field: str | None = None,
                 overrides: Overrides | None = None, seeds: Sequence[bytes] = ()) -> None:
        self.cls = cls
        self.rng = rng
        self.target_field = target_field
        self.overrides = overrides or Overrides()
        self.seeds = list(seeds)

    # ------------------------------------------------------------------ values

    def _string(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.55:
            return r.choice(HOSTILE_STRINGS)
        n = r.choice((1, 4, 16, 64, 300))
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_./: \"'\\{}é\u0000"
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, n)))

    def _bytes(self) -> bytes:
        r = self.rng
        if r.random() < 0.5:
            return r.choice(HOSTILE_BYTES)
        return r.randbytes(r.choice((0, 1, 8, 20, 32, 48, 64, 256, 2048)))

    def _int(self, f: FieldDescriptor) -> int:
        lo, hi = _INT_RANGE[f.type]
        r = self.rng
        v = r.choice(INTS) if r.random() < 0.6 else r.randint(lo, hi)
        return min(max(v, lo), hi)

    def _enum(self, e: EnumDescriptor, name: str) -> int:
        excluded = self.overrides.excluded_enum_values.get(name, frozenset())
        values = [v.number for v in e.values if v.number not in excluded]
        return self.rng.choice(values)

    def _scalar(self, f: FieldDescriptor) -> object:
        ov = self.overrides.by_field.get(f.name)
        if ov is not None and self.rng.random() < ov[0]:
            return ov[1](self.rng)
        t = f.type
        if t == FD.TYPE_ENUM:
            return self._enum(f.enum_type, f.name)
        if t == FD.TYPE_STRING:
            return self._string()
        if t == FD.TYPE_BYTES:
            return self._bytes()
        if t == FD.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            return self.rng.choice((0.0, -1.0, 1e300, float("inf"), float("nan")))
        return self._int(f)

    # ------------------------------------------------------------------ messages

    def fill(self, msg: Message, depth: int = 0) -> Message:
        d: Descriptor = msg.DESCRIPTOR
        r = self.rng
        for f in d.fields:
            required = f.is_required
            if f.name == self.target_field and depth == 0:
                setattr(msg, f.name, self._enum(f.enum_type, f.name))
                continue
            if not required and r.random() < (0.6 if depth == 0 else 0.75):
                continue
            if f.is_repeated:
                n = r.choice((1, 1, 2, 3, 4)) if depth < 3 else 1
                container = getattr(msg, f.name)
                for _ in range(n):
                    if f.type == FD.TYPE_MESSAGE:
                        if depth < 4:
                            self.fill(container.add(), depth + 1)
                    else:
                        container.append(self._scalar(f))
            elif f.type == FD.TYPE_MESSAGE:
                if depth < 4:
                    self.fill(getattr(msg, f.name), depth + 1)
            else:
                setattr(msg, f.name, self._scalar(f))
        return msg

    def message(self) -> Message:
        return self.fill(self.cls())

    def encode(self, msg: Message) -> bytes:
        try:
            return msg.SerializeToString()
        except EncodeError:
            return msg.SerializePartialToString()

    # ------------------------------------------------------------------ wire mutations

    def _field_numbers(self) -> list[int]:
        return [f.number for f in self.cls.DESCRIPTOR.fields]

    def mutate(self, data: bytes) -> bytes:
        r = self.rng
        choice = r.randrange(10)
        numbers = self._field_numbers()
        if choice == 0:  # an out-of-range varint for a known field (invalid enum, huge int)
            return data + tag(r.choice(numbers), 0) + varint(r.choice((-1, 2**31, 2**63, 999, 2**64 - 1, 100000)))
        if choice == 1:  # unknown fields of every wire type
            n = r.choice((15, 16, 99, 536870911, r.randint(1, 2000)))
            kind = r.randrange(4)
            if kind == 0:
                return data + tag(n, 0) + varint(r.getrandbits(64))
            if kind == 1:
                return data + tag(n, 1) + r.randbytes(8)
            if kind == 2:
                payload = r.randbytes(r.randint(0, 64))
                return data + tag(n, 2) + varint(len(payload)) + payload
            return data + tag(n, 5) + r.randbytes(4)
        if choice == 2:  # a known field with the wrong wire type
            return data + tag(r.choice(numbers), r.choice((1, 2, 3, 4, 5, 6, 7))) + r.randbytes(r.randint(0, 9))
        if choice == 3 and data:  # cut
            return data[: r.randrange(len(data))]
        if choice == 4 and data:  # flip bytes
            buf = bytearray(data)
            for _ in range(r.randint(1, 4)):
                buf[r.randrange(len(buf))] ^= 1 << r.randrange(8)
            return bytes(buf)
        if choice == 5:  # insert random bytes
            pos = r.randint(0, len(data))
            return data[:pos] + r.randbytes(r.randint(1, 16)) + data[pos:]
        if choice == 6:  # a length-delimited field whose length overruns the body
            return data + tag(r.choice(numbers), 2) + varint(r.choice((1, 127, 2**31, 2**63)))
        if choice == 7:  # nesting deeper than any parser should follow
            n = r.choice(numbers)
            inner = b""
            for _ in range(r.choice((50, 101, 200))):
                inner = tag(n, 2) + varint(len(inner)) + inner
            return data + inner
        if choice == 8:  # repeat the whole encoding (proto2 merges: last scalar wins)
            return data + data
        return r.randbytes(r.randint(0, 64))  # pure garbage

    def request(self) -> bytes:
        """One request body: mostly valid, sometimes mutated, sometimes a mutated seed."""
        r = self.rng
        roll = r.random()
        if self.seeds and roll < 0.15:
            body = r.choice(self.seeds)
            return self.mutate(body) if r.random() < 0.8 else body
        body = self.encode(self.message())
        if roll < 0.6:
            return body
        for _ in range(r.choice((1, 1, 2, 3))):
            body = self.mutate(body)
        return body


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body
