"""Signed GuestOS configs as reference values for the container measurement list (PCR 11).

cmld measures each GuestOS image as `<base>/operatingsystems/<name>-<version>/<image>.img` with
its SHA-256, after checking it against the signed GuestOS config. The verifier holds copies of
the signed configs (`<name>-<version>.conf` with `.sig` and `.cert`, as `cml-sign` writes them),
checks each signature against the GuestOS CA, and then requires every measured image to be one
that a signed config names, with that config's hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import parse_text
from cml_sign.check import anchors_from, check

MAX_CONFIG = 1024 * 1024


class GuestOSRefError(ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    config: Path
    sha256: str


def load(dirs: list[Path], ca: Path) -> tuple[dict[tuple[str, str], Reference], list[str]]:
    """{(<name>-<version>, <image_file>): Reference} from every config whose signature verifies,
    and a list of configs that were skipped, with the reason."""
    anchors = anchors_from(None, [ca], None)
    refs: dict[tuple[str, str], Reference] = {}
    skipped: list[str] = []
    for d in dirs:
        if not d.is_dir():
            raise GuestOSRefError(f"guestos_dir {d} is not a directory")
        for conf in sorted(d.glob("*.conf")):
            sig, cert = conf.with_suffix(".sig"), conf.with_suffix(".cert")
            if not sig.exists() or not cert.exists():
                skipped.append(f"{conf.name}: no .sig/.cert")
                continue
            res = check(conf, sig, cert, anchors)
            if res.name not in ("CRYPTO_VERIFY_GOOD", "CRYPTO_VERIFY_LOCALLY_SIGNED"):
                skipped.append(f"{conf.name}: {res.name} ({res.reason})")
                continue
            try:
                if conf.stat().st_size > MAX_CONFIG:
                    raise ValueError("larger than 1 MiB")
                cfg = parse_text(conf.read_bytes(), GuestOSConfig, source=str(conf))
            except (OSError, ValueError) as e:
                skipped.append(f"{conf.name}: {e}")
                continue
            for m in list(cfg.mounts) + list(cfg.mounts_setup):
                if m.image_sha2_256:
                    refs[(f"{cfg.name}-{cfg.version}", m.image_file)] = Reference(conf, m.image_sha2_256.lower())
    return refs, skipped


def key_of(filename: str) -> tuple[str, str]:
    """(<name>-<version>, <image_file>) of a measured path `.../<name>-<version>/<image>.img`."""
    p = PurePosixPath(filename)
    return p.parent.name, p.name[:-4] if p.name.endswith(".img") else p.name
