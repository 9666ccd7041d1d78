"""The layering the design card asks for, checked on the source so it stays true.

Every import counts, also those inside functions and under TYPE_CHECKING (a hidden import is
still a dependency). Three rules:

1. between packages, arrows point down: tools -> daemons -> `cml_common`; daemons never import
   each other;
2. inside cmld, a module imports only from its own layer or below (control -> daemon -> runtime
   -> modules -> the low-level packages -> linux/errors), never up;
3. no import cycle between modules anywhere;

and one of size: no hand-written package file over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cml_common", "cmld", "scd", "tpm2d", "cml_control", "cml_sign", "cml_rattestation", "cml_tpm2_control")
# What each top-level package may import from the others (itself is always allowed).
PACKAGE_DEPS = {
    "cml_common": set(),
    "cmld": {"cml_common"},
    "scd": {"cml_common"},
    "tpm2d": {"cml_common"},
    "cml_control": {"cml_common"},
    "cml_sign": {"cml_common", "scd"},
    "cml_rattestation": {"cml_common", "scd", "cml_sign"},
    "cml_tpm2_control": {"cml_common", "tpm2d"},  # a tool may use a daemon's pure logic
}
# cmld's layers, top to bottom; a module may import its own layer and everything below.
CMLD_LAYERS: list[tuple[str, ...]] = [
    ("cmld.main",),
    ("cmld.control",),
    ("cmld.daemon",),
    ("cmld.runtime",),
    ("cmld.modules",),
    ("cmld.containers", "cmld.guestos", "cmld.device", "cmld.clients", "cmld.audit"),
    ("cmld.cgroups", "cmld.seccomp", "cmld.launcher", "cmld.crypt", "cmld.sysdata", "cmld.net"),
    ("cmld.linux",),
    ("cmld.errors",),
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            if "messages" in path.parts and path.name.endswith("_pb2.py"):
                continue
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
            targets.add(mod)
            targets.update(f"{mod}.{a.name}" for a in node.names)
    resolved = set()
    for t in targets:
        parts = t.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            resolved.add(".".join(parts))
    resolved.discard(name)
    return resolved


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    src = sources()
    known = set(src)
    return {name: imports_of(name, path, known) for name, path in src.items()}


def layer_of(module: str) -> int | None:
    for i, prefixes in enumerate(CMLD_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_packages_point_down(graph: dict[str, set[str]]) -> None:
    bad = []
    for mod, deps in graph.items():
        pkg = mod.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if other != pkg and other not in PACKAGE_DEPS[pkg]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports across packages that point the wrong way:\n" + "\n".join(sorted(bad))


def test_cmld_layers_point_down(graph: dict[str, set[str]]) -> None:
    bad = []
    for mod, deps in graph.items():
        mine = layer_of(mod)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs is not None and theirs < mine:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports that point up in cmld's layers:\n" + "\n".join(sorted(bad))


def test_every_cmld_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    loose = [m for m in graph if m.startswith("cmld.") and layer_of(m) is None]
    assert not loose, f"modules outside cmld's layers (add them to CMLD_LAYERS deliberately): {loose}"


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components: any with two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_package_file_over_400_lines() -> None:
    long = [f"{p.relative_to(REPO)}: {n}" for p in sources().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, "split these files (one concern per file):\n" + "\n".join(long)


def test_relative_links_in_the_docs_resolve() -> None:
    """README.md and docs/*.md link only to files a clone has."""
    import re

    broken = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "bench").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
