"""Acceptance: the original's own VM integration flow (GyroidOS CI), replayed on this host against
real scd + cmld with `cml-control`, on a GuestOS shaped like GyroidOS's core GuestOS.

The steps, the configs and the checks follow the original's CI scripts (`VM-container-tests.sh`,
`VM-container-commands.sh`, `testdata.sh` of gyroidos_ci_common): every check is a substring of
the client's stdout+stderr, as there. The VM reboots between its phases become a `reboot` command
followed by a restart of scd and cmld on the same base directory, so everything must persist.
What this host cannot replay is left out and named: the c0 config update and the FIFOs written
from c0 (no c0 in hosted mode), and the kernel update with its A/B reboot (VM tier of the update
issue). On top of the original's checks, exit statuses and the state seen between steps are checked.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import load_text_file, to_text

from ..conftest import BIN, Daemon, DaemonFactory, is_root
from .containers import demo_guestos
from .scdlib import SIGNED_DEVICE_CONF, launch_scd, make_pki, prepare_base, sign

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]

PW = "pw4tests"  # the original's TESTPW is a CI secret; any PIN does
GUESTOS = "gyroidos-coreos"
CYCLES = 100
M = GuestOSMount

# The original's nullos update test GuestOSes: sparse all-zero images of 1, 2 and 3 GiB, whose
# SHA-1 and SHA-256 the original's testdata.sh carries (here recomputed nowhere: they are facts).
NULLOS = {
    1: ("2a492f15396a6768bcbca016993f4b4c8b0b5307", "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"),
    2: ("91d50642dd930e9542c39d36f0516d45f4e1af0d", "a7c744c13cc101ed66c29f672f92455547889cc586ce6d44fe76ae824958ea51"),
    3: ("6e7f6dca8def40df0b21f58e11c1a41c3e000285", "305b66a59d15b252092fbda9d09711230c429f351897cbd430e7b55a35fd3b97"),
}


# ---------------------------------------------------------------------- the client, as the CI drives it


@dataclass
class Out:
    rc: int
    text: str  # stdout + stderr, as the CI's `$(ssh ... 2>&1)`


class Flow:
    """`cml-control` run the way the original's CI runs `control`: output checked by substring."""

    def __init__(self, factory: DaemonFactory, base: Path, pki: Path) -> None:
        self.factory = factory
        self.base = base
        self.pki = pki
        self.cmld: Daemon | None = None
        self.scd: Daemon | None = None
        self.boots = 0

    # daemons ------------------------------------------------------------------------------

    def boot(self) -> None:
        """Power on: scd, then cmld (as systemd orders them)."""
        self.boots += 1
        self.scd = launch_scd(self.factory, self.base, name=f"scd{self.boots}")
        self.cmld = self.factory.launch(
            "cmld", f"cmld{self.boots}", "--scd-socket", str(self.scd.socket), "--tpm2d-socket",
            str(self.factory.tmp / "tpm2d.sock"), "--run-dir", str(self.factory.tmp / "cmld-run"),
            "--stop-timeout", "15", base=self.base)

    def reboot(self) -> None:
        """`control reboot` (must not abort), then the daemons go down and come up again."""
        self.expect_not(["reboot"], "Abort")
        assert self.cmld is not None and self.scd is not None
        assert self.cmld.stop() == 0, self.cmld.log_text()[-3000:]
        assert self.scd.stop() == 0
        self.boot()

    # commands -----------------------------------------------------------------------------

    def control(self, args: list[str], stdin: str | None = None, timeout: float = 120) -> Out:
        assert self.cmld is not None
        p = subprocess.run([str(BIN / "cml-control"), "-s", str(self.cmld.socket), *args], input=stdin,
                           capture_output=True, text=True, timeout=timeout, check=False)
        return Out(p.returncode, p.stdout + p.stderr)

    def expect(self, args: list[str], needle: str, *, rc: int | None = None, stdin: str | None = None) -> Out:
        out = self.control(args, stdin)
        assert needle in out.text, f"{args}: expected {needle!r}, got:\n{out.text}\n{self.log_tail()}"
        if rc is not None:
            assert out.rc == rc, f"{args}: exit {out.rc}, expected {rc}:\n{out.text}"
        return out

    def expect_not(self, args: list[str], needle: str, *, stdin: str | None = None) -> Out:
        out = self.control(args, stdin)
        assert needle not in out.text, f"{args}: did not expect {needle!r}, got:\n{out.text}\n{self.log_tail()}"
        return out

    def log_tail(self) -> str:
        return self.cmld.log_text()[-4000:] if self.cmld is not None else ""

    def wait_running(self, c: str, timeout: float = 60) -> None:
        """The CI's do_wait_running: only STARTING/BOOTING may come before RUNNING."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.control(["state", c]).text
            if "RUNNING" in text:
                return
            assert "STARTING" in text or "BOOTING" in text, f"{c}: expected STARTING or RUNNING, got {text}"
            assert time.monotonic() < deadline, f"{c} did not reach RUNNING:\n{self.log_tail()}"
            time.sleep(0.05)

    def wait_stopped(self, c: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "STOPPED" not in self.control(["state", c]).text:
            assert time.monotonic() < deadline, f"{c} did not stop:\n{self.log_tail()}"
            time.sleep(0.05)

    def start(self, c: str) -> None:
        self.expect(["start", c, f"--key={PW}"], "CONTAINER_START_OK", rc=0)
        self.wait_running(c)

    def stop(self, c: str) -> None:
        self.expect(["stop", c, f"--key={PW}"], "CONTAINER_STOP_OK", rc=0)
        self.wait_stopped(c)

    def change_pin(self, c: str, old: str, new: str, result: str) -> None:
        self.expect(["change_pin", c], result, stdin=f"{old}\n{new}\n{new}\n")

    def uuid(self, c: str) -> str:
        for line in self.control(["state", c]).text.splitlines():
            if line.strip().startswith("uuid:"):
                return line.split('"')[1]
        raise AssertionError(f"no uuid for {c}")


# ---------------------------------------------------------------------- inputs, as the original's testdata.sh


def coreos(src: Path, base: Path, pki: Path) -> int:
    """The demo busybox root shaped like GyroidOS's core GuestOS (meta-trustx trustx-coreos.conf):
    init through /sbin/cservice with `init`, SHARED_RW root, OVERLAY_RW /etc, tmpfs /data; signed."""
    cfg = load_text_file(src / "busybox-1.conf", GuestOSConfig)
    root = next(m for m in cfg.mounts if m.mount_point == "/")
    cfg.name, cfg.version = GUESTOS, 7
    cfg.init_path = "/sbin/cservice"
    del cfg.init_param[:], cfg.init_env[:], cfg.mounts[:]
    cfg.init_param.append("init")
    cfg.init_env.append("container=trustm3")
    cfg.mounts.add().CopyFrom(root)
    cfg.mounts[0].mount_type = M.SHARED_RW
    cfg.mounts.add(image_file="etc", mount_point="/etc", fs_type="ext4", mount_type=M.OVERLAY_RW)
    cfg.mounts.add(image_file="tmpfs", mount_point="/data/", fs_type="tmpfs", mount_type=M.EMPTY, def_size=12)
    osdir = base / "operatingsystems"
    (osdir / f"{GUESTOS}-7").mkdir(parents=True)
    os.link(src / "busybox-1" / "root.img", osdir / f"{GUESTOS}-7" / "root.img")
    conf = osdir / f"{GUESTOS}-7.conf"
    conf.write_text(to_text(cfg))
    sign(conf, pki)
    return cfg.version


def container_configs(out: Path, version: int) -> None:
    """testdata.sh's container configs, with our GuestOS version."""
    head = f'guest_os: "{GUESTOS}"\nguestos_version: {version}\n'
    etc = 'image_sizes {\n  image_name: "etc"\n  image_size: 10\n}\n'
    net1 = ('fifos: "signedfifo11"\nfifos: "signedfifo12"\n\n'
            'vnet_configs {\nif_name: "vnet0"\nconfigure: false\nif_rootns_name: "r_1"\n}\n'
            'vnet_configs {\nif_name: "vnet1"\nconfigure: false\nif_rootns_name: "r_2"\n}\n\n\n'
            'net_ifaces {\nnetif: "00:00:00:00:00:11"\nmac_filter: "AA:AA::AA:AA:AA"\n'
            'mac_filter: "00:00:00:00:00:14"\n}\n')
    files = {
        "testcontainer": f'name: "testcontainer"\n{head}assign_dev: "c 4:2 rwm"\n{etc}',
        "signedcontainer1": f'name: "signedcontainer1"\n{head}assign_dev: "c 4:2 rwm"\n{etc}',
        "signedcontainer1_update": f'name: "signedcontainer1"\n{head}assign_dev: "c 4:2 rwm"\n{etc}{net1}',
        "signedcontainer1_rename": f'name: "signedcontainer1-rename"\n{head}assign_dev: "c 4:2 rwm"\n{etc}{net1}',
        "signedcontainer2": (
            f'name: "signedcontainer2"\n{head}assign_dev: "c 4:3 rwm"\nallow_dev: "b 8:* rwm"\n'
            'fifos: "signedfifo21"\nfifos: "signedfifo22"\n\n'
            'vnet_configs {\nif_name: "vnet0"\nconfigure: false\nif_rootns_name: "r_3"\n}\n'
            'vnet_configs {\nif_name: "vnet1"\nconfigure: false\nif_rootns_name: "r_4"\n}\n\n'
            'net_ifaces {\nnetif: "00:00:00:00:00:14"\nmac_filter: "AA:AA::AA:AA:AA"\n'
            'mac_filter: "00:00:00:00:00:11"\n}\n'
            'net_ifaces {\nnetif: "00:00:00:00:00:15"\n}\nnet_ifaces {\nnetif: "00:00:00:00:00:16"\n}\n'),
        "rmcontainer3": f'name: "rmcontainer3"\n{head}assign_dev: "c 4:4 rwm"\n{etc}',
    }
    for name, text in files.items():
        (out / f"{name}.conf").write_text(text)


