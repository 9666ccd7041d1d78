"""A small classic-BPF interpreter for seccomp filters (the subset libseccomp emits), run on
struct seccomp_data as the kernel would: the unit tests check a filter's verdicts without
loading anything into the kernel."""

from __future__ import annotations

import struct
import tempfile

from cmld.seccomp import filter as sfilter
from cmld.seccomp import notify

AUDIT_ARCH_I386 = 0x40000003
KILL_PROCESS, NOTIFY, ALLOW = 0x80000000, 0x7FC00000, 0x7FFF0000
ERRNO = 0x00050000
Program = list[tuple[int, int, int, int]]


def errno_action(err: int) -> int:
    return ERRNO | err


def bpf(kind: sfilter.FilterKind) -> Program:
    with tempfile.TemporaryFile() as f:
        sfilter.build_filter(kind).export_bpf(f)
        f.seek(0)
        raw = f.read()
    assert raw == sfilter.compiled(kind)  # what containers get is this same program
    return [struct.unpack_from("=HBBI", raw, i) for i in range(0, len(raw), 8)]


def run(prog: Program, nr: int, args: tuple[int, ...] = (), arch: int = notify.AUDIT_ARCH_X86_64) -> int:
    """The action the kernel would take for syscall `nr` with `args`."""
    a6 = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("=IIQ6Q", nr, arch, 0, *a6)
    acc = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # LD
            mode = code & 0xE0
            if mode == 0x20:  # ABS
                acc = struct.unpack_from("=I", data, k)[0]
            elif mode == 0x00:  # IMM
                acc = k
            elif mode == 0x60:  # MEM
                acc = mem[k]
            else:
                raise AssertionError(f"LD mode {code:#x}")
        elif cls == 0x01:  # LDX
            x = k if code & 0xE0 == 0x00 else mem[k]
        elif cls == 0x02:  # ST
            mem[k] = acc
        elif cls == 0x03:  # STX
            mem[k] = x
        elif cls == 0x04:  # ALU
            src = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x50:
                acc &= src
            elif op == 0x40:
                acc |= src
            elif op == 0x00:
                acc = (acc + src) & 0xFFFFFFFF
            else:
                raise AssertionError(f"ALU op {code:#x}")
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            src = x if code & 0x08 else k
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: acc == src, 0x20: acc > src, 0x30: acc >= src, 0x40: bool(acc & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return k
        elif cls == 0x07:  # MISC
            if code == 0x07:
                x = acc
            else:
                acc = x
