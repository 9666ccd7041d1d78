"""The busybox GuestOS container under cgroup v2, driven with cml-control as an operator would:
create, start, its cgroup below cmld's delegated group with memory.max set, a memory hog run
inside it that the kernel OOM-kills, then stop and the group gone."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh

NAME = "vmc1"
RAM_MB = 64
CONF = f'name: "{NAME}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\nram_limit: {RAM_MB}\n'
HOG = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}"


def field(out: str, name: str) -> str:
    m = re.search(rf"^\s*{name}:\s*\"?([^\"\n]*)\"?\s*$", out, re.MULTILINE)
    return m.group(1) if m else ""


def wait_state(want: str, timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        last = field(sh("cml-control", "state", NAME, timeout=60).out, "state")
        if last == want:
            return last, time.monotonic() - t0
        time.sleep(1)
    return last, time.monotonic() - t0


def keyed(p: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in p.read_text().splitlines())} if p.exists() else {}


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    conf = Path("/run/vmc1.conf")
    conf.write_text(CONF)
    try:
        data["create"] = must("cml-control", "create", str(conf), timeout=60).strip()[-300:]
        uuid = field(must("cml-control", "state", NAME, timeout=60), "uuid")
        data["uuid"] = uuid
        start = sh("cml-control", "start", NAME, timeout=120)
        data["start"] = {"rc": start.rc, "output": start.text[-1000:]}
        data["state_after_start"], data["start_seconds"] = wait_state("RUNNING", 120)
        cmld_pid = sh("systemctl", "show", "-p", "MainPID", "--value", "cmld.service").out.strip()
        own = next(ln for ln in Path(f"/proc/{cmld_pid}/cgroup").read_text().splitlines() if ln.startswith("0::"))
        data["cmld_cgroup"] = own[3:]
        groups = [str(p) for p in Path("/sys/fs/cgroup").rglob(uuid)] if uuid else []
        data["container_groups"] = groups
        if len(groups) != 1:
            raise CheckFailed(f"expected one cgroup named {uuid}, found {groups}; "
                              f"cmld log: {sh('journalctl', '-b', '-u', 'cmld', '-o', 'cat', '-n', '30').text}", data)
        g = Path(groups[0])
        data["memory_max"] = (g / "memory.max").read_text().strip()
        data["controllers"] = (g / "cgroup.controllers").read_text().split()
        procs = (g / "cgroup.procs").read_text().split()
        data["procs"] = procs
        data["init_cgroup"] = (Path(f"/proc/{procs[0]}/cgroup").read_text().strip() if procs else "")
        data["oom_kill_before"] = keyed(g / "memory.events").get("oom_kill", 0)
        hog = sh("cml-control", "run", NAME, "nopty", "sh", "-c", HOG, timeout=180)
        data["hog"] = {"rc": hog.rc, "output": hog.text[-500:]}
        data["memory_events"] = keyed(g / "memory.events")
        data["memory_peak"] = (g / "memory.peak").read_text().strip() if (g / "memory.peak").exists() else None
        data["state_after_hog"] = field(sh("cml-control", "state", NAME, timeout=60).out, "state")
        stop = sh("cml-control", "stop", NAME, timeout=120)
        data["stop"] = {"rc": stop.rc, "output": stop.text[-500:]}
        data["state_after_stop"], _ = wait_state("STOPPED", 90)
        data["group_left_after_stop"] = g.exists()
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    finally:
        full = sh("journalctl", "-b", "-u", "cmld", "-o", "cat", "-n", "2000").text
        data["cmld_log_tail"] = "\n".join(full.splitlines()[-25:])
        data["container_log"] = [ln for ln in full.splitlines() if f"container {NAME}" in ln]
        conf.unlink(missing_ok=True)
