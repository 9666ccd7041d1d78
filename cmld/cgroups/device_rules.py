"""Device access rules (`<type> <major>:<minor> [<access>]`) and the per-container policy.

The rule syntax is the cgroup v1 `devices.allow` one, which the CML container configs use
(`allow_dev`, `assign_dev`). One `DevicePolicy` feeds both back ends (v1 `devices.*` files,
v2 eBPF program) and the daemon's own checks (/dev population, hotplug), so all of them
decide the same way: deny rules first, then allow rules, then deny by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Kernel dev_t limits (include/linux/kdev_t.h): 12-bit major, 20-bit minor.
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1

ACCESS_CHARS = "rwm"
# BPF_DEVCG_ACC_* bits as the kernel passes them in bpf_cgroup_dev_ctx.access_type >> 16.
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
ALL_ACCESS = 7


def access_mask(access: str) -> int:
    mask = 0
    for ch in access:
        mask |= ACCESS_BITS[ch]
    return mask


def mask_to_access(mask: int) -> str:
    return "".join(ch for ch in ACCESS_CHARS if mask & ACCESS_BITS[ch])


@dataclass(frozen=True)
class DeviceRule:
    """One rule; `None` for major/minor is the `*` wildcard, type `a` matches char and block."""

    type: str
    major: int | None
    minor: int | None
    access: str = "rwm"

    @property
    def mask(self) -> int:
        """Access as BPF_DEVCG_ACC_* bits (mknod 1, read 2, write 4)."""
        return access_mask(self.access)

    def same_device(self, other: DeviceRule) -> bool:
        """Same type/major/minor pattern (access ignored): rules that merge rather than stack."""
        return (self.type, self.major, self.minor) == (other.type, other.major, other.minor)

    def matches_device(self, dev_type: str, major: int, minor: int) -> bool:
        return (self.type in ("a", dev_type)
                and (self.major is None or self.major == major)
                and (self.minor is None or self.minor == minor))

    def overlaps(self, other: DeviceRule) -> bool:
        """True if some device and access is covered by both rules."""
        return (("a" in (self.type, other.type) or self.type == other.type)
                and (self.major is None or other.major is None or self.major == other.major)
                and (self.minor is None or other.minor is None or self.minor == other.minor)
                and bool(self.mask & other.mask))

    def covers_devices_of(self, other: DeviceRule) -> bool:
        """True if every device `other` names is also named by this rule (access ignored)."""
        return (self.type in ("a", other.type)
                and (self.major is None or self.major == other.major)
                and (self.minor is None or self.minor == other.minor))

    def __str__(self) -> str:
        return format_rule(self)


def _parse_number(text: str, what: str, limit: int, rule: str) -> int | None:
    if text == "*":
        return None
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"device rule {rule!r}: {what} {text!r} is not a number or '*'")
    value = int(text)
    if value > limit:
        raise ValueError(f"device rule {rule!r}: {what} {value} is out of range (max {limit})")
    return value


def parse_rule(text: str) -> DeviceRule:
    """Parse `c 1:3 rwm`, `b 8:* r`, `c 136:*` (access defaults to rwm) or bare `a` (= `a *:* rwm`)."""
    fields = text.split()
    if not fields:
        raise ValueError("device rule is empty")
    dev_type = fields[0]
    if dev_type not in ("a", "b", "c"):
        raise ValueError(f"device rule {text!r}: type {dev_type!r} is not one of 'a', 'b', 'c'")
    if len(fields) == 1:
        if dev_type == "a":
            return DeviceRule("a", None, None, "rwm")
        raise ValueError(f"device rule {text!r}: missing <major>:<minor>")
    if len(fields) > 3:
        raise ValueError(f"device rule {text!r}: expected '<type> <major>:<minor> [<access>]', "
                         f"got {len(fields)} fields")
    numbers = fields[1].split(":")
    if len(numbers) != 2:
        raise ValueError(f"device rule {text!r}: {fields[1]!r} is not <major>:<minor>")
    major = _parse_number(numbers[0], "major", MAX_MAJOR, text)
    minor = _parse_number(numbers[1], "minor", MAX_MINOR, text)
    access = fields[2] if len(fields) == 3 else "rwm"
    if len(access) > 3:
        raise ValueError(f"device rule {text!r}: access {access!r} has more than 3 characters")
    bad = sorted(set(access) - set(ACCESS_CHARS))
    if bad:
        raise ValueError(f"device rule {text!r}: access {access!r} has characters other than r, w, m: {''.join(bad)!r}")
    if len(set(access)) != len(access):
        raise ValueError(f"device rule {text!r}: access {access!r} repeats a character")
    return DeviceRule(dev_type, major, minor, mask_to_access(access_mask(access)))


def format_rule(rule: DeviceRule) -> str:
    """Inverse of parse_rule, in canonical form (`c 136:* rwm`)."""
    major = "*" if rule.major is None else str(rule.major)
    minor = "*" if rule.minor is None else str(rule.minor)
    return f"{rule.type} {major}:{minor} {rule.access}"


def _as_rule(rule: DeviceRule | str) -> DeviceRule:
    return parse_rule(rule) if isinstance(rule, str) else rule


GENERIC_ALLOW: tuple[DeviceRule, ...] = tuple(parse_rule(r) for r in (
    "c 0:0 rwm",     # overlayfs whiteouts
    "c 1:3 rwm",     # null
    "c 1:5 rwm",     # zero
    "c 1:7 rwm",     # full
    "c 1:8 rwm",     # random
    "c 1:9 rwm",     # urandom
    "c 5:0 rwm",     # tty
    "c 5:2 rwm",     # ptmx
    "c 10:183 rwm",  # hwrng
    "c 10:200 rwm",  # tun
    "c 10:229 rwm",  # fuse
    "c 136:* rwm",   # pts
))
"""What every container may use (anchor: `c_cgroups_dev.c`)."""

KVM_ALLOW = parse_rule("c 10:232 rwm")
"""Added for containers that run a hypervisor."""


@dataclass
class DevicePolicy:
    """Allow and deny lists of one container; decisions check deny first, then allow, else deny."""

    allow_rules: list[DeviceRule] = field(default_factory=list)
    deny_rules: list[DeviceRule] = field(default_factory=list)

    @classmethod
    def generic(cls) -> DevicePolicy:
        return cls(allow_rules=list(GENERIC_ALLOW))

    def copy(self) -> DevicePolicy:
        return DevicePolicy(list(self.allow_rules), list(self.deny_rules))

    def allows(self, dev_type: str, major: int, minor: int, access: str = "rwm") -> bool:
        """Would an access of `access` (subset of rwm) to this device be granted?"""
        if dev_type not in ("b", "c"):
            raise ValueError(f"device type {dev_type!r} is not 'b' or 'c'")
        if not access or set(access) - set(ACCESS_CHARS):
            raise ValueError(f"access {access!r} is not a non-empty subset of 'rwm'")
        want = access_mask(access)
        for rule in self.deny_rules:
            if rule.matches_device(dev_type, major, minor) and rule.mask & want:
                return False
        return any(rule.matches_device(dev_type, major, minor) and want & ~rule.mask == 0
                   for rule in self.allow_rules)

    def allow(self, rule: DeviceRule | str) -> None:
        """Add an allow rule; it lifts an explicit deny of the same device pattern for those access bits."""
        new = _as_rule(rule)
        self.deny_rules = _subtract_same(self.deny_rules, new)
        for i, old in enumerate(self.allow_rules):
            if old.same_device(new):
                self.allow_rules[i] = DeviceRule(new.type, new.major, new.minor,
                                                 mask_to_access(old.mask | new.mask))
                return
        self.allow_rules.append(new)

    def deny(self, rule: DeviceRule | str) -> None:
        """Withdraw access: an exactly matching allow loses those bits; if some other (wildcard)
        allow still grants part of it, an explicit deny entry is added so it stays denied."""
        new = _as_rule(rule)
        self.allow_rules = _subtract_same(self.allow_rules, new)
        if not any(a.overlaps(new) for a in self.allow_rules):
            return
        for i, old in enumerate(self.deny_rules):
            if old.same_device(new):
                self.deny_rules[i] = DeviceRule(new.type, new.major, new.minor,
                                                mask_to_access(old.mask | new.mask))
                return
        self.deny_rules.append(new)


def _subtract_same(rules: list[DeviceRule], removed: DeviceRule) -> list[DeviceRule]:
    """Drop `removed`'s access bits from rules with the identical device pattern."""
    out = []
    for old in rules:
        if old.same_device(removed):
            left = old.mask & ~removed.mask
            if left:
                out.append(DeviceRule(old.type, old.major, old.minor, mask_to_access(left)))
        else:
            out.append(old)
    return out
