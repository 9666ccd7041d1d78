"""The few TPM 2.0 structures a verifier reads (TPM 2.0 Part 2), parsed in pure Python so the
verifier needs no TSS: TPMS_ATTEST (a quote), TPMT_SIGNATURE and TPM2B_PUBLIC (an RSA key).

Every parser checks lengths and raises StructError on truncated or trailing bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_NULL = 0x0010
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
HASH_SIZES = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32, 0x000C: 48, 0x000D: 64}

ATTR_FIXEDTPM = 1 << 1
ATTR_FIXEDPARENT = 1 << 4
ATTR_SENSITIVEDATAORIGIN = 1 << 5
ATTR_RESTRICTED = 1 << 16
ATTR_DECRYPT = 1 << 17
ATTR_SIGN = 1 << 18


class StructError(ValueError):
    pass


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.off = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.off + n > len(self.data):
            raise StructError(f"{self.what}: truncated at byte {self.off} (needs {n} more, has "
                              f"{len(self.data) - self.off})")
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self.off != len(self.data):
            raise StructError(f"{self.what}: {len(self.data) - self.off} trailing bytes")


@dataclass(frozen=True)
class PcrSelection:
    hash_alg: int
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class Quote:
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_selection(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32()
    if count > 16:
        raise StructError(f"{r.what}: {count} PCR selections")
    out = []
    for _ in range(count):
        alg = r.u16()
        size = r.u8()
        bitmap = r.take(size)
        out.append(PcrSelection(alg, tuple(i for i in range(size * 8) if bitmap[i // 8] & (1 << (i % 8)))))
    return tuple(out)


def parse_quote(data: bytes) -> Quote:
    r = Reader(data, "TPMS_ATTEST")
    magic, typ = r.u32(), r.u16()
    signer, extra = r.tpm2b(), r.tpm2b()
    clock, resets, restarts, safe = r.u64(), r.u32(), r.u32(), r.u8()
    fw = r.u64()
    if typ != TPM_ST_ATTEST_QUOTE:
        raise StructError(f"TPMS_ATTEST type {typ:#x} is not a quote ({TPM_ST_ATTEST_QUOTE:#x})")
    sel = parse_selection(r)
    digest = r.tpm2b()
    r.end()
    return Quote(magic, typ, signer, extra, clock, resets, restarts, bool(safe), fw, sel, digest)


@dataclass(frozen=True)
class Signature:
    alg: int
    hash_alg: int
    sig: bytes


def parse_signature(data: bytes) -> Signature:
    r = Reader(data, "TPMT_SIGNATURE")
    alg = r.u16()
    if alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        h = r.u16()
        sig = r.tpm2b()
    elif alg == TPM_ALG_ECDSA:
        h = r.u16()
        sig = r.tpm2b() + r.tpm2b()
    else:
        raise StructError(f"TPMT_SIGNATURE algorithm {alg:#x} is not RSASSA, RSAPSS or ECDSA")
    r.end()
    return Signature(alg, h, sig)


@dataclass(frozen=True)
class RsaPublic:
    name_alg: int
    attributes: int
    scheme: int
    key_bits: int
    exponent: int
    modulus: bytes
    public_area: bytes  # the marshalled TPMT_PUBLIC

    def name(self) -> bytes:
        if self.name_alg != TPM_ALG_SHA256:
            raise StructError(f"nameAlg {self.name_alg:#x} is not SHA-256")
        return struct.pack(">H", self.name_alg) + hashlib.sha256(self.public_area).digest()


TPM_RH_OWNER = 0x40000001


def qualified_name(parent_qn: bytes, name: bytes) -> bytes:
    """QN(object) = nameAlg || SHA-256(QN(parent) || Name(object)); a hierarchy's QN is its handle."""
    return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(parent_qn + name).digest()


def parse_public(data: bytes) -> RsaPublic:
    """A TPM2B_PUBLIC of an RSA key."""
    outer = Reader(data, "TPM2B_PUBLIC")
    area = outer.tpm2b()
    outer.end()
    r = Reader(area, "TPMT_PUBLIC")
    typ, name_alg, attrs = r.u16(), r.u16(), r.u32()
    r.tpm2b()  # authPolicy
    if typ != TPM_ALG_RSA:
        raise StructError(f"TPMT_PUBLIC type {typ:#x} is not RSA")
    sym = r.u16()
    if sym != TPM_ALG_NULL:
        r.u16()
        r.u16()
    scheme = r.u16()
    if scheme != TPM_ALG_NULL:
        r.u16()
    bits, exponent = r.u16(), r.u32()
    modulus = r.tpm2b()
    r.end()
    return RsaPublic(name_alg, attrs, scheme, bits, exponent or 65537, modulus, area)
