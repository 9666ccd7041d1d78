"""Kernel audit messages as records (cmld/audit/kparse.py, kernel.py): real record texts as the
kernel and libaudit write them, and hostile datagrams (truncated headers, lengths that lie,
non-UTF-8, floods of fields). No socket: registering is global to the machine (VM tier)."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from cml_common.messages.audit_pb2 import AuditRecord
from cmld.audit import kparse
from cmld.audit.kernel import STATUS, set_status, store

pytestmark = pytest.mark.unit
UUID = "3a2f4c1e-9b7d-4e2a-8c55-0d6f1e2a3b4c"

# Real texts (Debian 12 kernel 6.1, auditd's documentation, dm-audit.c's formats).
CONFIG_CHANGE = b"audit(1796614015.120:45): op=set audit_enabled=1 old=0 auid=4294967295 ses=4294967295 res=1"
CONFIG_PID = b"audit(1796614015.121:46): op=set audit_pid=412 old=0 auid=4294967295 ses=4294967295 res=1"
SYSCALL = (b"audit(1796614016.004:52): arch=c000003e syscall=59 success=yes exit=0 a0=55d0 a1=55d1 a2=55d2 a3=0 "
           b"items=2 ppid=411 pid=415 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 "
           b'ses=1 comm="cat" exe="/usr/bin/cat" key="exec"')
AVC = (b'audit(1796614017.335:60): avc:  denied  { read } for  pid=1210 comm="cat" name="shadow" dev="vda2" '
       b"ino=3411 scontext=system_u:system_r:container_t:s0 tcontext=system_u:object_r:shadow_t:s0 "
       b"tclass=file permissive=0")
DM_CTRL = (b"audit(1796614020.501:71): module=integrity op=ctr ppid=1 pid=520 auid=4294967295 uid=0 gid=0 "
           b"euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=\"integritysetup\" "
           b'exe="/usr/sbin/integritysetup" subj=unconfined dev=254:0 error_msg=\'success\' res=1')
DM_EVENT = b"audit(1796614021.009:74): module=integrity op=integrity-checksum dev=254:0 sector=77104 res=0"
USER = (b"audit(1796614022.100:80): pid=600 uid=0 auid=4294967295 ses=4294967295 subj=unconfined "
        b"msg='cml-vmcheck kernel audit probe'")
USER_LOGIN = (b"audit(1796614023.000:90): pid=700 uid=0 auid=0 ses=3 msg='op=login id=0 exe=\"/usr/sbin/sshd\" "
              b"hostname=10.0.2.2 addr=10.0.2.2 terminal=sshd res=failed'")


def nl(mtype: int, text: bytes, seq: int = 0) -> bytes:
    return kparse.NLMSG_HDR.pack(16 + len(text), mtype, 0, seq, 0) + text + b"\0" * (-len(text) % 4)


class Recorder:
    def __init__(self, known: set[str] | None = None) -> None:
        self.records: list[tuple[str, str, str, str | None, dict[str, str]]] = []
        self.known = (known or set()).__contains__
        self.stored: list[tuple[AuditRecord, str | None]] = []

    def store(self, record: AuditRecord, uuid: str | None) -> int:
        self.stored.append((record, uuid))
        return len(self.stored)

    def log_event(self, category: str, evclass: str, event: str, subject: str | None,
                  meta: dict[str, str]) -> None:
        self.records.append((category, evclass, event, subject, meta))


def test_config_change_is_a_kaudit_record_with_its_fields() -> None:
    r = kparse.to_record(1305, CONFIG_PID)
    assert r is not None and (r.category, r.evclass, r.event) == ("SSA", "KAUDIT", "CONFIG_CHANGE")
    assert r.meta["audit_id"] == "1796614015.121:46" and r.meta["audit_pid"] == "412"
    assert r.meta["op"] == "set" and r.meta["audit_type"] == "1305" and r.meta["msg"] == CONFIG_PID.decode()


def test_syscall_and_avc_records() -> None:
    s = kparse.to_record(1300, SYSCALL)
    assert s is not None and s.event == "SYSCALL" and s.category == "SSA"  # success=yes
    assert s.meta["comm"] == "cat" and s.meta["exe"] == "/usr/bin/cat" and s.meta["key"] == "exec"
    a = kparse.to_record(1400, AVC)
    assert a is not None and a.event == "AVC" and a.category == "FSA"
    assert a.meta["name"] == "shadow" and a.meta["tclass"] == "file" and a.meta["permissive"] == "0"


def test_dm_event_is_the_originals_dm_audit_record() -> None:
    r = kparse.to_record(kparse.AUDIT_DM_EVENT, DM_EVENT)
    assert r is not None and (r.category, r.evclass, r.event) == ("FSA", "CONTAINER_MGMT", "dm-audit")
    assert r.meta["op"] == "integrity-checksum" and r.meta["sector"] == "77104" and r.meta["label"] == "254:0"
    assert r.meta["module"] == "integrity" and r.dm_name_of == "254:0"
    c = kparse.to_record(kparse.AUDIT_DM_CTRL, DM_CTRL)
    assert c is not None and c.event == "DM_CTRL" and c.category == "SSA" and c.meta["error_msg"] == "success"


def test_user_messages_keep_msg_whole_and_take_res_from_inside() -> None:
    u = kparse.to_record(1005, USER)
    assert u is not None and u.event == "USER" and u.pid == 600
    assert u.meta["msg"].endswith("msg='cml-vmcheck kernel audit probe'")
    login = kparse.to_record(1112, USER_LOGIN)
    assert login is not None and login.event == "USER_LOGIN" and login.category == "FSA"  # res=failed inside msg
    assert "hostname" not in login.meta  # inside msg='...', not a top-level field


def test_store_names_the_container_by_dm_name_or_sender_cgroup(tmp_path: Path) -> None:
    dev = tmp_path / "sys" / "254:0" / "dm"
    dev.mkdir(parents=True)
    (dev / "name").write_text(f"{UUID}-data\n")
    proc = tmp_path / "proc" / "600"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::/system.slice/cmld.service/{UUID}\n")
    rec = Recorder({UUID})
    assert store(rec, kparse.AUDIT_DM_EVENT, DM_EVENT, sys_block=tmp_path / "sys", proc=tmp_path / "proc")
    assert store(rec, 1005, USER, sys_block=tmp_path / "sys", proc=tmp_path / "proc")
    assert rec.records[0][3] == UUID and rec.records[0][4]["label"] == f"{UUID}-data"
    assert rec.records[1][3] == UUID
    other = Recorder()
    store(other, kparse.AUDIT_DM_EVENT, DM_EVENT, sys_block=tmp_path / "sys", proc=tmp_path / "proc")
    assert other.records[0][3] is None  # not a container's device: c0's queue
    assert not store(other, 1000, b"\0" * 40)  # AUDIT_GET reply: no record


def kernel_datagram(mtype: int, text: bytes) -> bytes:
    """As the kernel sends a record: nlmsg_len is the text's length alone (seen in the VM tier)."""
    return kparse.NLMSG_HDR.pack(len(text), mtype, 0, 0, 0) + text