def nullos_configs(out: Path, base_url: str, pki: Path) -> None:
    """testdata.sh's nullos-1..3: SHARED_RW squashfs root of 1..3 GiB, verity hash named, with the
    update base URL relative (`file://<path without leading slash>`) as the CI gives it."""
    for v, (sha1, sha256) in NULLOS.items():
        conf = out / f"nullos-{v}.conf"
        conf.write_text(
            f'name: "nullos"\nhardware: "x86"\nversion: {v}\ninit_path: "/sbin/init"\ninit_param: "splash"\n'
            f'mounts {{\n\timage_file: "root"\n\tmount_point: "/"\n\tfs_type: "squashfs"\n\tmount_type: SHARED_RW\n'
            f'\timage_size: {v << 30}\n\timage_sha1: "{sha1}"\n\timage_sha2_256: "{sha256}"\n'
            f'\timage_verity_sha256: "{"0" * 64}"\n}}\n'
            f'description {{\n\ten: "null os just for update testing {v}GB root.img (x86)"\n}}\n'
            f'update_base_url: "file://{base_url}"\nbuild_date: "2026-12-06 00:00:00 UTC"\n')
        sign(conf, pki)


# ---------------------------------------------------------------------- the flow's test suites


def suite_complete(f: Flow, c: str, tmp: Path, *, second_run: bool) -> None:
    """do_test_complete of the original's CI."""
    f.expect(["list"], "code: CONTAINER_STATUS", rc=0)
    if not second_run:
        f.expect(["start", c, f"--key={PW}"], "CONTAINER_START_TOKEN_UNPAIRED", rc=1)
        assert "STOPPED" in f.control(["state", c]).text
        f.change_pin(c, "", PW, "CONTAINER_CHANGE_PIN_SUCCESSFUL")
    else:
        f.change_pin(c, PW, PW, "CONTAINER_CHANGE_PIN_SUCCESSFUL")
    f.change_pin(c, "wrongpin", PW, "CONTAINER_CHANGE_PIN_FAILED")

    f.start(c)
    f.expect(["config", c], c, rc=0)
    f.expect(["list_guestos"], GUESTOS, rc=0)
    f.expect(["remove", "nonexistent-container", f"--key={PW}"], "Container with provided uuid/name does not exist!")
    f.expect(["start", c, f"--key={PW}"], "CONTAINER_START_EEXIST", rc=1)
    f.stop(c)
    f.expect(["stop", c, f"--key={PW}"], "CONTAINER_STOP_FAILED_NOT_RUNNING", rc=1)
    f.wait_stopped(c)

    if (tmp / f"{c}_rename.conf").exists():
        uuid = f.uuid(c)
        # direct reload: the container is stopped, the new name applies at once
        f.expect(["update_config", uuid, *(str(tmp / f"{c}_rename.{x}") for x in ("conf", "sig", "cert"))],
                 f'name: "{c}-rename"', rc=0)
        f.start(f"{c}-rename")
        # indirect reload: updated while running, applied when it stops
        f.expect(["update_config", uuid, *(str(tmp / f"{c}_update.{x}") for x in ("conf", "sig", "cert"))],
                 f'name: "{c}"', rc=0)
        assert f'name: "{c}-rename"' in f.control(["state", uuid]).text  # still the running config
        f.stop(uuid)
        f.start(c)
        f.stop(c)

    if second_run:
        t0 = time.monotonic()
        for _ in range(CYCLES):
            f.start(c)
            f.stop(c)
        print(f"{c}: {CYCLES} start/stop cycles through cml-control in {time.monotonic() - t0:.1f} s")
        logdir = tmp / f"logs-{c}"
        logdir.mkdir()
        f.expect(["retrieve_logs", str(logdir)], "CMD_OK", rc=0)
        assert any(p.name.startswith("cml-daemon.") for p in logdir.iterdir())
        f.expect_not(["remove", c, f"--key={PW}"], "Abort")
        f.expect_not(["list"], c)
        f.expect(["remove", c, f"--key={PW}"], "Container with provided uuid/name does not exist!")


