"""An encrypted container through its whole life, driven with cml-control as an operator would:
a soft-token container is paired, started with its PIN (its data volume made INTEGRITY_ENCRYPT
and first-formatted), writes data, is stopped and started again and reads it back; a byte of its
data image flipped underneath gives EIO inside and ZOMBIE, and a wipe recovers it; removing it
leaves nothing readable behind. Then the original's legacy AUTHENC layout, and a large volume whose
first format reports progress while the control socket keeps answering, interrupted by kill -9."""

from __future__ import annotations

import os
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from . import ctl
from .common import CheckFailed, sh, state_put

NAME, PLAIN, LEGACY, BIG = "vcrypt", "vplain", "vlegacy", "vbig"
MARK = "cml-secret-7d1e5c"
MIB = 1 << 20


def journey(data: dict[str, Any]) -> str:
    uuid = ctl.create(NAME, ctl.container_conf(NAME))
    data["uuid"] = uuid
    cdir, key_file = ctl.BASE / "containers" / uuid, ctl.BASE / "keys" / f"{uuid}.key"
    data["pair"] = ctl.pair(NAME).text[-300:]
    t0 = time.monotonic()
    data["start1"] = ctl.start(NAME).text[-500:]
    data["state1"], _ = ctl.wait_state(NAME, "RUNNING", 300)
    data["start1_seconds"] = round(time.monotonic() - t0, 1)
    data["cryptfs_mode"] = ctl.field(ctl.status(NAME), "cryptfs_mode")
    data["tables"] = ctl.dm_tables(uuid)
    data["files"] = sorted(p.name for p in cdir.iterdir())
    data["meta_size"] = (cdir / "data.meta.img").stat().st_size
    data["key_file_bytes"] = key_file.stat().st_size
    w = ctl.run_in(NAME, f"echo {MARK} > /data/secret.txt && dd if=/dev/urandom of=/data/blob bs=4096 count=64 "
                         "2>/dev/null && sync && md5sum /data/blob")
    data["write"] = {"rc": w.rc, "out": w.text[-300:]}
    data["blob_md5"] = w.out.split()[0] if w.rc == 0 and w.out.split() else ""
    dev = f"/dev/mapper/{uuid}-data"
    data["mark_on_disk_in_plaintext"] = MARK.encode() in (cdir / "data.img").read_bytes()
    data["mark_through_dm"] = MARK.encode() in Path(dev).read_bytes()
    data["secret_offset"] = ctl.file_offset(dev, "/secret.txt")
    data["stop1"] = ctl.stop(NAME).text[-300:]
    data["state_stopped"], _ = ctl.wait_state(NAME, "STOPPED", 120)
    data["dm_after_stop"] = ctl.dm_devices(uuid)
    data["loops_after_stop"] = ctl.loops_on(cdir)
    data["start2"] = ctl.start(NAME).text[-300:]
    data["state2"], _ = ctl.wait_state(NAME, "RUNNING", 300)
    r = ctl.run_in(NAME, "cat /data/secret.txt && md5sum /data/blob")
    data["reread"] = {"rc": r.rc, "out": r.text[-300:]}
    return uuid


def tamper(uuid: str, data: dict[str, Any]) -> None:
    """A byte of the secret's block flipped in data.img (the ciphertext) while the container is
    stopped; a plain container runs beside it the whole time."""
    cdir = ctl.BASE / "containers" / uuid
    ctl.create(PLAIN, ctl.container_conf(PLAIN, kind="NONE"))
    data["plain_start"] = ctl.start(PLAIN, pin=None).text[-300:]
    data["plain_state"], _ = ctl.wait_state(PLAIN, "RUNNING", 300)
    data["plain_cryptfs_mode"] = ctl.field(ctl.status(PLAIN), "cryptfs_mode")
    ctl.stop(NAME)
    ctl.wait_state(NAME, "STOPPED", 120)
    ctl.flip_byte(cdir / "data.img", data["secret_offset"] + 17)
    ctl.drop_caches()
    cur = ctl.cursor()
    data["tamper_start"] = ctl.start(NAME).text[-300:]
    ctl.wait_state(NAME, ("RUNNING", "ZOMBIE"), 300)
    r = ctl.run_in(NAME, "cat /data/secret.txt")
    data["tamper_read"] = {"rc": r.rc, "out": r.text[-300:]}
    data["tamper_state"], data["tamper_zombie_seconds"] = ctl.wait_state(NAME, "ZOMBIE", 120)
    data["tamper_log"] = [ln for ln in ctl.log_since(cur) if "corrupt" in ln or "ZOMBIE" in ln][-8:]
    data["tamper_kernel"] = [ln for ln in sh("dmesg").out.splitlines() if "integrity" in ln][-4:]
    data["tamper_dm_left"] = ctl.dm_devices(uuid)
    data["plain_state_after"] = ctl.state(PLAIN)
    data["start_zombie"] = ctl.start(NAME).text[-300:]
    data["wipe"] = sh("cml-control", "wipe", NAME, timeout=120).text[-300:]
    data["after_wipe_state"] = ctl.state(NAME)
    data["after_wipe_files"] = sorted(p.name for p in cdir.iterdir())
    data["after_wipe_key"] = (ctl.BASE / "keys" / f"{uuid}.key").exists()
    data["start3"] = ctl.start(NAME).text[-300:]
    data["state3"], _ = ctl.wait_state(NAME, "RUNNING", 300)
    r = ctl.run_in(NAME, f"ls /data; echo {MARK}-2 > /data/secret.txt; sync")
    data["after_wipe_ls"] = {"rc": r.rc, "out": r.text[-300:]}
    state_put("vcrypt", {"uuid": uuid, "mark": f"{MARK}-2"})  # read back after the reboot (sysdata_boot)
    ctl.stop(PLAIN)
    ctl.wait_state(PLAIN, "STOPPED", 120)
    sh("cml-control", "remove", PLAIN, timeout=120)


