"""One test per bug the fuzzers found, each on its kept reproducer (tests/fuzz/corpus/*/crash-*)
or the smallest input that shows it: what the product does now, stated explicitly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cml_common import framing, logsetup
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.tpm2d_pb2 import ControllerToTpm
from cmld.control.server import malformed_reply
from tests.fuzz.registry import CORPUS

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]


def reproducer(target: str, sha: str) -> bytes:
    return (CORPUS / target / f"crash-{sha}").read_bytes()


def test_invalid_utf8_in_a_string_field_is_a_malformed_request() -> None:
    """upb hands out invalid UTF-8 of a proto2 string field as bytes: tpm2d's ML_APPEND check
    raised TypeError on it. Now every daemon sees such a request as malformed."""
    body = reproducer("msg_tpm2d", "88569d4e8d29e604344375f9cd47187871ac5e86")
    with pytest.raises(framing.MessageError, match="ml_filename is not UTF-8"):
        framing.parse(ControllerToTpm, body)
    number = ControllerToDaemon.DESCRIPTOR.fields_by_name["container_uuids"].number
    bad = (ControllerToDaemon(command=ControllerToDaemon.CONTAINER_START).SerializeToString()
           + bytes([number << 3 | 2, 2]) + b"\xff\xfe")
    with pytest.raises(framing.MessageError, match="not UTF-8"):
        framing.parse(ControllerToDaemon, bad)
    assert malformed_reply(bad).response == DaemonToController.CMD_FAILED
    assert framing.parse(ControllerToDaemon, b"\x08\x01").command == 1  # ASCII bodies skip the walk


@pytest.mark.parametrize("sha", ["3bae84f6767e4593fd76ce205367f818c8381cba",
                                 "6154f3a8f3e9137b58171c1cbc2a2d3564f8a1c1",
                                 "3ac738eb978b858c1635947a4ae7b64c452c7a74"])
def test_scd_verify_refuses_unreadable_certificates(sha: str) -> None:
    """An issuer with an unknown key type (UnsupportedAlgorithm) and a signer whose subject does
    not parse (ValueError) used to escape verify(): scd answered CMD_UNKNOWN with a traceback."""
    from cml_common.messages.scd_pb2 import TokenToDaemon
    from scd import verify
    from tests.fuzz import targets_scd

    payload, sig, mode, cert = targets_scd.split_verify_input(reproducer("scd_verify", sha))
    anchors = list(targets_scd._anchors())
    r = verify.verify(payload, sig, cert, 2, anchors, check_time=False)
    assert r.code in (TokenToDaemon.CRYPTO_VERIFY_ERROR, TokenToDaemon.CRYPTO_VERIFY_BAD_CERTIFICATE), r


def test_push_device_cert_with_an_unreadable_key_is_refused() -> None:
    from scd import identity
    from tests.fuzz import targets_scd

    targets_scd.scd_device_cert(b"")  # sets up the identity
    with pytest.raises(identity.IdentityError, match="does not parse"):
        targets_scd._IDENTITY[0].install_certificate(
            reproducer("scd_device_cert", "76668e6d129d1656bbc75eb841fc2dbf43adecc0"))


@pytest.mark.parametrize("sha", ["5efdb39de865a0645722b56e924f43c075d63f2a",
                                 "31baa1ea4154ea3a868824185bea9fcfed933732"])
def test_verifier_fails_the_certificate_check_instead_of_crashing(sha: str) -> None:
    from cml_rattestation import checks
    from tests.fuzz import targets_attest

    targets_attest.attestation_response(reproducer("attestation_response", sha))  # no exception
    v = targets_attest._VERIFIER
    assert v is not None
    resp = framing.parse_partial(targets_attest.Tpm2dToRemote, reproducer("attestation_response", sha))
    out = checks.verify(v.context(), resp)
    assert not out.ok()


def test_log_messages_are_bounded(tmp_path: Path) -> None:
    """A refused CREATE_CONTAINER quoted the client's 70 000-character token twice: 140 KB of log
    for one request. Messages are cut at MAX_MESSAGE_CHARS, with a note of how much was cut."""
    fmt = logsetup.CmlFormatter(logsetup.FORMAT)
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "refused: %s", ("A" * 70000,), None)
    line = fmt.format(rec)
    assert len(line) < logsetup.MAX_MESSAGE_CHARS + 200
    assert line.endswith(f"({70000 + len('refused: ') - logsetup.MAX_MESSAGE_CHARS} characters cut)")
    short = logging.LogRecord("x", logging.INFO, __file__, 1, "ok %s", ("b",), None)
    assert fmt.format(short).endswith("INFO ok b")


def test_tpm_passwords_longer_than_an_authvalue_are_a_clear_error() -> None:
    from tpm2d.tpm import MAX_AUTH, TpmError, auth_value

    assert auth_value("x" * MAX_AUTH, "p") == b"x" * MAX_AUTH
    with pytest.raises(TpmError, match="at most 64"):
        auth_value("x" * (MAX_AUTH + 1), "the lockout password")


def test_scd_reads_only_regular_files_named_in_requests(tmp_path: Path) -> None:
    """CRYPTO_HASH_FILE with a NUL in the name was an internal error (ValueError); /dev/zero
    would have been read forever; a FIFO would block a worker. All are now OSError, which the
    commands answer with their error code."""
    import os

    from scd.files import open_regular, read_regular
    from scd.hashing import digest_file

    for name in ("a\0b", "/dev/zero", "/dev/urandom", str(tmp_path)):
        with pytest.raises(OSError):
            digest_file(2, Path(name))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        open_regular(fifo)
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert read_regular(f, 10) == b"x" * 10
    with pytest.raises(OSError, match="larger than 9 bytes"):
        read_regular(f, 9)


def test_a_certificate_with_an_invalid_version_is_a_parse_error_everywhere(tmp_path: Path) -> None:
    """x509.InvalidVersion is not a ValueError: a PEM certificate with version 10 escaped scd's
    verification, PUSH_DEVICE_CERT, trust anchor loading, cmld's REGISTER_NEWCA and the verifier.
    cml_common.certs turns it into ValueError for all of them."""
    from cml_common.certs import load_pem_certificate, load_pem_certificates
    from cmld.guestos.ca_store import CAError, check_ca_pem
    from scd import identity, trust
    from tests.fuzz import targets_scd

    pem = reproducer("scd_device_cert", "cd807471bb70b56e7a0fbfd2e7018f3c90c6e869")
    with pytest.raises(ValueError, match="X.509"):
        load_pem_certificates(pem)
    with pytest.raises(ValueError, match="X.509"):
        load_pem_certificate(pem)
    targets_scd.scd_device_cert(b"")
    with pytest.raises(identity.IdentityError, match="does not parse"):
        targets_scd._IDENTITY[0].install_certificate(pem)
    anchor = tmp_path / "ca.pem"
    anchor.write_bytes(pem)
    assert trust._load(anchor, local=False) is None  # logged and skipped, the others still used
    with pytest.raises(CAError):
        check_ca_pem(pem.strip() + b"\n")
