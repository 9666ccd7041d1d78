"""Device access (the original's c_cgroups_dev): the generic allow list, `allow_dev`, exclusive
`assign_dev`, runtime changes through CONTAINER_DEV_ACCESS, and the /dev nodes the container gets.

Enforced by the cgroup (devices.allow/deny on v1, an eBPF program on v2); the same policy
decides which nodes are created in the container's /dev and which mknod calls the seccomp
supervisor performs.
"""

from __future__ import annotations

import logging
import os
import stat

from cmld.cgroups.device_rules import DevicePolicy, DeviceRule, parse_rule
from cmld.launcher.spec import DevNode
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
DevKey = tuple[str, int, int]
# Nodes we never copy: ptmx is a symlink to the container's own devpts; console is no device here.
SKIPPED_NODES = frozenset({"ptmx", "console"})


class DeviceAssignments:
    """Devices assigned exclusively to a running container (global while containers run)."""

    def __init__(self) -> None:
        self.owner: dict[DevKey, str] = {}
        self.allowed_by: dict[str, list[DeviceRule]] = {}

    def assigned_elsewhere(self, rule: DeviceRule, uuid: str) -> str | None:
        for (t, major, minor), owner in self.owner.items():
            if owner != uuid and rule.matches_device(t, major, minor):
                return owner
        return None

    def release(self, uuid: str) -> None:
        self.owner = {k: v for k, v in self.owner.items() if v != uuid}
        self.allowed_by.pop(uuid, None)


def host_nodes(policy: DevicePolicy) -> list[DevNode]:
    """The host's device nodes (in /dev and /dev/net) the policy allows, to mknod in the container."""
    nodes: list[DevNode] = []
    for sub in ("", "net"):
        d = os.path.join("/dev", sub)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name in SKIPPED_NODES:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode):
                t = "c"
            elif stat.S_ISBLK(st.st_mode):
                t = "b"
            else:
                continue
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            if policy.allows(t, major, minor, "m"):
                nodes.append(DevNode(f"{sub}/{e.name}" if sub else e.name, t, major, minor,
                                     stat.S_IMODE(st.st_mode)))
    return nodes


class DevicesModule(Module):
    name = "devices"

    def __init__(self, assignments: DeviceAssignments) -> None:
        self.assignments = assignments
        self.policy = DevicePolicy.generic()
        self.uuid = ""

    def is_allowed(self, dev_type: str, major: int, minor: int) -> bool:
        return self.policy.allows(dev_type, major, minor, "m")

    async def prepare(self, ctx: StartContext) -> None:
        cfg = ctx.container.config
        self.uuid = ctx.uuid
        policy = DevicePolicy.generic()
        try:
            for text in cfg.allow_dev:
                rule = parse_rule(text)
                other = self.assignments.assigned_elsewhere(rule, ctx.uuid)
                if other is not None:
                    log.info("container %s: allow_dev %s skipped: assigned to %s", cfg.name, text, other)
                    continue
                policy.allow(rule)
            for text, exclusive in ctx.extra_device_rules:  # USB devices (modules/usb.py)
                self._add(policy, ctx.uuid, parse_rule(text), exclusive)
            for text in cfg.assign_dev:
                rule = parse_rule(text)
                if rule.major is None or rule.minor is None:
                    raise StartError(f"assign_dev {text!r}: an exclusive assignment needs a concrete device")
                for uuid, rules in self.assignments.allowed_by.items():
                    if uuid != ctx.uuid and any(r.matches_device(rule.type, rule.major, rule.minor) for r in rules):
                        raise StartError(f"assign_dev {text}: the device is already allowed to container {uuid}")
                policy.allow(rule)
                self.assignments.owner[(rule.type, rule.major, rule.minor)] = ctx.uuid
        except ValueError as e:
            raise StartError(f"device rule: {e}") from None
        self.policy = policy
        self.assignments.allowed_by[ctx.uuid] = list(policy.allow_rules)
        cgroup = ctx.cgroup
        if cgroup is None:
            raise StartError("device control needs the container's cgroup")
        try:
            cgroup.apply_devices(policy)
        except OSError as e:
            raise StartError(f"device control: {e}") from None
        ctx.spec.devices = host_nodes(policy) + ctx.extra_nodes
        ctx.devices = self

    def _add(self, policy: DevicePolicy, uuid: str, rule: DeviceRule, exclusive: bool) -> None:
        """Allow `rule`; exclusively (as assign_dev) if asked. ValueError if another container has it."""
        other = self.assignments.assigned_elsewhere(rule, uuid)
        if other is not None:
            raise ValueError(f"{rule} is assigned exclusively to container {other}")
        if exclusive and rule.major is not None and rule.minor is not None:
            for o, rules in self.assignments.allowed_by.items():
                if o != uuid and any(r.matches_device(rule.type, rule.major, rule.minor) for r in rules):
                    raise ValueError(f"{rule} is allowed to container {o}: it cannot be assigned")
            self.assignments.owner[(rule.type, rule.major, rule.minor)] = uuid
        policy.allow(rule)

    def grant(self, ctx: StartContext, rule_text: str, assign: bool) -> None:
        """A hotplugged device for the running container (USB)."""
        self._add(self.policy, ctx.uuid, parse_rule(rule_text), assign)
        if ctx.cgroup is not None:
            ctx.cgroup.apply_devices(self.policy)
        self.assignments.allowed_by[ctx.uuid] = list(self.policy.allow_rules)

    def withdraw(self, ctx: StartContext, rule_text: str) -> None:
        rule = parse_rule(rule_text)
        self.policy.deny(rule)
        key = (rule.type, rule.major, rule.minor)
        if rule.major is not None and rule.minor is not None and self.assignments.owner.get(key) == ctx.uuid:  # type: ignore[arg-type]
            del self.assignments.owner[key]  # type: ignore[arg-type]
        if ctx.cgroup is not None:
            ctx.cgroup.apply_devices(self.policy)
        self.assignments.allowed_by[ctx.uuid] = list(self.policy.allow_rules)

    def dev_access(self, ctx: StartContext, rule_text: str) -> str:
        """CONTAINER_DEV_ACCESS: an access list with `m` allows the device (as the original's
        intent), one without `m` withdraws the listed access. Returns what was done."""
        rule = parse_rule(rule_text)
        if "m" in rule.access:
            other = self.assignments.assigned_elsewhere(rule, ctx.uuid)
            if other is not None:
                raise ValueError(f"{rule_text} is assigned exclusively to container {other}")
            self.policy.allow(rule)
            done = "allowed"
        else:
            self.policy.deny(rule)
            done = "denied"
        if ctx.cgroup is not None:
            ctx.cgroup.apply_devices(self.policy)
        self.assignments.allowed_by[ctx.uuid] = list(self.policy.allow_rules)
        return done

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        self.assignments.release(ctx.uuid)
