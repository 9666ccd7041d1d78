"""Every in-process fuzz target: its name (= its corpus directory), where its function lives, and
how many inputs the bounded CI run gives it (about five seconds each on this machine)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
# What atheris instruments for coverage feedback: the product's packages.
PRODUCT = ["cml_common", "cmld", "scd", "tpm2d", "cml_control", "cml_rattestation"]


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    function: str
    ci_runs: int
    what: str

    @property
    def corpus(self) -> Path:
        return CORPUS / self.name


TARGETS = {t.name: t for t in (
    Target("frame_stream", "tests.fuzz.targets_wire", "frame_stream", 6000,
           "stream framing, blocking and asyncio readers compared"),
    Target("frame_seqpacket", "tests.fuzz.targets_wire", "frame_seqpacket", 4000,
           "SOCK_SEQPACKET framing on a real socket pair, blocking and asyncio compared"),
    Target("msg_control", "tests.fuzz.targets_wire", "msg_control", 8000,
           "ControllerToDaemon: parse, malformed reply, access check"),
    Target("msg_service", "tests.fuzz.targets_wire", "msg_service", 8000, "ServiceToCmldMessage"),
    Target("msg_scd", "tests.fuzz.targets_wire", "msg_scd", 8000, "DaemonToToken, token key"),
    Target("msg_tpm2d", "tests.fuzz.targets_wire", "msg_tpm2d", 6000,
           "ControllerToTpm, ML_APPEND check, seal authority, signed PCR policy"),
    Target("msg_remote", "tests.fuzz.targets_wire", "msg_remote", 8000, "RemoteToTpm2d, PCR selection"),
    Target("cli_reply_codec", "tests.fuzz.targets_wire", "cli_reply_codec", 6000,
           "the CLI's reply codec against the protobuf runtime"),
    Target("cfg_device", "tests.fuzz.targets_config", "cfg_device", 3000, "device.conf, device_id.conf"),
    Target("cfg_container", "tests.fuzz.targets_config", "cfg_container", 3000, "container configs"),
    Target("cfg_guestos", "tests.fuzz.targets_config", "cfg_guestos", 3000, "GuestOS configs"),
    Target("cfg_rattestation", "tests.fuzz.targets_config", "cfg_rattestation", 3000, "the verifier's config"),
    Target("eventlog_policy", "tests.fuzz.targets_config", "eventlog_policy", 4000,
           "the verifier's event-log reference policy (JSON)"),
    Target("tpm_structs", "tests.fuzz.targets_attest", "tpm_structs", 8000,
           "TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC"),
    Target("event_log", "tests.fuzz.targets_attest", "event_log", 8000, "UEFI TCG2 event log replay"),
    Target("ima_list", "tests.fuzz.targets_attest", "ima_list", 8000, "IMA binary measurement list"),
    Target("attestation_response", "tests.fuzz.targets_attest", "attestation_response", 1500,
           "a whole Tpm2dToRemote through every verifier check"),
    Target("attestation_fields", "tests.fuzz.targets_attest", "attestation_fields", 1500,
           "a captured response with one field fuzzed, through every check"),
    Target("scd_verify", "tests.fuzz.targets_scd", "scd_verify", 2000,
           "signature verification: data, signature, certificate chain, registered CA"),
    Target("scd_pkcs12", "tests.fuzz.targets_scd", "scd_pkcs12", 2000, "a soft token's PKCS#12 file"),
    Target("scd_device_cert", "tests.fuzz.targets_scd", "scd_device_cert", 2000, "PUSH_DEVICE_CERT's PEM"),
)}


def scratch(prefix: str) -> Path:
    """A directory for the files a target writes: under CML_FUZZ_SCRATCH, which run_atheris
    creates and removes (libFuzzer ends the process without Python's atexit), else a temporary
    directory removed at exit (pytest importing a target)."""
    base = os.environ.get("CML_FUZZ_SCRATCH")
    if base:
        d = Path(base) / prefix
        d.mkdir(parents=True, exist_ok=True)
        return d
    d = Path(tempfile.mkdtemp(prefix=f"cml-fuzz-{prefix}-"))
    atexit.register(shutil.rmtree, d, True)
    return d
