"""VM tier fixtures: one image build and one boot per scenario group per session. All tests of
the tier share one xdist group, so one worker runs them while the other runs the host tiers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from . import harness
from .ab_scenario import AbBoot
from .harness import Boot, Image

# The system data volume is set up right after the TPM check (before `attest` extends PCR 7), so
# every later container lives on it; the reboots then open it at boot, change PCR 7, and destroy it.
SYSTEM_CHECKS = ["units", "tpm", "sysdata_setup", "attest", "cgroups", "dm", "container", "network", "kaudit",
                 "crypt", "verity", "cryptcrash"]
AFTER_REBOOT = [["sysdata_boot", "destroy"], ["sysdata_destroyed"]]
NIC_MAC = "52:54:00:c1:00:02"  # the second NIC (qemu/guest/vmcheck/network.py)
MARK = "hello-from-the-host"


@pytest.fixture(scope="session")
def host_server() -> Iterator[int]:
    """An HTTP server on the host's loopback that only the guest's second NIC reaches (guestfwd,
    through qemu/cmlvm/relay.py: one host connection per guest connection)."""
    import http.server
    import threading

    class Mark(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (MARK + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mark)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="session")
def vm_image() -> Image:
    if os.geteuid() != 0:
        pytest.skip("the VM tier needs root (mmdebstrap --mode=root, chroot)")
    missing = harness.missing_tools()
    if missing:
        pytest.skip(f"the VM tier needs {', '.join(missing)} (scripts/setup.sh installs them)")
    return harness.build()


@pytest.fixture(scope="session")
def system_boot(vm_image: Image, host_server: int) -> Boot:
    """The main scenario: the image as built, every system check in one boot; the host attests
    the guest over a forwarded loopback port while it runs (tests/vm/attest_agent.py)."""
    from tests.host.tpm2dlib import free_port

    from .attest_agent import GUEST_PORT, agent

    nic = harness.runner.ExtraNic.to_host_port(NIC_MAC, "10.0.3.0/24", "10.0.3.100", 8080, host_server)
    return harness.boot(vm_image, "system", SYSTEM_CHECKS, forwards={GUEST_PORT: free_port()}, agent=agent,
                        extra_nics=(nic,), after_reboot=AFTER_REBOOT, timeout=harness.SYSTEM_TIMEOUT)


@pytest.fixture(scope="session")
def broken_boot(vm_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Boot:
    """A deliberately broken guest: a drop-in makes cmld fail at start (unknown socket group)."""
    overlay = tmp_path_factory.mktemp("broken-overlay")
    dropin = overlay / "etc" / "systemd" / "system" / "cmld.service.d"
    dropin.mkdir(parents=True)
    (dropin / "vmtest-broken.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/usr/bin/cmld --foreground --base-dir /var/lib/cml "
        "--socket /run/socket/cml-control --log-dir /var/log/cml --socket-group cml-no-such-group\n")
    return harness.boot(vm_image, "broken", ["units"], overlay=overlay)


# The A/B update scenario: after the boot in which cmld sets the slots up (and reboots), one check
# per boot: slot A with an update pushed, slot B (the update) with a broken one pushed, the fallback
# with a kernel that panics pushed, then (after the boot that panics) the fallback again.
AB_CHECKS = ["abupdate.slot_a"]
AB_AFTER_REBOOT = [["abupdate.slot_b"], ["abupdate.fallback"], ["abupdate.fallback_panic"]]
AB_TIMEOUT = 3600.0  # six boots of 1-2 min each on an idle machine, c0 starts and three updates


@pytest.fixture(scope="session")
def ab_boot(vm_image: Image, tmp_path_factory: pytest.TempPathFactory) -> AbBoot:
    """The guest boots from a disk through OVMF's boot manager (no -kernel): its ESP holds a UKI
    of the image's kernel, initrd and command line; cmld runs with --a-b-update on a device."""
    import time

    from .ab_scenario import prepare

    missing = harness.missing_boot_disk_tools()
    if missing:
        pytest.skip(f"the A/B scenario needs {', '.join(missing)} (scripts/setup.sh installs them)")
    t0 = time.monotonic()
    disk = harness.bootdisk.build(vm_image)
    overlay, extra, expect = prepare(vm_image, disk, tmp_path_factory.mktemp("ab"))
    harness.record_timing("ab_boot_disk_and_updates", time.monotonic() - t0)
    b = harness.boot(vm_image, "ab", AB_CHECKS, overlay=overlay, after_reboot=AB_AFTER_REBOOT, timeout=AB_TIMEOUT,
                     boot_disk=disk.disk, extra_share=extra, reboots_first=1,
                     failed_boots=1)
    return AbBoot(b, expect)
