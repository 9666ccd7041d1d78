"""Pure-logic checks of the verifier's parsers: every truncation, trailing byte and tampered
field is reported, never accepted (the real evidence is exercised in tests/host)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from cml_rattestation import eventlog, ima, tpmstructs
from cml_rattestation.refpolicy import EventLogPolicy, PolicyError
from tests.host import tpm2dlib
from tpm2d import policy_math

pytestmark = pytest.mark.unit


@pytest.mark.req("CR 3.4 (1)")
def test_event_log_replay_and_every_truncation_is_reported() -> None:
    log = tpm2dlib.event_log(tpm2dlib.BOOT_EVENTS)
    rep = eventlog.replay(log)
    want: dict[int, bytes] = {}
    for pcr, _t, data in tpm2dlib.BOOT_EVENTS:
        want[pcr] = hashlib.sha256(want.get(pcr, bytes(32)) + hashlib.sha256(data).digest()).digest()
    assert rep.pcrs == want and rep.secure_boot() is False
    header_end = len(tpm2dlib.event_log([]))
    for cut in range(header_end + 1, len(log)):
        # A cut inside an event is reported; a cut at an event boundary parses, but no longer
        # replays to the PCRs (the verifier compares the replay with the quoted values).
        try:
            short = eventlog.replay(log[:cut])
        except eventlog.EventLogError as e:
            assert "truncated" in str(e)
        else:
            assert short.pcrs != rep.pcrs
    with pytest.raises(eventlog.EventLogError, match="Spec ID"):
        eventlog.replay(b"\0" * 64)


@pytest.mark.req("CR 3.4 (1)")
def test_ima_list_parse_replay_and_tampering() -> None:
    raw = tpm2dlib.ima_entry("/bin/a", b"a") + tpm2dlib.ima_entry("/bin/b", b"b")
    entries = ima.parse(raw)
    assert [e.filename for e in entries] == ["/bin/a", "/bin/b"] and entries[0].file_alg == "sha256"
    assert entries[1].file_digest == hashlib.sha256(b"b").digest()
    assert ima.check_template_hashes(entries) == []
    value = bytes(32)
    for e in entries:
        value = hashlib.sha256(value + hashlib.sha256(e.data).digest()).digest()
    assert ima.replay(entries, 10) == value
    tampered = raw.replace(b"/bin/b", b"/bin/x")
    assert "template hash does not match" in ima.check_template_hashes(ima.parse(tampered))[0]
    with pytest.raises(ima.ImaError):
        ima.parse(raw[:-3])


def test_tpm_structures_refuse_truncated_and_trailing_bytes() -> None:
    sel = policy_math.pcr_selection_bytes([0, 1, 7])
    quote = (struct.pack(">IH", tpmstructs.TPM_GENERATED_VALUE, tpmstructs.TPM_ST_ATTEST_QUOTE)
             + struct.pack(">H", 2) + b"qn" + struct.pack(">H", 4) + b"nonc" + struct.pack(">QIIB", 1, 2, 3, 1)
             + struct.pack(">Q", 9) + sel + struct.pack(">H", 32) + bytes(32))
    q = tpmstructs.parse_quote(quote)
    assert q.extra_data == b"nonc" and q.selections[0].pcrs == (0, 1, 7) and q.reset_count == 2
    for cut in range(len(quote)):
        with pytest.raises(tpmstructs.StructError):
            tpmstructs.parse_quote(quote[:cut])
    with pytest.raises(tpmstructs.StructError, match="trailing"):
        tpmstructs.parse_quote(quote + b"\0")
    with pytest.raises(tpmstructs.StructError, match="not RSASSA"):
        tpmstructs.parse_signature(struct.pack(">H", 0x0099))


def test_policy_digests_follow_the_spec() -> None:
    # PolicyAuthValue from a zero digest: a value published in the TPM 2.0 spec examples.
    assert policy_math.policy_auth_value().hex() == "8fcd2169ab92694e0c633f1ab772842b8241bbc20288981fc7ac1eddc1fddb0e"
    a = policy_math.policy_authorize(b"\x00\x0b" + bytes(32))
    assert policy_math.policy_or([a, a]) != policy_math.policy_or([a, policy_math.policy_auth_value()])
    with pytest.raises(ValueError):
        policy_math.pcr_selection_bytes([24])


def test_event_log_policy_files(tmp_path: Path) -> None:
    rep = eventlog.replay(tpm2dlib.event_log(tpm2dlib.BOOT_EVENTS))
    f = tmp_path / "p.json"
    f.write_text(json.dumps(EventLogPolicy.from_replay(rep, "test")))
    assert EventLogPolicy.load(f).check(rep) == []
    data = json.loads(f.read_text())
    data["secure_boot"] = True
    data["boot_applications"] = ["00" * 32]
    f.write_text(json.dumps(data))
    problems = EventLogPolicy.load(f).check(rep)
    assert any("SecureBoot is off" in p for p in problems) and any("is not allowed" in p for p in problems)
    for bad in ("{}", "[]", '{"pcrs": {"0": "zz"}}', '{"pcrs": {"30": "' + "00" * 32 + '"}}', '{"nope": 1}', "{"):
        f.write_text(bad)
        with pytest.raises(PolicyError):
            EventLogPolicy.load(f)