def removal(data: dict[str, Any]) -> None:
    """Hard links keep the files a removal unlinks: what stays on the disk has no key and no
    headers any more."""
    uuid = ctl.create("vgone", ctl.container_conf("vgone"))
    ctl.pair("vgone")
    ctl.start("vgone")
    ctl.wait_state("vgone", "RUNNING", 300)
    ctl.stop("vgone")
    ctl.wait_state("vgone", "STOPPED", 120)
    cdir, keys = ctl.BASE / "containers" / uuid, ctl.BASE / "keys"
    ev = {n: ctl.BASE / "containers" / f".evidence-{n}" for n in ("data.img", "data.meta.img")}
    for n, p in ev.items():
        os.link(cdir / n, p)
    ev_key = keys / ".evidence.key"
    os.link(keys / f"{uuid}.key", ev_key)
    try:
        data["key_before_zero"] = ev_key.read_bytes() == bytes(ev_key.stat().st_size)
        data["remove"] = sh("cml-control", "remove", "vgone", timeout=120).text[-300:]
        data["removed_dir_left"] = cdir.exists()
        data["removed_key_left"] = (keys / f"{uuid}.key").exists()
        data["removed_token_left"] = (ctl.BASE / "tokens" / f"{uuid}.p12").exists()
        data["left_key_all_zero"] = ev_key.read_bytes() == bytes(ev_key.stat().st_size)
        for n, p in ev.items():
            with p.open("rb") as f:
                data[f"left_{n}_header_zero"] = f.read(MIB) == bytes(MIB)
    finally:
        for p in (*ev.values(), ev_key):
            p.unlink(missing_ok=True)


def legacy(data: dict[str, Any]) -> None:
    """Images without `not-stacked` but with a meta image: the original's stacked AUTHENC."""
    uuid = ctl.create(LEGACY, ctl.container_conf(LEGACY))
    ctl.pair(LEGACY)
    cdir = ctl.BASE / "containers" / uuid
    cdir.mkdir(mode=0o700, exist_ok=True)
    for n, size in (("data.img", 16 * MIB), ("data.meta.img", int(16 * MIB * 0.1))):
        with (cdir / n).open("wb") as f:
            f.truncate(size)
    data["legacy_start"] = ctl.start(LEGACY).text[-300:]
    data["legacy_state"], _ = ctl.wait_state(LEGACY, "RUNNING", 300)
    data["legacy_mode"] = ctl.field(ctl.status(LEGACY), "cryptfs_mode")
    data["legacy_tables"] = ctl.dm_tables(uuid)
    ctl.stop(LEGACY)
    ctl.wait_state(LEGACY, "STOPPED", 120)
    sh("cml-control", "remove", LEGACY, timeout=120)


def big_format(data: dict[str, Any]) -> None:
    """A 48 MiB volume (under TCG long enough to watch): progress in the log while STARTING,
    `list` answering meanwhile, cmld killed in the middle, the format redone at the next start."""
    uuid = ctl.create(BIG, ctl.container_conf(BIG, data_mb=48))
    ctl.pair(BIG)
    cur = ctl.cursor()
    client = subprocess.Popen(["cml-control", "start", BIG, f"--key={ctl.PIN}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    latencies, states, seen = [], [], []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        lst = sh("cml-control", "list", timeout=60)
        latencies.append(round(time.monotonic() - t0, 2))
        states.append(ctl.field(ctl.status(BIG), "state"))
        seen = [ln for ln in ctl.log_since(cur) if "first format of data.img" in ln]
        if lst.rc != 0:
            raise CheckFailed(f"cml-control list failed during the format: {lst.text}", data)
        if any(ln.endswith((" 30 %", " 40 %", " 50 %", " 60 %")) for ln in seen):
            break
        time.sleep(1)
    data["big_progress_before_kill"] = seen
    data["big_list_latencies"] = latencies
    data["big_states_during_format"] = sorted(set(states))
    data["big_kill_seconds"] = ctl.kill_cmld_and_wait()
    client.wait(60)
    cdir = ctl.BASE / "containers" / uuid
    data["big_after_kill"] = {"state": ctl.state(BIG), "dm": ctl.dm_devices(uuid), "loops": ctl.loops_on(cdir),
                              "files": sorted(p.name for p in cdir.iterdir())}
    cur = ctl.cursor()
    data["big_start"] = ctl.start(BIG).text[-300:]
    data["big_state"], _ = ctl.wait_state(BIG, "RUNNING", 400)
    log = ctl.log_since(cur)
    data["big_redo_log"] = [ln for ln in log if "interrupted" in ln or "first format" in ln or "formatted in" in ln]
    data["big_files"] = sorted(p.name for p in cdir.iterdir())
    ctl.stop(BIG)
    ctl.wait_state(BIG, "STOPPED", 120)
    sh("cml-control", "remove", BIG, timeout=120)


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    try:
        ctl.note("journey")
        uuid = journey(data)
        ctl.note("tamper")
        tamper(uuid, data)
        ctl.stop(NAME)
        ctl.wait_state(NAME, "STOPPED", 120)
        ctl.note("removal")
        removal(data)
        ctl.note("legacy")
        legacy(data)
        ctl.note("big_format")
        big_format(data)
        data["dm_devices_at_end"] = ctl.dm_devices()
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    except Exception as e:
        raise CheckFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc()}", data) from e
    finally:
        data["cmld_log_tail"] = sh("journalctl", "-u", "cmld", "-o", "cat", "-n", "60", "--no-pager").text[-6000:]
