"""Device rules, pure logic: parsing, formatting, policy decisions, v1 translation, BPF assembly."""

from __future__ import annotations

import re
import struct

import pytest

from cmld.cgroups.bpf_devices import build_program
from cmld.cgroups.device_rules import GENERIC_ALLOW, DevicePolicy, DeviceRule, format_rule, parse_rule
from cmld.cgroups.v1 import v1_exceptions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,rule", [
    ("c 1:3 rwm", DeviceRule("c", 1, 3, "rwm")),
    ("c 1:3", DeviceRule("c", 1, 3, "rwm")),
    ("b 8:* r", DeviceRule("b", 8, None, "r")),
    ("a *:* m", DeviceRule("a", None, None, "m")),
    ("c 136:*", DeviceRule("c", 136, None, "rwm")),
    ("c *:5 mw", DeviceRule("c", None, 5, "wm")),
    ("  c   10:200   rw  ", DeviceRule("c", 10, 200, "rw")),
    ("a", DeviceRule("a", None, None, "rwm")),
    ("c 4095:1048575 r", DeviceRule("c", 4095, 1048575, "r")),
])
def test_parse(text: str, rule: DeviceRule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("   ", "empty"),
    ("x 1:3 rwm", "type 'x'"),
    ("char 1:3", "type 'char'"),
    ("c", "missing"),
    ("c 1 rwm", "not <major>:<minor>"),
    ("c 1:2:3", "not <major>:<minor>"),
    ("c :3", "major ''"),
    ("c 1: r", "minor ''"),
    ("c -1:3", "major '-1'"),
    ("c 1:0x3", "minor '0x3'"),
    ("c 1:+3", "minor '+3'"),
    ("c 1:3.0", "minor '3.0'"),
    ("c \u0661:3", "major"),  # non-ASCII digit (int() would accept it)
    ("c 4096:0", "out of range"),
    ("c 1:1048576", "out of range"),
    ("c 1:3 rwmr", "more than 3"),
    ("c 1:3 rrrr", "more than 3"),
    ("c 1:3 rx", "other than r, w, m"),
    ("c 1:3 RW", "other than r, w, m"),
    ("c 1:3 rr", "repeats"),
    ("c 1:3 rwm junk", "fields"),
])
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_rule(text)


def test_format_round_trip_is_canonical() -> None:
    assert format_rule(parse_rule("c 136:* mwr")) == "c 136:* rwm"
    assert str(parse_rule("b *:7 w")) == "b *:7 w"
    for rule in GENERIC_ALLOW:
        assert parse_rule(format_rule(rule)) == rule


def test_generic_list() -> None:
    assert [format_rule(r) for r in GENERIC_ALLOW] == [
        "c 0:0 rwm", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
        "c 5:2 rwm", "c 10:183 rwm", "c 10:200 rwm", "c 10:229 rwm", "c 136:* rwm"]
    policy = DevicePolicy.generic()
    assert policy.allows("c", 1, 3, "rw")
    assert policy.allows("c", 136, 42, "rwm")
    assert not policy.allows("c", 1, 1, "r")        # /dev/mem
    assert not policy.allows("b", 1, 3, "r")        # wrong type
    assert not policy.allows("c", 10, 232, "rw")    # kvm is not generic
    assert not policy.allows("b", 8, 0, "r")


@pytest.mark.req("TSF Device Access Control", "CR 7.7")
def test_default_deny_and_access_subsets() -> None:
    policy = DevicePolicy()
    assert not policy.allows("c", 1, 3, "r")
    policy.allow("c 1:3 r")
    assert policy.allows("c", 1, 3, "r")
    assert not policy.allows("c", 1, 3, "rw")       # every requested bit must be granted
    policy.allow("c 1:3 w")                         # same device: merged into one entry
    assert policy.allow_rules == [DeviceRule("c", 1, 3, "rw")]
    assert policy.allows("c", 1, 3, "rw")
    assert not policy.allows("c", 1, 3, "m")


def test_type_a_matches_char_and_block() -> None:
    policy = DevicePolicy([parse_rule("a 7:* r")])
    assert policy.allows("c", 7, 1, "r") and policy.allows("b", 7, 1, "r")
    assert not policy.allows("b", 8, 1, "r")