def suite_rm(f: Flow, c: str) -> None:
    """do_test_rm: a RUNNING container is removed (stopped first)."""
    f.change_pin(c, "", PW, "CONTAINER_CHANGE_PIN_SUCCESSFUL")
    f.start(c)
    uuid = f.uuid(c)
    f.expect_not(["remove", c, f"--key={PW}"], "Abort")
    f.expect_not(["list"], c)
    assert not (f.base / "containers" / f"{uuid}.conf").exists()
    assert not (f.base / "containers" / uuid).exists()


def suite_update(f: Flow, version: int, tmp: Path, update_root: Path) -> None:
    """do_test_update: a push without the images fails, with them (sparse) it completes."""
    path = update_root / "operatingsystems" / "x86" / f"nullos-{version}"
    path.mkdir(parents=True)
    push = ["push_guestos_config", *(str(tmp / f"nullos-{version}.{x}") for x in ("conf", "sig", "cert"))]
    f.expect(push, "response: GUESTOS_MGR_INSTALL_FAILED")
    assert not (f.base / "operatingsystems" / f"nullos-{version}.conf").exists()
    with open(path / "root.img", "wb") as img:
        img.truncate(version << 30)
    with open(path / "root.hash.img", "wb") as img:
        img.truncate(version << 20)
    f.expect(push, "response: GUESTOS_MGR_INSTALL_COMPLETED", rc=0)
    installed = f.base / "operatingsystems" / f"nullos-{version}" / "root.img"
    assert installed.stat().st_size == version << 30
    assert installed.stat().st_blocks * 512 < 1 << 20, "a sparse image must stay sparse"
    f.expect(["list_guestos"], "nullos")
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def suite_provisioning(f: Flow) -> None:
    f.expect(["get_provisioned"], "device_is_provisioned: false", rc=0)
    f.expect(["set_provisioned"], "response: CMD_OK", rc=0)
    f.expect(["get_provisioned"], "device_is_provisioned: true", rc=0)
    f.expect(["set_provisioned"], "response: CMD_UNSUPPORTED")


