"""VM tier fixtures: one image build and one boot per scenario group per session. All tests of
the tier share one xdist group, so one worker runs them while the other runs the host tiers."""

from __future__ import annotations

import os

import pytest

from . import harness
from .harness import Boot, Image

# The system data volume is set up right after the TPM check (before `attest` extends PCR 7), so
# every later container lives on it; the reboots then open it at boot, change PCR 7, and destroy it.
SYSTEM_CHECKS = ["units", "tpm", "sysdata_setup", "attest", "cgroups", "dm", "container", "crypt", "verity",
                 "cryptcrash"]
AFTER_REBOOT = [["sysdata_boot", "destroy"], ["sysdata_destroyed"]]


@pytest.fixture(scope="session")
def vm_image() -> Image:
    if os.geteuid() != 0:
        pytest.skip("the VM tier needs root (mmdebstrap --mode=root, chroot)")
    missing = harness.missing_tools()
    if missing:
        pytest.skip(f"the VM tier needs {', '.join(missing)} (scripts/setup.sh installs them)")
    return harness.build()


@pytest.fixture(scope="session")
def system_boot(vm_image: Image) -> Boot:
    """The main scenario: the image as built, every system check in one boot; the host attests
    the guest over a forwarded loopback port while it runs (tests/vm/attest_agent.py)."""
    from tests.host.tpm2dlib import free_port

    from .attest_agent import GUEST_PORT, agent

    return harness.boot(vm_image, "system", SYSTEM_CHECKS, forwards={GUEST_PORT: free_port()}, agent=agent,
                        after_reboot=AFTER_REBOOT, timeout=harness.SYSTEM_TIMEOUT)


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
