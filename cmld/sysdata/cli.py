"""`cml-sysdata`: the system data volume, from provisioning to every boot.

    cml-sysdata setup --device DEV --authority PEM --policy FILE   # once, before any container exists
    cml-sysdata open [--recovery-key-file FILE|-]                  # at boot (cml-sysdata.service)
    cml-sysdata close | status

`setup` seals a fresh secret in tpm2d to the vendor's signed PCR policy (SEAL_CREATE: a new sealed
object `sysdata-<random>`), checks that the policy opens it on this device now, formats DEV with
it, makes the file system, binds cmld's data directories and writes `<base>/sysdata.conf` last;
it prints the recovery key, which nothing keeps. `open` needs no PIN: tpm2d unseals the secret
when PCR 7 (or whatever the policy covers) has the signed values, and refuses otherwise; then the
recovery key opens it. Without `sysdata.conf` there is no volume and `open` does nothing.
Exit codes: 0 done, 1 refused or failed (with the reason on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from cml_common import paths
from cml_common.tpm2d_client import Tpm2dClient, Tpm2dError
from cmld.crypt.tools import ToolError
from cmld.sysdata import config, volume
from cmld.sysdata.config import SysdataConfig


class Refused(Exception):
    pass


def _read_secret_source(arg: str) -> str:
    text = sys.stdin.read() if arg == "-" else Path(arg).read_text()
    key = text.strip()
    if not key or len(key) > 200:
        raise Refused("the recovery key is empty or too long")
    return key


def _tpm(args: argparse.Namespace) -> Tpm2dClient:
    return Tpm2dClient(args.tpm2d_socket, timeout=120.0)


def setup(args: argparse.Namespace) -> str:
    base: Path = args.base_dir
    if config.load(base) is not None:
        raise Refused(f"{base / config.NAME} exists: this device has a system data volume already")
    device = str(args.device)
    if not Path(device).exists():
        raise Refused(f"{device} does not exist")
    busy = volume.dirs_in_use(base, config.DIRS)
    if busy:
        raise Refused(f"not empty: {', '.join(busy)}; set the volume up before any container exists "
                      "(stop cmld, move the data away)")
    authority, policy = args.authority.read_bytes(), args.policy.read_bytes()
    seal_name = f"sysdata-{secrets.token_hex(4)}"
    with _tpm(args) as tpm:
        recovery = tpm.seal_create(seal_name, authority, policy)
        try:
            secret = tpm.unseal(seal_name)
        except Tpm2dError as e:
            raise Refused(f"the signed policy does not open the sealed secret on this device now: {e}") from e
    uuid = volume.format_volume(device, secret)
    cfg = SysdataConfig(device, uuid, seal_name)
    volume.unlock(cfg, secret)
    volume.make_filesystem()
    volume.mount(cfg, base)
    cfg.save(base)  # last: from now on this device has a system data volume
    return (f"system data volume on {device} (LUKS2 {uuid}), sealed by tpm2d as {seal_name!r}\n"
            f"mounted at {volume.mount_point(base)}; bound: {', '.join(str(base / d) for d in cfg.dirs)}\n"
            f"recovery key: {recovery}\n"
            "Keep the recovery key offline. It opens the volume when the PCRs differ from the signed policy "
            "(cml-sysdata open --recovery-key-file -); it is shown only now.")


def open_(args: argparse.Namespace) -> str:
    base: Path = args.base_dir
    cfg = config.load(base)
    if cfg is None:
        return "no system data volume is set up on this device: nothing to open"
    if volume.is_open() and volume.is_mounted(volume.mount_point(base)):
        volume.mount(cfg, base)
        return f"the system data volume is open already ({volume.mount_point(base)})"
    with _tpm(args) as tpm:
        try:
            if args.recovery_key_file:
                secret = tpm.unseal_recovery(cfg.seal_name, _read_secret_source(args.recovery_key_file))
            else:
                secret = tpm.unseal(cfg.seal_name)
        except Tpm2dError as e:
            how = "with the recovery key" if args.recovery_key_file else "(no PIN: the signed PCR policy)"
            raise Refused(f"tpm2d does not release the system data key {how}: {e}") from e
    volume.open_volume(cfg, base, secret)
    return f"system data volume open: {cfg.device} at {volume.mount_point(base)}"


def close(args: argparse.Namespace) -> str:
    cfg = config.load(args.base_dir)
    if cfg is None:
        return "no system data volume is set up on this device"
    volume.close_volume(cfg, args.base_dir)
    return "system data volume closed"


def status(args: argparse.Namespace) -> str:
    cfg = config.load(args.base_dir)
    if cfg is None:
        return "configured: no"
    mounted = volume.is_mounted(volume.mount_point(args.base_dir))
    return (f"configured: yes\ndevice: {cfg.device}\nluks_uuid: {cfg.luks_uuid}\nsealed_object: {cfg.seal_name}\n"
            f"open: {'yes' if volume.is_open() else 'no'}\nmounted: {'yes' if mounted else 'no'}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cml-sysdata", description="The system data volume (key sealed by tpm2d).")
    ap.add_argument("--base-dir", type=Path, default=paths.DEFAULT_BASE_DIR, help="default %(default)s")
    ap.add_argument("--tpm2d-socket", type=Path, default=paths.TPM2D_SOCKET, help="default %(default)s")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="format DEVICE as the system data volume (everything on it is lost)")
    s.add_argument("--device", type=Path, required=True)
    s.add_argument("--authority", type=Path, required=True, help="PEM public key that signs PCR policies")
    s.add_argument("--policy", type=Path, required=True, help="a PCR policy signed by it (tpm2_control "
                                                              "seal_policy_sign) for this device's PCRs")
    s.set_defaults(func=setup)
    o = sub.add_parser("open", help="unlock, mount and bind (at boot)")
    o.add_argument("--recovery-key-file", metavar="FILE", help="use the recovery key from FILE ('-': stdin)")
    o.set_defaults(func=open_)
    sub.add_parser("close", help="unbind, unmount and lock").set_defaults(func=close)
    sub.add_parser("status").set_defaults(func=status)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(args.func(args))
    except (Refused, ToolError, Tpm2dError, config.ConfigError, OSError) as e:
        print(f"cml-sysdata {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
