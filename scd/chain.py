"""Certificate path building from a signer certificate to one trust anchor.

Hand-written because the signing certificates of GyroidOS PKIs are neither TLS server nor client
certificates, which is all `cryptography.x509.verification` validates. Rules, as OpenSSL's
default verification applies them: each issuer must match the subject's issuer name, carry
basicConstraints CA:TRUE (and keyCertSign when keyUsage is present), respect pathLenConstraint,
and have signed the subject; every certificate on the path, the anchor included, must be valid
at `now` unless time checks are off.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from scd.errors import ScdError

MAX_DEPTH = 8


class ChainError(ScdError):
    pass


def _check_time(cert: x509.Certificate, now: datetime.datetime) -> None:
    name = cert.subject.rfc4514_string()
    if now < cert.not_valid_before_utc:
        raise ChainError(f"'{name}' is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
    if now > cert.not_valid_after_utc:
        raise ChainError(f"'{name}' expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")


def _can_issue(issuer: x509.Certificate, below: int) -> str | None:
    """Why `issuer` may not sign a certificate with `below` CA certificates under it, or None."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "has no basicConstraints (not a CA)"
    if not bc.ca:
        return "is not a CA"
    if bc.path_length is not None and below > bc.path_length:
        return f"pathLenConstraint {bc.path_length} exceeded"
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return None if ku.key_cert_sign else "keyUsage lacks keyCertSign"


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def build_path(leaf: x509.Certificate, intermediates: list[x509.Certificate], anchor: x509.Certificate,
               now: datetime.datetime | None) -> list[x509.Certificate]:
    """The path leaf → … → anchor, or ChainError saying where it breaks.

    cryptography parses names, extensions and keys lazily: a certificate that loads can still
    fail (ValueError, UnsupportedAlgorithm) when one of them is read. Such a certificate cannot
    be on a trusted path, and its signer (or a registered CA) must get a refusal, not an
    internal error, so that becomes a ChainError too (found by fuzzing scd_verify)."""
    try:
        return _build_path(leaf, intermediates, anchor, now)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ChainError(f"a certificate on the path cannot be read: {e}") from e


def _build_path(leaf: x509.Certificate, intermediates: list[x509.Certificate], anchor: x509.Certificate,
                now: datetime.datetime | None) -> list[x509.Certificate]:
    path = [leaf]
    current = leaf
    for below in range(MAX_DEPTH):
        if now is not None:
            _check_time(current, now)
        if current == anchor:
            return path
        if current.issuer == anchor.subject and _issued(current, anchor):
            why = _can_issue(anchor, below)
            if why:
                raise ChainError(f"anchor '{anchor.subject.rfc4514_string()}' {why}")
            if now is not None:
                _check_time(anchor, now)
            return [*path, anchor]
        nxt = None
        for cand in intermediates:
            if cand not in path and cand.subject == current.issuer and _issued(current, cand):
                why = _can_issue(cand, below)
                if why:
                    raise ChainError(f"intermediate '{cand.subject.rfc4514_string()}' {why}")
                nxt = cand
                break
        if nxt is None:
            raise ChainError(f"no issuer of '{current.subject.rfc4514_string()}' "
                             f"(issuer '{current.issuer.rfc4514_string()}') in the chain or the anchor")
        path.append(nxt)
        current = nxt
    raise ChainError(f"chain longer than {MAX_DEPTH} certificates")
