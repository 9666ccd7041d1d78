"""cgroup v2 device control: a hand-assembled BPF_PROG_TYPE_CGROUP_DEVICE program per policy.

cgroup v2 has no devices.allow file; the kernel asks BPF programs attached to the cgroup
(and its ancestors) instead. Like runc/crun we emit straight-line code from the rule list
(deny rules, then allow rules, then `return 0`) and load it with bpf(2) (`cmld.linux.bpf`),
so there is no libbpf/bcc dependency. Programs are attached with BPF_F_ALLOW_MULTI; a
policy change attaches the new program first and detaches the old one afterwards, so
during the swap both run and access is the intersection (never more than either policy).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cmld.cgroups.device_rules import ALL_ACCESS, DevicePolicy, DeviceRule
from cmld.linux import bpf

# bpf_cgroup_dev_ctx.access_type low 16 bits
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
_DEV_TYPE = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}

# Opcodes (linux/bpf_common.h, linux/bpf.h)
_LDX_MEM_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54    # BPF_ALU | BPF_AND | BPF_K
_ALU32_RSH_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K
_ALU32_MOV_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X
_ALU64_MOV_K = 0xB7    # BPF_ALU64 | BPF_MOV | BPF_K
_JMP_JEQ_K = 0x15
_JMP_JNE_K = 0x55
_JMP_JSET_K = 0x45
_JMP_EXIT = 0x95

# Registers: r1 = ctx (then scratch), r2 = device type, r3 = access, r4 = major, r5 = minor.
_R0, _R1, _R2, _R3, _R4, _R5 = range(6)



def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_SKIP = None  # jump target placeholder: "to the next rule"
_Insn = tuple[int, int, int, int | None, int]  # code, dst, src, off (or _SKIP), imm


def _rule_block(rule: DeviceRule, allow: bool) -> list[_Insn]:
    """Instructions for one rule: the checks (jumping to the next rule on mismatch), then return."""
    body: list[_Insn] = []
    if rule.type != "a":
        body.append((_JMP_JNE_K, _R2, 0, _SKIP, _DEV_TYPE[rule.type]))
    mask = rule.mask
    if mask != ALL_ACCESS:
        if allow:
            # Every requested bit must be granted: skip if request & ~mask != 0.
            body.append((_JMP_JSET_K, _R3, 0, _SKIP, ALL_ACCESS & ~mask))
        else:
            # Deny if any requested bit is named: skip if request & mask == 0.
            body.append((_ALU32_MOV_X, _R1, _R3, 0, 0))
            body.append((_ALU32_AND_K, _R1, 0, 0, mask))
            body.append((_JMP_JEQ_K, _R1, 0, _SKIP, 0))
    if rule.major is not None:
        body.append((_JMP_JNE_K, _R4, 0, _SKIP, rule.major))
    if rule.minor is not None:
        body.append((_JMP_JNE_K, _R5, 0, _SKIP, rule.minor))
    body.append((_ALU64_MOV_K, _R0, 0, 0, 1 if allow else 0))
    body.append((_JMP_EXIT, 0, 0, 0, 0))
    return body


def build_program(policy: DevicePolicy) -> bytes:
    """Assemble the filter for `policy`: returns the packed struct bpf_insn array."""
    out = [
        _insn(_LDX_MEM_W, _R2, _R1, 0),          # r2 = ctx->access_type
        _insn(_ALU32_AND_K, _R2, 0, 0, 0xFFFF),   # r2 &= 0xffff (device type)
        _insn(_LDX_MEM_W, _R3, _R1, 0),          # r3 = ctx->access_type
        _insn(_ALU32_RSH_K, _R3, 0, 0, 16),      # r3 >>= 16 (access bits)
        _insn(_LDX_MEM_W, _R4, _R1, 4),          # r4 = ctx->major
        _insn(_LDX_MEM_W, _R5, _R1, 8),          # r5 = ctx->minor
    ]
    rules = [(r, False) for r in policy.deny_rules] + [(r, True) for r in policy.allow_rules]
    for rule, allow in rules:
        body = _rule_block(rule, allow)
        for i, (code, dst, src, off, imm) in enumerate(body):
            out.append(_insn(code, dst, src, len(body) - i - 1 if off is None else off, imm))
        if all(off is not None for _c, _d, _s, off, _i in body):
            # Matches every request: nothing after it is reachable, and the verifier
            # rejects unreachable instructions.
            return b"".join(out)
    out.append(_insn(_ALU64_MOV_K, _R0, 0, 0, 0))
    out.append(_insn(_JMP_EXIT))
    return b"".join(out)


class DeviceProgram:
    """The device filter attached to one cgroup directory; owns the program fd."""

    def __init__(self, cgroup_dir: Path) -> None:
        self.cgroup_dir = cgroup_dir
        self.prog_fd: int | None = None

    def apply(self, policy: DevicePolicy) -> None:
        """Load the program for `policy`, attach it, then detach the previous one."""
        try:
            prog_fd = bpf.load_device_program(build_program(policy))
        except OSError as e:
            raise OSError(e.errno, f"{self.cgroup_dir}: {e.strerror}") from None
        try:
            cg_fd = os.open(self.cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(prog_fd)
            raise
        try:
            try:
                bpf.attach_device_program(cg_fd, prog_fd)
            except OSError as e:
                os.close(prog_fd)
                raise OSError(e.errno, f"BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to "
                                       f"{self.cgroup_dir}: {os.strerror(e.errno or 0)}") from None
            old, self.prog_fd = self.prog_fd, prog_fd
            if old is not None:
                try:
                    bpf.detach_device_program(cg_fd, old)
                except OSError as e:
                    # The new program is attached; the old one still narrows access. Report it.
                    raise OSError(e.errno, f"BPF_PROG_DETACH of the previous device program from "
                                           f"{self.cgroup_dir}: {os.strerror(e.errno or 0)}") from None
                finally:
                    os.close(old)
        finally:
            os.close(cg_fd)

    def close(self) -> None:
        """Drop our reference; the program stays attached while the cgroup exists."""
        if self.prog_fd is not None:
            os.close(self.prog_fd)
            self.prog_fd = None