# ---------------------------------------------------------------------- the whole flow


@pytest.mark.timeout(1500)
@pytest.mark.req("APS 05", "NDR 2.4")
def test_original_integration_flow(cmld_factory: DaemonFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = cmld_factory.tmp
    pki = make_pki(tmp / "pki", "ec256")
    base = prepare_base(tmp / "device", pki)
    (base / "device.conf").write_text(SIGNED_DEVICE_CONF)
    version = coreos(demo_guestos(tmp_path_factory.mktemp("guestos")), base, pki)
    container_configs(tmp, version)
    for name in ("signedcontainer1", "signedcontainer1_update", "signedcontainer1_rename", "signedcontainer2",
                 "rmcontainer3"):
        sign(tmp / f"{name}.conf", pki)
    update_root = tmp / "update"
    nullos_configs(tmp, str(update_root).lstrip("/"), pki)

    f = Flow(cmld_factory, base, pki)
    f.boot()

    # set-up (RUN1)
    f.expect(["list"], "code: CONTAINER_STATUS", rc=0)
    f.expect_not(["ca_register", str(pki / "ssig_rootca.cert")], "Abort")
    f.expect_not(["create", str(tmp / "testcontainer.conf")], "uuids")  # unsigned: refused
    for c in ("signedcontainer1", "signedcontainer2", "rmcontainer3"):
        f.expect(["create", *(str(tmp / f"{c}.{x}") for x in ("conf", "sig", "cert"))], "guest_os", rc=0)
        f.expect(["list"], c)
    f.reboot()

    # RUN2
    for c in ("signedcontainer1", "signedcontainer2"):
        f.expect(["list"], c)
    f.expect(["update_config", "signedcontainer1",
              *(str(tmp / f"signedcontainer1_update.{x}") for x in ("conf", "sig", "cert"))],
             'netif: "00:00:00:00:00:11"', rc=0)
    suite_complete(f, "signedcontainer1", tmp, second_run=False)
    suite_complete(f, "signedcontainer2", tmp, second_run=False)
    suite_rm(f, "rmcontainer3")
    suite_update(f, 1, tmp, update_root)
    suite_update(f, 2, tmp, update_root)
    f.reboot()

    # RUN3: everything persisted (containers, pairing, GuestOSes)
    f.expect(["list_guestos"], "nullos")
    suite_complete(f, "signedcontainer1", tmp, second_run=True)
    suite_complete(f, "signedcontainer2", tmp, second_run=True)
    suite_update(f, 3, tmp, update_root)
    suite_provisioning(f)
    f.reboot()

    # RUN4: the provisioned state persisted, and with it the reduced command set
    f.expect(["get_provisioned"], "device_is_provisioned: true", rc=0)
    f.expect(["set_provisioned"], "response: CMD_UNSUPPORTED")
    f.expect(["list"], "code: CONTAINER_STATUS", rc=0)
    assert f.cmld is not None
    assert "Traceback" not in f.cmld.log_text()
