"""Bounded fuzzing of the real daemons over their sockets (see daemons.py for what is checked
after every input and every batch): cmld's control socket without and with a running container
(and, once provisioned, the refusals), the running container's service socket, scd over
SOCK_SEQPACKET, tpm2d's control socket and TCP 9505 on a swtpm."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.conftest import is_root
from tests.fuzz import daemon_targets as dt
from tests.fuzz.daemons import env_int

pytestmark = [pytest.mark.fuzz, pytest.mark.host,
              pytest.mark.skipif(not is_root(), reason="needs root (namespaces, containers)"),
              pytest.mark.timeout(600)]
N = env_int("CML_FUZZ_DAEMON_INPUTS", 400)


def test_cmld_control_without_containers(tmp_path: Path) -> None:
    rng = random.Random(1)
    with dt.cmld_world(tmp_path, with_container=False) as w:
        stats = dt.CmldControl(rng, w).run(N, batch=100)
        assert len(stats.request_codes) >= 30, stats.line()  # every command is reached
        prov = dt.CmldControl(rng, w, provisioned_phase=True)
        prov.one(dt.C(command=dt.C.SET_PROVISIONED).SerializeToString())
        prov.run(N // 4, batch=50)


def test_cmld_control_and_service_with_a_running_container(tmp_path: Path) -> None:
    rng = random.Random(2)
    with dt.cmld_world(tmp_path, with_container=True) as w:
        dt.CmldControl(rng, w).run(N, batch=100)
        dt.CmldService(rng, w).run(N, batch=100)


def test_scd(tmp_path: Path) -> None:
    with dt.scd_world(tmp_path) as (d, err):
        dt.Scd(random.Random(3), d, err).run(N, batch=100)


def test_tpm2d_control_and_attestation_server(tmp_path: Path) -> None:
    rng = random.Random(4)
    with dt.tpm2d_world(tmp_path) as w:
        # the attestation server first: a fuzzed CLEAR on the control socket removes the key
        dt.Tpm2dRemote(rng, w).run(max(N // 8, 30), batch=25)
        dt.Tpm2dControl(rng, w).run(N, batch=100)
