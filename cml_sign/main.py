"""cml-sign: development PKI, config signing, verification with reasons, signed GuestOS builds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cml_common.fsutil import write_atomic

from . import guestos, pki
from .check import anchors_from, check
from .sign import outputs, sign_config
from .signer import SignError, load_signer


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cml-sign", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("pki", help="create a development PKI (ssig root/sub CAs, device and GuestOS CAs)")
    p.add_argument("out", type=Path)
    p.add_argument("--key-type", choices=pki.KEY_TYPES, default="rsa3072")
    p.add_argument("--days", type=int, default=3650)

    p = sub.add_parser("sign", help="sign a container or GuestOS config: writes <base>.sig and <base>.cert")
    p.add_argument("conf", type=Path)
    p.add_argument("--key", "-k", required=True, help="PEM key file or pkcs11: URI")
    p.add_argument("--cert", action="append", type=Path, required=True,
                   help="signer certificate, then intermediates (repeatable; a file may hold a chain)")
    p.add_argument("--pkcs1", action="store_true", help="RSA PKCS#1 v1.5 instead of RSA-PSS")

    p = sub.add_parser("verify", help="verify a signed config as scd does and say why")
    p.add_argument("conf", type=Path)
    p.add_argument("sig", type=Path, nargs="?")
    p.add_argument("cert", type=Path, nargs="?")
    p.add_argument("--root", action="append", type=Path, default=[], help="trust anchor (repeatable, in order)")
    p.add_argument("--local-ca", type=Path, help="local CA: success there is LOCALLY_SIGNED")
    p.add_argument("--base-dir", type=Path, help="use a device's anchors (<base>/tokens/...)")
    p.add_argument("--ignore-time", action="store_true", help="skip validity times (unprovisioned device)")

    p = sub.add_parser("csr", help="issue a device certificate for a device CSR (J8)")
    p.add_argument("csr", type=Path)
    p.add_argument("--ca-key", type=Path, required=True)
    p.add_argument("--ca-cert", type=Path, required=True)
    p.add_argument("--out", "-o", type=Path, required=True)

    p = sub.add_parser("guestos", help="build a signed GuestOS (squashfs + dm-verity) from a rootfs dir or tar")
    p.add_argument("rootfs", type=Path)
    p.add_argument("--out", "-o", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--hardware", default="x86")
    p.add_argument("--init", default="/sbin/init")
    p.add_argument("--description")
    p.add_argument("--mount-type", default="SHARED_RW")
    p.add_argument("--key", "-k", required=True)
    p.add_argument("--cert", action="append", type=Path, required=True)
    return ap


def run(args: argparse.Namespace) -> int:
    if args.cmd == "pki":
        for path in pki.create_pki(args.out, args.key_type, days=args.days):
            print(path)
        return 0
    if args.cmd == "sign":
        sig, cert = sign_config(args.conf, load_signer(args.key), args.cert, pkcs1=args.pkcs1)
        print(f"{sig}\n{cert}")
        return 0
    if args.cmd == "verify":
        default_sig, default_cert = outputs(args.conf)
        anchors = anchors_from(args.base_dir, args.root, args.local_ca)
        if not anchors:
            print("error: no trust anchor: give --root, --local-ca or --base-dir", file=sys.stderr)
            return 2
        r = check(args.conf, args.sig or default_sig, args.cert or default_cert, anchors, not args.ignore_time)
        print(f"{r.name}: {r.reason}")
        return 0 if r.name in ("CRYPTO_VERIFY_GOOD", "CRYPTO_VERIFY_LOCALLY_SIGNED") else 1
    if args.cmd == "csr":
        key = serialization.load_pem_private_key(args.ca_key.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(args.ca_cert.read_bytes())
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SignError(f"{args.ca_key}: only RSA and EC CA keys are supported")
        issued = pki.sign_csr(args.csr.read_bytes(), key, ca)
        write_atomic(args.out, pki.cert_pem(issued), mode=0o644)
        print(args.out)
        return 0
    conf = guestos.build(args.rootfs, args.out, args.name, args.version, args.hardware, load_signer(args.key),
                         args.cert, init=args.init, description=args.description, mount_type=args.mount_type)
    print(conf)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (SignError, pki.PkiError, guestos.GuestOSError, OSError, ValueError) as e:
        print(f"cml-sign: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
