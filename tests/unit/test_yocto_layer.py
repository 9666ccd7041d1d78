"""The Yocto layer (yocto-layer/) cannot drift from the code it builds: its version, Python
dependencies, packages, units, console scripts and licence are compared with pyproject.toml and
the source; the in-container service is compiled with the recipe's own compile line.

(`scripts/lint-yocto-layer.sh` lints the same files with oelint-adv; this checks the content.)
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "yocto-layer"
SUITE = LAYER / "recipes-cml" / "cml" / "python3-cml_git.bb"
SOURCE_INC = LAYER / "recipes-cml" / "cml" / "cml-source.inc"
CSERVICE = LAYER / "recipes-cml" / "cml-cservice" / "cml-cservice_git.bb"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Each binary package of the suite recipe and the Python package it carries (${PN}: cml_common).
OE_PACKAGE_OF = {"cml_common": "${PN}", "cmld": "cmld", "scd": "scd", "tpm2d": "tpm2d",
                 "cml_control": "cml-control", "cml_tpm2_control": "cml-tpm2-control",
                 "cml_rattestation": "cml-rattestation", "cml_sign": "cml-sign"}
ASSIGN = re.compile(r'^(?P<var>[A-Za-z0-9_${}:.%-]+)\s*(?P<op>\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*"(?P<val>.*)"\s*$')
DEP = re.compile(r"(?P<name>[^\s()]+)(?:\s*\((?P<op>[<>=]+)\s*(?P<ver>[^)\s]+)\))?")


def assignments(path: Path) -> dict[str, str]:
    """Variable -> value of a recipe's plain assignments (continuations joined; the last wins, as
    `=` does; `+=` appends)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = ASSIGN.match(line.strip())
        if m:
            value = " ".join(m["val"].split())
            found[m["var"]] = f"{found[m['var']]} {value}".strip() if m["op"] == "+=" and m["var"] in found \
                else value
    return found


def function_body(path: Path, name: str) -> list[str]:
    lines = path.read_text().splitlines()
    start = lines.index(f"{name}() {{")
    end = lines.index("}", start)
    return [line.strip() for line in lines[start + 1:end]]


def rdepends(pkg: str) -> dict[str, tuple[str, str] | None]:
    """The runtime dependencies of one binary package: name -> (op, version) or None."""
    value = assignments(SUITE).get(f"RDEPENDS:{pkg}", "")
    return {m["name"]: (m["op"], m["ver"]) if m["op"] else None for m in DEP.finditer(value)}


def all_rdepends() -> dict[str, dict[str, tuple[str, str] | None]]:
    return {pkg: rdepends(pkg) for pkg in OE_PACKAGE_OF.values()}


def recipe_name(distribution: str) -> str:
    """OE's name for a PyPI distribution: python3-<name>, without a python- prefix or -python suffix."""
    name = re.sub(r"[-_.]+", "-", distribution).lower()
    name = re.sub(r"^python-|-python$", "", name)
    return f"python3-{name}"


def shipped_recipes() -> dict[str, Version]:
    """Recipes of this layer with a version in their file name (name_version.bb)."""
    return {p.stem.rsplit("_", 1)[0]: Version(p.stem.rsplit("_", 1)[1])
            for p in LAYER.glob("recipes-*/*/*_*.bb") if not p.stem.endswith("_git")}


def runtime_requirements() -> list[Requirement]:
    return [r for r in map(Requirement, PROJECT["dependencies"]) if r.marker is None or
            r.marker.evaluate({"sys_platform": "linux"})]


def lower_bound(req: Requirement) -> str:
    bounds = [s.version for s in req.specifier if s.operator in (">=", "==")]
    assert len(bounds) == 1, f"{req}: one lower bound (>= or ==) expected"
    return bounds[0]


