"""Which kernel modules a container may load (`allow_module`, the original's c_seccomp
init_module.c), decided without touching the kernel.

As the original: loading is possible at all only when the kernel enforces module signatures
(`module.sig_enforce=Y`; otherwise the flag is stripped and CAP_SYS_MODULE dropped), each allowed
name brings the dependencies `modules.dep` lists for it, only files under /lib/modules or
/usr/lib/modules qualify, parameters are dropped and only MODULE_INIT_COMPRESSED_FILE is kept.

Stricter than the original: it accepts a file when its path merely *contains* an allowed name
(`smc` would admit `smc_diag.ko` and anything under a directory called smc); here the module's own
name (file name without .ko and compression suffix, `-` and `_` the same) must be on the list, or
its path below /lib/modules/<release>/ must be one of the listed dependencies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SIG_ENFORCE = Path("/sys/module/module/parameters/sig_enforce")
MODULE_DIRS = ("/lib/modules/", "/usr/lib/modules/")
MODULE_INIT_COMPRESSED_FILE = 4
SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def sig_enforced(path: Path = SIG_ENFORCE) -> bool:
    try:
        return path.read_text().strip() == "Y"
    except OSError:
        return False  # no module support, or no signature checking built in


def module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def modules_dep(release: str | None = None) -> str:
    release = release or os.uname().release
    try:
        return Path(f"/lib/modules/{release}/modules.dep").read_text()
    except OSError:
        return ""


@dataclass
class ModuleAllowList:
    names: set[str] = field(default_factory=set)  # normalised module names
    dep_paths: set[str] = field(default_factory=set)  # paths relative to /lib/modules/<release>/

    @classmethod
    def expand(cls, allowed: list[str], dep_text: str) -> ModuleAllowList:
        """The allowed names plus, from modules.dep, every module each of them needs."""
        out = cls(names={n.replace("-", "_") for n in allowed if n})
        for line in dep_text.splitlines():
            head, sep, deps = line.partition(":")
            if sep and module_name(head) in out.names:
                out.dep_paths.update(deps.split())
        return out

    def refusal(self, path: str, release: str | None = None) -> str | None:
        """None if the module file at `path` (as the caller's fd names it) may be loaded, else why not."""
        if not path.startswith(MODULE_DIRS) or "/../" in path or path.endswith("/.."):
            return f"{path} is not under /lib/modules or /usr/lib/modules"
        release = release or os.uname().release
        rel = next((path[len(d) + len(release) + 1:] for d in MODULE_DIRS if path.startswith(f"{d}{release}/")), "")
        if module_name(path) in self.names or (rel and rel in self.dep_paths):
            return None
        return f"module {module_name(path)} is not on the container's allow_module list (nor a dependency)"


def module_loading(allowed: list[str]) -> tuple[ModuleAllowList | None, str]:
    """The container's allow list, or None and why module loading is off for it."""
    if not allowed:
        return None, "the container has no allow_module list"
    if not sig_enforced():
        return None, "the kernel does not enforce module signatures (module.sig_enforce)"
    return ModuleAllowList.expand(allowed, modules_dep()), ""