def test_frames_of_a_datagram_and_hostile_ones() -> None:
    got, problem = kparse.frames(kernel_datagram(1339, DM_EVENT))
    assert problem == "" and len(got) == 1 and kparse.text_of(got[0].payload) == DM_EVENT.decode()
    got, problem = kparse.frames(nl(1305, CONFIG_PID))  # a true nlmsg_len works as well
    assert problem == "" and kparse.text_of(got[0].payload) == CONFIG_PID.decode()
    ack = kparse.NLMSG_HDR.pack(36, kparse.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", 0) + b"\0" * 16
    got, problem = kparse.frames(ack + ack)
    assert problem == "" and [f.type for f in got] == [2, 2]
    for bad in (ack[:10], ack + b"\x01\x02",
                struct.pack("=IHHII", 0xFFFFFFFF, 1305, 0, 0, 0) + b"x" * 32,
                struct.pack("=IHHII", 0xFFFFFFFF, 2, 0, 0, 0) + b"x" * 32,
                struct.pack("=IHHII", 4, 2, 0, 0, 0) + b"x" * 32,
                struct.pack("=IHHII", 100000, 1305, 0, 0, 0) + b"x" * 100000,
                struct.pack("=IHHII", 100, 1305, 0, 0, 0) + b"x" * 100000):
        got, problem = kparse.frames(bad)
        assert problem, bad[:20]
        assert all(isinstance(f.payload, bytes) for f in got)
    assert kparse.frames(b"") == ([], "")
    assert kparse.frames(b"\x01" * 15)[1]


def test_error_frames() -> None:
    ack = kparse.Frame(kparse.NLMSG_ERROR, 1, struct.pack("=i", 0) + b"\0" * 16)
    refused = kparse.Frame(kparse.NLMSG_ERROR, 1, struct.pack("=i", -1) + b"\0" * 16)
    assert kparse.error_of(ack) == 0 and kparse.error_of(refused) == 1
    assert kparse.error_of(kparse.Frame(kparse.NLMSG_ERROR, 1, b"\0")) == -1


def test_non_utf8_nul_and_garbage_texts_never_raise() -> None:
    r = kparse.to_record(1005, b"audit(1.2:3): pid=1 uid=0 msg='\xff\xfe caf\xc3\xa9'\0trailing")
    assert r is not None and "\\xff\\xfe" in r.meta["msg"] and "café" in r.meta["msg"]
    assert "trailing" not in r.meta["msg"]
    rng = random.Random(17)
    for _ in range(2000):
        blob = os.urandom(rng.randrange(0, 300)) if rng.random() < 0.5 else bytes(
            rng.choice(b"a=' \"x(1.:)0") for _ in range(rng.randrange(0, 200)))
        for t in (1005, 1300, 1339, 1112, 2000):
            rec = kparse.to_record(t, blob)
            assert rec is not None and len(rec.meta) <= kparse.MAX_FIELDS + 8
        kparse.frames(blob)


def test_many_fields_and_huge_text_are_bounded() -> None:
    text = b"audit(1.2:3): " + b" ".join(b"k%d=v" % i for i in range(5000))
    r = kparse.to_record(1300, text)
    assert r is not None and len(r.meta) <= kparse.MAX_FIELDS + 8 and len(r.meta["msg"]) <= kparse.MAX_MESSAGE
    huge_pid = kparse.to_record(1300, b"audit(1.2:3): pid=99999999999999999999 res=1")
    assert huge_pid is not None and huge_pid.pid == 0


def test_set_status_request_layout() -> None:
    msg = set_status(0x5, 1, 412, 7)
    length, mtype, flags, seq, _ = kparse.NLMSG_HDR.unpack_from(msg)
    assert length == len(msg) == 16 + STATUS.size and mtype == 1001 and flags == 0x5 and seq == 7
    assert STATUS.unpack_from(msg, 16)[:4] == (0x5, 1, 0, 412)


def test_only_audit_record_types_become_records() -> None:
    for t in (0, 2, 3, 1000, 1001, 1013, 1200, 1999, 2001, 65535):
        assert kparse.to_record(t, CONFIG_CHANGE) is None
    assert kparse.type_name(1899) == "TYPE_1899"


def test_trusted_app_carries_an_original_components_record(tmp_path: Path) -> None:
    """The original's scd/tpm2d send an AuditRecord as protobuf text in AUDIT_TRUSTED_APP."""
    text = (b"audit(1796614030.000:95): pid=300 uid=0 auid=4294967295 ses=4294967295 subj=unconfined "
            b"msg='timestamp: 1796614030 type: \"SSA.SCD.TOKEN_MGMT.unlock-successful\" "
            b"meta { key: \"name\" value: \"c1\" }'")
    rec = Recorder()
    assert store(rec, kparse.AUDIT_TRUSTED_APP, text, proc=tmp_path)
    assert not rec.records and len(rec.stored) == 1
    r, subject = rec.stored[0]
    assert r.type == "SSA.SCD.TOKEN_MGMT.unlock-successful" and r.meta[0].value == "c1" and subject is None
    for bad in (b"audit(1.2:3): pid=1 uid=0 msg='not a record {'", b"audit(1.2:3): pid=1 uid=0 msg='",
                b"audit(1.2:3): pid=1 uid=0 msg='type: \"x\"'"):  # no timestamp: not initialised
        rec = Recorder()
        store(rec, kparse.AUDIT_TRUSTED_APP, bad, proc=tmp_path)
        assert not rec.stored and rec.records[0][2] == "TRUSTED_APP"


def test_kernel_audit_is_off_unless_device_conf_asks() -> None:
    """Registering is global to the machine: off by default (every host test, hosted mode)."""
    from google.protobuf import text_format

    from cml_common.messages.device_pb2 import DeviceConfig
    from cmld.audit.config import start_kernel_audit

    default = DeviceConfig()
    assert not default.audit_kernel
    rec = Recorder()
    assert start_kernel_audit(default, rec) is None  # type: ignore[arg-type]  # no socket touched
    guest = Path(__file__).resolve().parents[2] / "qemu/guest/image/var/lib/cml/device.conf"
    conf = text_format.Parse(guest.read_text(), DeviceConfig())
    assert conf.audit_kernel and conf.audit_size > 0  # the VM guest's cmld is the audit daemon
