"""The SmartCard-HSM APDUs scd uses (the subset of CardContact's card service the original calls):
SELECT the applet, VERIFY / CHANGE REFERENCE DATA of the user PIN (reference 0x81), GENERATE
SYMMETRIC KEY (the device master key, id 1, derivation algorithm 0x99) and the proprietary
DERIVE SYMMETRIC KEY `80 78 <id> 99` that returns a 32-byte key derived from the master key
and a label (the container UUID)."""

from __future__ import annotations

from collections.abc import Callable

from scd.errors import ScdError

AID = bytes.fromhex("E82B0601040181C31F0201")
PIN_REF = 0x81
MASTER_KEY_ID = 0x01
ALG_DERIVE = 0x99
SW_OK = 0x9000
MAX_AUTH = 16

Transmit = Callable[[bytes], tuple[bytes, int]]


class CardError(ScdError):
    def __init__(self, what: str, sw: int) -> None:
        self.sw = sw
        super().__init__(f"{what}: card answered SW {sw:04X}")


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    out = bytes([cla, ins, p1, p2])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le & 0xFF])
    return out


def wrong_pin(sw: int) -> bool:
    """63Cx: wrong PIN, x retries left."""
    return sw & 0xFFF0 == 0x63C0


def select(tx: Transmit) -> None:
    _, sw = tx(apdu(0x00, 0xA4, 0x04, 0x04, AID, 0))
    if sw != SW_OK:
        raise CardError("SELECT SmartCard-HSM", sw)


def verify_pin(tx: Transmit, auth: bytes) -> int:
    if not auth or len(auth) > MAX_AUTH:
        raise ValueError(f"the auth code must be 1..{MAX_AUTH} bytes (pairing secret + PIN)")
    return tx(apdu(0x00, 0x20, 0x00, PIN_REF, auth))[1]


def change_pin(tx: Transmit, old: bytes, new: bytes) -> int:
    if not old or not new or len(old) > MAX_AUTH or len(new) > MAX_AUTH:
        raise ValueError(f"PINs/auth codes must be 1..{MAX_AUTH} bytes")
    return tx(apdu(0x00, 0x24, 0x00, PIN_REF, old + new))[1]


def generate_master_key(tx: Transmit) -> None:
    _, sw = tx(apdu(0x00, 0x48, MASTER_KEY_ID, 0xB0, bytes([ALG_DERIVE])))
    if sw != SW_OK:
        raise CardError("GENERATE SYMMETRIC KEY", sw)


def derive_key(tx: Transmit, label: bytes) -> bytearray:
    if not label or len(label) > 127:
        raise ValueError("the derivation label must be 1..127 bytes")
    data, sw = tx(apdu(0x80, 0x78, MASTER_KEY_ID, ALG_DERIVE, label, 32))
    if sw != SW_OK or len(data) != 32:
        raise CardError("DERIVE SYMMETRIC KEY", sw)
    return bytearray(data)
