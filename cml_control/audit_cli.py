"""`cml-control audit`: read and verify cmld's audit journal (extension).

    cml-control audit [<container>] [--json] [--follow]
    cml-control audit verify [--dir DIR] [--cert PEM] [--anchor FILE]... [--sealed] [--json]

Reading goes through cmld (AUDIT_READ, privileged sockets only) and prints one line per entry,
oldest first; `--follow` keeps printing new ones. `verify` works on the files alone, without
cmld, so an evaluator can check a copy taken off the device; it exits 0 only when every check
passes. Imported only for these commands, so the other commands start as fast as before.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cml_common.auditlog.entry import CHECKPOINT, Entry, EntryError, parse_line
from cml_common.messages.audit_pb2 import AuditRecord
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from .client import ControlClient, ControlError
from .failures import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

C = ControllerToDaemon
D = DaemonToController
DEFAULT_DIR = Path("/var/lib/cml/audit")
DEFAULT_CERT = Path("/var/lib/cml/tokens/device.cert")
FOLLOW_WAIT = 10
USAGE = ("usage: cml-control audit [<container>] [--json] [--follow]\n"
         "       cml-control audit verify [--dir DIR] [--cert PEM] [--anchor FILE]... [--sealed] [--json]\n")


class Usage(Exception):
    pass


def _when(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _signer(e: Entry) -> str:
    from cml_common.auditlog.seal import load_cert

    try:
        return load_cert(e.cert).subject.rfc4514_string()
    except ValueError:
        return "(unreadable certificate)"


def describe(e: Entry, as_json: bool) -> str:
    if e.kind == CHECKPOINT:
        if as_json:
            return json.dumps({"seq": e.seq, "time": e.time, "kind": e.kind, "covers": e.covers,
                               "signer": _signer(e), "hash": e.hash})
        return f"#{e.seq} {_when(e.time)} checkpoint: seq 1-{e.covers} signed by {_signer(e)}"
    r = AuditRecord()
    try:
        r.ParseFromString(e.record)
    except Exception:  # a damaged record is shown as such, the rest goes on
        r = AuditRecord(type="(undecodable record)")
    meta = {m.key: m.value for m in r.meta}
    if as_json:
        return json.dumps({"seq": e.seq, "time": r.timestamp, "kind": e.kind, "stored_for": e.subject,
                           "type": r.type, "subject_id": r.subject_id, "meta": meta, "hash": e.hash})
    fields = " ".join(f"{k}={json.dumps(v) if (' ' in v or not v) else v}" for k, v in meta.items())
    subject = f" subject={r.subject_id}" if r.subject_id else ""
    return f"#{e.seq} {_when(r.timestamp)} {r.type}{subject} {fields}".rstrip()


def resolve(client: ControlClient, name: str) -> str:
    listing = client.request(C(command=C.LIST_CONTAINERS))
    uuids = list(listing.container_uuids)
    if name in uuids:
        return name
    status = client.request(C(command=C.GET_CONTAINER_STATUS, container_uuids=uuids))
    for s in status.container_status:
        if s.name == name:
            return s.uuid
    raise Usage(f"no container {name!r}")


def read(socket: str, container: str | None, as_json: bool, follow: bool, timeout: float | None) -> int:
    try:
        client = ControlClient(socket, timeout=None if follow else timeout)
    except ControlError as e:
        sys.stderr.write(f"cml-control: {e}\n")
        return EXIT_UNREACHABLE
    with client:
        try:
            subject = resolve(client, container) if container else None
            after, drained = 0, False
            while True:
                req = C(command=C.AUDIT_READ, audit_after_seq=after, audit_wait=FOLLOW_WAIT if drained else 0)
                if subject:
                    req.container_uuids.append(subject)
                reply = client.request(req)
                if reply.code != D.AUDIT_ENTRIES:
                    why = reply.error_message or D.Response.Name(reply.response)
                    sys.stderr.write(f"cml-control: cmld refused: {why}\n")
                    return EXIT_FAILED
                for line in reply.audit_entries:
                    try:
                        entry = parse_line(line)
                    except EntryError as bad:
                        sys.stderr.write(f"cml-control: unreadable journal entry: {bad}\n")
                        continue
                    sys.stdout.write(describe(entry, as_json) + "\n")
                    after = max(after, entry.seq)
                sys.stdout.flush()
                if not reply.audit_entries:
                    if not follow:
                        return EXIT_OK
                    drained = True
        except ControlError as err:
            sys.stderr.write(f"cml-control: {err}\n")
            return EXIT_UNREACHABLE
        except Usage as err:
            sys.stderr.write(f"cml-control: {err}\n")
            return EXIT_FAILED


def verify(args: list[str], as_json: bool) -> int:
    from cml_common.auditlog.seal import load_cert
    from cml_common.auditlog.verify import read_anchor, report_json, verify_dir

    directory, cert_path, anchors, sealed = DEFAULT_DIR, DEFAULT_CERT, [], False
    it = iter(args)
    for a in it:
        if a in ("--dir", "--cert", "--anchor"):
            value = next(it, None)
            if value is None:
                raise Usage(f"{a} needs a value")
            if a == "--dir":
                directory = Path(value)
            elif a == "--cert":
                cert_path = Path(value)
            else:
                try:
                    anchors.append(read_anchor(Path(value).read_text()))
                except (OSError, ValueError, UnicodeDecodeError) as e:
                    raise Usage(f"--anchor {value}: {e}") from None
        elif a == "--sealed":
            sealed = True
        elif a == "--json":
            as_json = True
        else:
            raise Usage(f"unknown argument {a!r}")
    try:
        trusted = load_cert(cert_path.read_bytes())
    except (OSError, ValueError) as e:
        raise Usage(f"trusted device certificate {cert_path}: {e}") from None
    report = verify_dir(directory, trusted=trusted, anchors=anchors, require_sealed=sealed)
    if as_json:
        sys.stdout.write(report_json(report) + "\n")
    else:
        for p in report.problems:
            sys.stdout.write(f"PROBLEM {p}\n")
        sys.stdout.write(report.summary() + "\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def run(socket: str, args: list[str], as_json: bool, timeout: float | None) -> int:
    try:
        if args[:1] == ["verify"]:
            return verify(args[1:], as_json)
        container, follow = None, False
        for a in args:
            if a == "--json":
                as_json = True
            elif a == "--follow":
                follow = True
            elif a in ("-h", "--help"):
                sys.stdout.write(USAGE)
                return EXIT_OK
            elif a.startswith("-") or container is not None:
                raise Usage(f"unexpected argument {a!r}")
            else:
                container = a
        return read(socket, container, as_json, follow, timeout)
    except Usage as e:
        sys.stderr.write(f"cml-control: {e}\n{USAGE}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