def test_version_is_pyprojects() -> None:
    assert assignments(SOURCE_INC)["PV"] == f"{PROJECT['version']}+git", \
        "PV in yocto-layer/recipes-cml/cml/cml-source.inc must be pyproject.toml's version + '+git'"


def test_every_python_dependency_is_a_versioned_rdepends() -> None:
    """Each dependency of pyproject.toml is a runtime dependency of the suite with its lower bound,
    and a recipe this layer ships for it has a version pyproject.toml accepts (pins exactly)."""
    every = {name: dep for deps in all_rdepends().values() for name, dep in deps.items()}
    shipped = shipped_recipes()
    for req in runtime_requirements():
        name = recipe_name(req.name)
        assert name in every, f"pyproject.toml needs {req}; no package of {SUITE.name} RDEPENDS on {name}"
        assert every[name] == (">=", lower_bound(req)), \
            f"{SUITE.name}: {name} must be '{name} (>= {lower_bound(req)})' as pyproject.toml says {req}"
        pinned = any(s.operator == "==" for s in req.specifier)
        if name in shipped:
            assert req.specifier.contains(shipped[name]), \
                f"yocto-layer ships {name} {shipped[name]}, pyproject.toml wants {req}: update the recipe"
        else:
            assert not pinned, f"pyproject.toml pins {req}: yocto-layer must ship {name}_{lower_bound(req)}.bb"


def test_every_versioned_python_rdepends_is_in_pyproject() -> None:
    wanted = {recipe_name(r.name) for r in runtime_requirements()}
    for pkg, deps in all_rdepends().items():
        for name, dep in deps.items():
            if name.startswith("python3-") and dep is not None:
                assert name in wanted, f"RDEPENDS:{pkg} names {name} {dep}, which pyproject.toml does not list"


def imports(package: str) -> set[str]:
    """Top-level module names the package's source imports (absolute imports only)."""
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_each_package_rdepends_on_what_its_code_imports() -> None:
    """A new `import pyroute2` in cmld fails here until cmld's RDEPENDS (and pyproject) have it."""
    distributions = importlib.metadata.packages_distributions()
    wanted = {r.name.lower() for r in runtime_requirements()}
    for package, oe_pkg in OE_PACKAGE_OF.items():
        deps = set(rdepends(oe_pkg)) | (set(rdepends("${PN}")) if oe_pkg != "${PN}" else set())
        for module in sorted(imports(package) - set(sys.stdlib_module_names) - {package}):
            if module in OE_PACKAGE_OF:
                assert OE_PACKAGE_OF[module] in deps, f"{package} imports {module}: RDEPENDS:{oe_pkg} needs " \
                                                      f"{OE_PACKAGE_OF[module]}"
                continue
            dists = [d for d in distributions.get(module, []) if d.lower() in wanted]
            assert dists, f"{package} imports {module}, which no dependency of pyproject.toml provides"
            assert recipe_name(dists[0]) in deps, f"{package} imports {module} ({dists[0]}): RDEPENDS:{oe_pkg} " \
                                                  f"needs {recipe_name(dists[0])}"


def test_every_unit_is_packaged_and_installed() -> None:
    values = assignments(SUITE)
    services = {values[k]: k.split(":", 1)[1] for k in values if k.startswith("SYSTEMD_SERVICE:")}
    install = " ".join(function_body(SUITE, "do_install:append"))
    for unit in sorted(p.name for p in (REPO / "systemd").glob("*.service")):
        assert unit in services, f"systemd/{unit} is in no SYSTEMD_SERVICE of {SUITE.name}"
        assert f"${{S}}/systemd/{unit}" in install, f"{SUITE.name} does not install systemd/{unit}"
        assert services[unit] in values["SYSTEMD_PACKAGES"].split()


