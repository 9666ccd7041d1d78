"""allow_module: the allow list expanded by modules.dep, and which module files it admits."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmld.seccomp.module_policy import ModuleAllowList, module_name, sig_enforced

pytestmark = pytest.mark.unit
REL = "6.1.0-test"
DEP = """kernel/net/smc/smc_diag.ko.xz: kernel/net/smc/smc.ko.xz kernel/drivers/infiniband/core/ib_core.ko.xz
kernel/net/smc/smc.ko.xz: kernel/drivers/infiniband/core/ib_core.ko.xz
kernel/drivers/infiniband/core/ib_core.ko.xz:
kernel/drivers/block/loop.ko:
"""


def test_names_and_dependencies() -> None:
    a = ModuleAllowList.expand(["smc-diag"], DEP)
    assert a.names == {"smc_diag"}
    assert a.dep_paths == {"kernel/net/smc/smc.ko.xz", "kernel/drivers/infiniband/core/ib_core.ko.xz"}
    ok = f"/lib/modules/{REL}/kernel/net/smc/smc_diag.ko.xz"
    assert a.refusal(ok, REL) is None
    assert a.refusal(f"/usr/lib/modules/{REL}/kernel/drivers/infiniband/core/ib_core.ko.xz", REL) is None
    assert a.refusal(f"/lib/modules/{REL}/kernel/net/smc/smc.ko.xz", REL) is None  # a dependency


@pytest.mark.parametrize("path", [
    f"/lib/modules/{REL}/kernel/drivers/block/loop.ko",  # not listed
    f"/lib/modules/{REL}/kernel/net/smc/smc_diag_evil.ko",  # the original's substring match would admit it
    "/tmp/smc_diag.ko",  # outside the module tree
    f"/lib/modules/{REL}/../../../tmp/smc_diag.ko",
    "/lib/modulesX/smc_diag.ko",
])
def test_refused(path: str) -> None:
    assert ModuleAllowList.expand(["smc_diag"], DEP).refusal(path, REL) is not None


def test_module_name_and_sig_enforce(tmp_path: Path) -> None:
    assert module_name("/x/smc-diag.ko.zst") == "smc_diag" and module_name("loop.ko") == "loop"
    f = tmp_path / "sig_enforce"
    assert not sig_enforced(f)
    f.write_text("N\n")
    assert not sig_enforced(f)
    f.write_text("Y\n")
    assert sig_enforced(f)
