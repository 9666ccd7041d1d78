"""cmld killed (SIGKILL) at several points of a start and a stop of an encrypted container, and
while it runs: systemd restarts cmld, which must remove every dm and loop device the dead one left,
leave the container STOPPED, and start it again with its data intact."""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

from . import ctl
from .common import CheckFailed, sh, state_get

NAME = "vcrypt"
START_DELAYS = (0.5, 1.5, 3.0, 6.0)  # s after the start request reached cmld


def after_restart(uuid: str, what: str, seconds: float) -> dict[str, Any]:
    cdir = ctl.BASE / "containers" / uuid
    return {"kill": what, "restart_seconds": seconds, "state": ctl.state(NAME), "dm": ctl.dm_devices(uuid),
            "loops": ctl.loops_on(cdir), "formatting_marker": any(cdir.glob("*.formatting"))}


def kill_during_start(uuid: str, delay: float) -> dict[str, Any]:
    reply: dict[str, str] = {}

    def starter() -> None:
        try:
            reply["r"] = ctl.request("CONTAINER_START", uuid, ctl.PIN, timeout=120)
        except Exception as e:
            reply["r"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=starter)
    t.start()
    time.sleep(delay)
    seen = ctl.dm_devices(uuid)
    secs = ctl.kill_cmld_and_wait()
    t.join(120)
    out = after_restart(uuid, f"start +{delay} s", secs)
    out.update({"dm_at_kill": seen, "reply": reply.get("r", "")})
    return out


def check() -> dict[str, Any]:
    data: dict[str, Any] = {"rounds": []}
    vc = state_get("vcrypt")
    if not vc:
        raise CheckFailed("the crypt check left no container to crash (it failed earlier)")
    uuid, mark = vc["uuid"], vc["mark"]
    cur = ctl.cursor()
    try:
        for delay in START_DELAYS:
            ctl.note(f"kill during start +{delay} s")
            data["rounds"].append(kill_during_start(uuid, delay))
        # while it runs
        ctl.start(NAME)
        ctl.wait_state(NAME, "RUNNING", 300)
        data["rounds"].append(after_restart(uuid, "running", ctl.kill_cmld_and_wait()))
        # during a stop
        ctl.start(NAME)
        ctl.wait_state(NAME, "RUNNING", 300)
        data["stop_reply"] = ctl.request("CONTAINER_STOP", uuid, timeout=60)
        data["rounds"].append(after_restart(uuid, "stop", ctl.kill_cmld_and_wait()))
        data["recovery_log"] = [ln for ln in ctl.log_since(cur) if "recovery:" in ln or "left by a previous" in ln]
        # and the data survived all of it
        data["final_start"] = ctl.start(NAME).text[-300:]
        data["final_state"], _ = ctl.wait_state(NAME, "RUNNING", 300)
        r = ctl.run_in(NAME, "cat /data/secret.txt")
        data["final_read"] = {"rc": r.rc, "out": r.text[-200:], "mark": mark}
        ctl.stop(NAME)
        data["final_stopped"], _ = ctl.wait_state(NAME, "STOPPED", 120)
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    except Exception as e:
        raise CheckFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc()}", data) from e
    finally:
        sh("systemctl", "reset-failed", "cmld")