def test_every_console_script_and_package_is_in_a_binary_package() -> None:
    values = assignments(SUITE)
    files = " ".join(v for k, v in values.items() if k.startswith("FILES:"))
    for script in PROJECT["scripts"]:
        assert f"${{bindir}}/{script}" in files.split() or f"${{sbindir}}/{script}" in files.split(), \
            f"console script {script} is in no FILES of {SUITE.name}"
    for package, oe_pkg in OE_PACKAGE_OF.items():
        if oe_pkg != "${PN}":  # ${PN} keeps the rest of site-packages
            assert f"${{PYTHON_SITEPACKAGES_DIR}}/{package}" in values[f"FILES:{oe_pkg}"].split()
    include = set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {f"{p}*" for p in OE_PACKAGE_OF} == include, "a new Python package needs a binary package in the recipe"


def test_licence_is_pyprojects_and_its_checksum_holds() -> None:
    values = assignments(SOURCE_INC)
    assert values["LICENSE"] == PROJECT["license"]
    m = re.fullmatch(r"file://(?P<file>[^;]+);md5=(?P<md5>[0-9a-f]{32})", values["LIC_FILES_CHKSUM"])
    assert m is not None
    assert hashlib.md5((REPO / m["file"]).read_bytes(), usedforsecurity=False).hexdigest() == m["md5"]


def test_cservice_recipe_compiles_a_static_service_where_cmld_looks(tmp_path: Path) -> None:
    """The recipe's own compile line, with the host's gcc for ${CC}, builds a static binary."""
    from cmld.device.cservice_binary import INSTALLED

    values = assignments(CSERVICE)
    [compile_line] = function_body(CSERVICE, "do_compile")
    subst = {"${CC}": "gcc", "${CFLAGS}": "-O2", "${LDFLAGS}": "", "${B}": str(tmp_path), "${S}": str(REPO),
             "${CSERVICE_WARNINGS}": values["CSERVICE_WARNINGS"], "${CSERVICE_LINK}": values["CSERVICE_LINK"]}
    for var, value in subst.items():
        compile_line = compile_line.replace(var, value)
    assert "${" not in compile_line, f"unknown variable in the compile line: {compile_line}"
    r = subprocess.run(compile_line.split(), capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    binary = (tmp_path / "cservice").read_bytes()
    assert binary[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in binary and b"/lib/ld-" not in binary, \
        "cservice must be static (no program interpreter)"
    install = " ".join(function_body(CSERVICE, "do_install"))
    assert "${D}${libexecdir}/cml/cservice" in install
    assert Path("/usr/libexec/cml/cservice") in INSTALLED, "cmld no longer looks where the recipe installs"


def test_kernel_fragment_is_well_formed() -> None:
    fragment = LAYER / "recipes-kernel" / "linux" / "files" / "cml.cfg"
    seen: set[str] = set()
    for n, line in enumerate(fragment.read_text().splitlines(), 1):
        if not line or (line.startswith("# ") and not line.endswith(" is not set")):
            continue
        m = re.fullmatch(r"(?:# (CONFIG_[A-Z0-9_]+) is not set|(CONFIG_[A-Z0-9_]+)=(?:[ymn]|\d+|\"[^\"]*\"))", line)
        assert m, f"cml.cfg:{n}: not a Kconfig line: {line!r}"
        symbol = m[1] or m[2]
        assert symbol not in seen, f"cml.cfg:{n}: {symbol} twice"
        seen.add(symbol)
    for needed in ("CONFIG_USER_NS", "CONFIG_TIME_NS", "CONFIG_CGROUP_BPF", "CONFIG_DM_CRYPT", "CONFIG_DM_INTEGRITY",
                   "CONFIG_DM_VERITY", "CONFIG_TCG_TPM", "CONFIG_IMA", "CONFIG_AUDIT", "CONFIG_SECCOMP_FILTER",
                   "CONFIG_OVERLAY_FS", "CONFIG_BLK_DEV_LOOP", "CONFIG_VETH", "CONFIG_NF_TABLES"):
        assert needed in seen, f"cml.cfg lacks {needed}"
