"""cml-tpm2-control (also installed as tpm2_control): the original's `tpm2_control` CLI
(inventory §6.2), plus our commands for measurements, sealing and the device key.

    tpm2_control [-s|--socket <file>] <command> [args]

| command | request |
|---|---|
| `dmcrypt_setup [-l\\|--key_len 32\\|48\\|64] <device> [<pw>]` | DMCRYPT_SETUP |
| `dmcrypt_lock [<password>]`, `dmcrypt_reset [<owner password>]` | DMCRYPT_LOCK / DMCRYPT_RESET |
| `getrandom <size>`, `clear [<lockout pw>]`, `change_owner [<old>] [<new>]` | RANDOM_REQ, CLEAR, CHANGE_OWNER_PWD |
| `exit` | EXIT (no reply awaited) |
| `ml_append <file> <sha256 hex>`, `ml_list` | ML_APPEND, ML_LIST (ours) |
| `seal_create <name> <authority.pem> [<policy>]` | SEAL_CREATE (ours) |
| `seal_policy_update <name> <policy>` | SEAL_POLICY_UPDATE (ours) |
| `unseal <name>`, `unseal_recovery <name> <recovery key>` | UNSEAL, UNSEAL_RECOVERY (ours) |
| `device_key_public` | DEVICE_KEY_PUBLIC (ours) |
| `seal_policy_sign --key K --pcr N=HEX... -o FILE` | none: signs a PCR policy offline |

Like the original it prints the request and the reply in protobuf text format. Exit codes: 0 the
command succeeded, 1 tpm2d answered a failure (or an FDE state other than the one asked for),
2 usage error, 254 the socket does not exist or does not answer (the original's -2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from cml_common import paths
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController
from cml_common.textconfig import to_text
from cml_common.tpm2d_client import Tpm2dClient, Tpm2dUnavailable

from .policy import PolicyInputError, parse_pcr_args, sign_policy

C = ControllerToTpm
R = TpmToController
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_SOCKET = 0, 1, 2, 254
KEY_LEN = {32: C.XTS_AES128, 48: C.XTS_AES192, 64: C.XTS_AES256}
FDE_WANTED = {C.DMCRYPT_SETUP: R.FDE_OK, C.DMCRYPT_LOCK: R.FDE_KEY_ACCESS_LOCKED, C.DMCRYPT_RESET: R.FDE_RESET}
MAX_FILE = 64 * 1024


class Usage(Exception):
    pass


def _arg(rest: list[str], i: int, default: str = "") -> str:
    return rest[i] if len(rest) > i else default


def _read(path: str) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE:
            raise Usage(f"{path}: larger than 64 KiB")
        return p.read_bytes()
    except OSError as e:
        raise Usage(f"{path}: {e.strerror}") from e


def build_request(cmd: str, rest: list[str]) -> ControllerToTpm:
    """The request for a subcommand, as the original builds it."""
    if cmd == "dmcrypt_setup":
        ap = argparse.ArgumentParser(prog="tpm2_control dmcrypt_setup", add_help=False)
        ap.add_argument("-l", "--key_len", type=int, default=64)
        ap.add_argument("device")
        ap.add_argument("password", nargs="?", default="")
        try:
            a = ap.parse_args(rest)
        except SystemExit as e:
            raise Usage("dmcrypt_setup [-l|--key_len 32|48|64] <device> [<password>]") from e
        return C(code=C.DMCRYPT_SETUP, dmcrypt_device=a.device, password=a.password,
                 dmcrypt_key_type=KEY_LEN.get(a.key_len, C.XTS_AES256))
    if cmd == "dmcrypt_lock":
        return C(code=C.DMCRYPT_LOCK, password=_arg(rest, 0))
    if cmd == "dmcrypt_reset":
        return C(code=C.DMCRYPT_RESET, password=_arg(rest, 0))
    if cmd == "getrandom":
        if not rest or not rest[0].lstrip("-").isdigit():
            raise Usage("getrandom <size>")
        size = int(rest[0])
        if not -(2**31) <= size < 2**31:
            raise Usage("getrandom: size out of range")
        return C(code=C.RANDOM_REQ, rand_size=size)
    if cmd == "clear":
        return C(code=C.CLEAR, password=_arg(rest, 0))
    if cmd == "change_owner":
        return C(code=C.CHANGE_OWNER_PWD, password=_arg(rest, 0), password_new=_arg(rest, 1))
    if cmd == "exit":
        return C(code=C.EXIT)
    if cmd == "ml_append":
        if len(rest) != 2:
            raise Usage("ml_append <file> <sha256 hex>")
        try:
            digest = bytes.fromhex(rest[1])
        except ValueError as e:
            raise Usage("ml_append: the hash must be hex") from e
        return C(code=C.ML_APPEND, ml_filename=rest[0], ml_datahash=digest, ml_hashalg=32)  # type: ignore[arg-type]
    if cmd == "ml_list":
        return C(code=C.ML_LIST)
    if cmd == "seal_create":
        if len(rest) not in (2, 3):
            raise Usage("seal_create <name> <authority.pem> [<signed policy>]")
        return C(code=C.SEAL_CREATE, seal_name=rest[0], seal_authority=_read(rest[1]),
                 seal_policy=_read(rest[2]) if len(rest) == 3 else b"")
    if cmd == "seal_policy_update":
        if len(rest) != 2:
            raise Usage("seal_policy_update <name> <signed policy>")
        return C(code=C.SEAL_POLICY_UPDATE, seal_name=rest[0], seal_policy=_read(rest[1]))
    if cmd == "unseal":
        if len(rest) != 1:
            raise Usage("unseal <name>")
        return C(code=C.UNSEAL, seal_name=rest[0])
    if cmd == "unseal_recovery":
        if len(rest) != 2:
            raise Usage("unseal_recovery <name> <recovery key>")
        return C(code=C.UNSEAL_RECOVERY, seal_name=rest[0], password=rest[1])
    if cmd == "device_key_public":
        return C(code=C.DEVICE_KEY_PUBLIC)
    raise Usage(f"unknown command {cmd!r}")


def reply_ok(req: ControllerToTpm, reply: TpmToController) -> bool:
    if reply.code == R.GENERIC_RESPONSE:
        return reply.response == R.CMD_OK
    if reply.code == R.FDE_RESPONSE:
        return reply.fde_response == FDE_WANTED.get(req.code)
    return reply.code == R.RANDOM_RESPONSE


def seal_policy_sign(rest: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tpm2_control seal_policy_sign")
    ap.add_argument("--key", required=True, type=Path, help="the seal authority's private key (PEM)")
    ap.add_argument("--pcr", action="append", default=[], metavar="N=HEX", help="an expected SHA-256 PCR value")
    ap.add_argument("--description", default="")
    ap.add_argument("-o", "--output", required=True, type=Path)
    a = ap.parse_args(rest)
    try:
        key = serialization.load_pem_private_key(a.key.read_bytes(), password=None)
        pol = sign_policy(key, parse_pcr_args(a.pcr), a.description)
    except (OSError, ValueError, TypeError, PolicyInputError) as e:
        print(f"tpm2_control: seal_policy_sign: {e}", file=sys.stderr)
        return EXIT_USAGE
    a.output.write_bytes(pol.SerializeToString())
    print(f"signed PCR policy for PCRs {list(pol.pcrs)} written to {a.output}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tpm2_control", description="Control tpm2d (GyroidOS tpm2_control compatible).")
    ap.add_argument("-s", "--socket", type=Path, default=paths.TPM2D_SOCKET)
    ap.add_argument("command")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.command == "seal_policy_sign":
        return seal_policy_sign(a.args)
    try:
        req = build_request(a.command, a.args)
    except Usage as e:
        print(f"tpm2_control: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not a.socket.exists():
        print(f"tpm2_control: socket {a.socket} does not exist", file=sys.stderr)
        return EXIT_NO_SOCKET
    print(to_text(req), end="", flush=True)
    with Tpm2dClient(a.socket) as client:
        try:
            reply = client.send(req, expect_reply=req.code != C.EXIT)
        except Tpm2dUnavailable as e:
            print(f"tpm2_control: {e}", file=sys.stderr)
            return EXIT_NO_SOCKET
    if reply is None:
        return EXIT_OK
    print(to_text(reply), end="", flush=True)
    if not reply_ok(req, reply):
        print(f"tpm2_control: tpm2d: {reply.error_message or 'the command failed'}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
