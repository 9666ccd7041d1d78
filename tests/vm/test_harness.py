"""The harness itself: a broken guest fails the tier with the guest's own error message (not a
timeout), and a boot that does time out still leaves no process or temp dir behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import ARTIFACTS, VM_MARKS, Boot, Image, assert_units_healthy, guest_check, runner

pytestmark = VM_MARKS


def test_broken_guest_fails_with_the_guests_own_error(broken_boot: Boot) -> None:
    assert not broken_boot.timed_out  # the guest powered itself off: it did not wait for the timeout
    data = guest_check(broken_boot, "units")
    with pytest.raises(AssertionError) as exc:
        assert_units_healthy(data)
    message = str(exc.value)
    # cmld's own words, from the guest's journal, through the share, into the assertion.
    assert "cmld cannot start" in message and "cml-no-such-group" in message, message
    assert not broken_boot.work.exists()


def test_a_timed_out_boot_is_stopped_and_cleaned_up(vm_image: Image) -> None:
    b = runner.boot(vm_image, {"checks": ["units"]}, ARTIFACTS / "console-timeout.log", timeout=8)
    assert b.timed_out and b.results is None
    assert not b.work.exists()
    for pid in b.pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} (qemu/swtpm) still there"
