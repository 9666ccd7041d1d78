"""Malformed config files on disk are skipped with a clear log line naming the file; cmld still
starts and serves the good ones. A malformed device.conf falls back to the strict defaults."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.conftest import HOSTED_DEVICE_CONF, DaemonFactory, cli

pytestmark = pytest.mark.host

GOOD_CONTAINER = b'name: "good"\nguest_os: "busybox"\n'
BAD_CONTAINERS: dict[str, bytes] = {
    "syntax": b'name: "x" guest_os:',
    "unknown field": b'name: "x"\nguest_os: "y"\nnot_a_field: 1\n',
    "wrong type": b'name: "x"\nguest_os: "y"\nram_limit: "lots"\n',
    "empty": b"",
    "whitespace": b"  \n\t\n   \n",
    "binary": b'name: "x"\x00\x00\x01\x02guest_os: "y"\n\x00',
    "not utf-8": b'name: "\xff\xfe\xfd"\nguest_os: "y"\n',
    "missing guest_os": b'name: "x"\n',
    "slash in name": b'name: "a/b"\nguest_os: "y"\n',
}
GOOD_GUESTOS = (
    'name: "busybox"\nhardware: "x86"\nversion: 1\ndescription { en: "demo" }\n'
    'mounts { image_file: "root" mount_point: "/" fs_type: "squashfs" mount_type: SHARED }\n'
)
MISNAMED_GUESTOS = GOOD_GUESTOS.replace('"busybox"', '"misnamed"').replace("version: 1", "version: 3")


def lines_with(log: str, *parts: str) -> list[str]:
    return [ln for ln in log.splitlines() if all(p in ln for p in parts)]


def test_bad_configs_are_skipped_good_ones_served(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    base = tmp_path / "base"
    containers = base / "containers"
    guestos = base / "operatingsystems"
    containers.mkdir(parents=True)
    guestos.mkdir()

    good_uuid = str(uuidlib.uuid4())
    (containers / f"{good_uuid}.conf").write_bytes(GOOD_CONTAINER)
    bad_files: list[tuple[str, Path]] = []
    for why, data in BAD_CONTAINERS.items():
        p = containers / f"{uuidlib.uuid4()}.conf"
        p.write_bytes(data)
        bad_files.append((why, p))
    not_uuid = containers / "not-a-uuid.conf"
    not_uuid.write_bytes(GOOD_CONTAINER.replace(b'"good"', b'"other"'))
    bad_files.append(("file name", not_uuid))

    (guestos / "busybox-1.conf").write_text(GOOD_GUESTOS)
    broken = guestos / "broken-1.conf"
    broken.write_text('name: "broken" version: {{{\n')
    misnamed = guestos / "misnamed-2.conf"
    misnamed.write_text(MISNAMED_GUESTOS)

    d = cmld_factory.start(base=base)

    r = cli(d.socket, "--json", "list")
    assert r.rc == 0, r.err
    reply = json.loads(r.out)
    statuses = reply.get("container_status", [])
    assert [(s["uuid"], s["name"]) for s in statuses] == [(good_uuid, "good")], r.out

    r = cli(d.socket, "--json", "list_guestos")
    assert r.rc == 0, r.err
    names = [g["name"] for g in json.loads(r.out).get("guestos_configs", [])]
    assert names == ["busybox"], r.out

    log = d.log_text()
    for why, p in bad_files:
        hits = lines_with(log, "skipping container config", str(p))
        assert len(hits) == 1, f"{why}: expected one skip line for {p.name}, got {hits}\n{log}"
    for p in (broken, misnamed):
        hits = lines_with(log, "skipping GuestOS config", str(p))
        assert len(hits) == 1, f"expected one skip line for {p.name}, got {hits}\n{log}"
    # The reasons are specific, not a generic "invalid".
    by_file = {why: lines_with(log, "skipping container config", str(p))[0] for why, p in bad_files}
    assert "not_a_field" in by_file["unknown field"]
    assert "not UTF-8" in by_file["not utf-8"]
    assert "NUL" in by_file["binary"]
    assert "guest_os" in by_file["missing guest_os"]
    assert "forbidden characters" in by_file["slash in name"]
    assert "not <uuid>.conf" in by_file["file name"]
    assert "misnamed-3.conf" in lines_with(log, "skipping GuestOS config", str(misnamed))[0]
    assert "loaded container " + good_uuid in log
    assert "loaded GuestOS busybox version 1" in log
    assert d.alive()


def test_malformed_device_conf_means_strict_defaults(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "device.conf").write_text(HOSTED_DEVICE_CONF + "hostedmode: maybe {\n")
    d = cmld_factory.start(base=base, device_conf=None)

    r = cli(d.socket, "list")  # GET_CONTAINER_STATUS still works
    assert r.rc == 0, r.err
    assert r.out.strip() == "code: CONTAINER_STATUS"

    conf = tmp_path / "c.conf"
    conf.write_text('name: "c"\nguest_os: "busybox"\n')
    r = cli(d.socket, "create", str(conf))
    # signed_configs defaults to true and nothing can verify a signature here: refused, which the
    # original signals with CONTAINER_CONFIG carrying no configs.
    assert r.rc == 1, (r.out, r.err)
    assert r.out.startswith("code: CONTAINER_CONFIG\n") and "uuids" not in r.out, r.out
    assert "container not created" in r.err
    log = d.log_text()
    assert len(lines_with(log, "ignoring device config", str(base / "device.conf"))) == 1, log
    assert "requires signed configs" in log
    assert cli(d.socket, "list").out.strip() == "code: CONTAINER_STATUS"
    assert not list((base / "containers").glob("*.conf"))