def test_deny_exact_match_removes_allow() -> None:
    policy = DevicePolicy.generic()
    policy.deny("c 1:5")
    assert DeviceRule("c", 1, 5, "rwm") not in policy.allow_rules
    assert policy.deny_rules == []                  # nothing else grants it: default deny suffices
    assert not policy.allows("c", 1, 5, "r")
    policy.deny("c 1:3 w")                          # partial: read stays
    assert DeviceRule("c", 1, 3, "rm") in policy.allow_rules
    assert policy.allows("c", 1, 3, "r") and not policy.allows("c", 1, 3, "w")


def test_deny_inside_wildcard_adds_explicit_entry() -> None:
    policy = DevicePolicy.generic()
    policy.deny("c 136:3")
    assert policy.deny_rules == [DeviceRule("c", 136, 3, "rwm")]
    assert not policy.allows("c", 136, 3, "r")
    assert policy.allows("c", 136, 4, "rw")
    policy.deny("c 136:3 w")                        # same pattern again: no duplicate
    assert len(policy.deny_rules) == 1
    policy.allow("c 136:3 r")                       # lifts the read part of the deny
    assert policy.allows("c", 136, 3, "r") and not policy.allows("c", 136, 3, "w")


def test_deny_with_partial_access_checks_any_bit() -> None:
    policy = DevicePolicy([parse_rule("c 4:* rwm")])
    policy.deny("c 4:1 w")
    assert policy.allows("c", 4, 1, "r")
    assert not policy.allows("c", 4, 1, "w")
    assert not policy.allows("c", 4, 1, "rw")       # any denied bit denies the request


def test_allows_rejects_bad_queries() -> None:
    with pytest.raises(ValueError):
        DevicePolicy().allows("a", 1, 3, "r")
    with pytest.raises(ValueError):
        DevicePolicy().allows("c", 1, 3, "")
    with pytest.raises(ValueError):
        DevicePolicy().allows("c", 1, 3, "x")


def test_v1_translation() -> None:
    policy = DevicePolicy([parse_rule("a 7:* r"), parse_rule("c 7:* w"), parse_rule("c 1:3")])
    policy.deny("c 1:3 m")
    assert v1_exceptions(policy) == {("c", 7, None): 6, ("b", 7, None): 2, ("c", 1, 3): 6}
    # A deny covering a whole allow pattern is expressible by removing bits...
    policy = DevicePolicy([parse_rule("c 136:3"), parse_rule("c 1:*")])
    policy.deny_rules.append(parse_rule("c 136:* w"))
    assert v1_exceptions(policy) == {("c", 136, 3): 3, ("c", 1, None): 7}
    # ...a hole inside a wildcard is not, and is refused instead of being ignored.
    policy = DevicePolicy.generic()
    policy.deny("c 136:3")
    with pytest.raises(RuntimeError, match="c 136:3 rwm"):
        v1_exceptions(policy)


def _insns(policy: DevicePolicy) -> list[tuple[int, int, int, int]]:
    code = build_program(policy)
    assert len(code) % 8 == 0
    return list(struct.iter_unpack("<BBhi", code))


@pytest.mark.req("TSF Device Access Control")
def test_bpf_program_shape() -> None:
    empty = _insns(DevicePolicy())
    assert empty[-2:] == [(0xB7, 0, 0, 0), (0x95, 0, 0, 0)]  # r0 = 0; exit
    generic = _insns(DevicePolicy.generic())
    # prologue 6, per rule: type, major, (minor), r0=1, exit; default 2
    assert len(generic) == 6 + 11 * 5 + 4 + 2
    for i, (code, _regs, off, _imm) in enumerate(generic):
        if code & 0x07 == 0x05 and code != 0x95:  # jumps stay inside the program
            assert 0 <= i + 1 + off < len(generic)


def test_bpf_unconditional_rule_ends_program() -> None:
    everything = _insns(DevicePolicy([parse_rule("a *:* rwm"), parse_rule("c 1:3")]))
    assert everything[-2:] == [(0xB7, 0, 0, 1), (0x95, 0, 0, 0)]
    assert len(everything) == 8                     # nothing unreachable after it
