"""The requirement rows of `requirements.toml`, checked on load so a typo cannot hide a row."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

STATES = ("done", "partly", "not")
SEED_STATES = ("done", "partly", "planned")
DEFAULT_FILE = Path(__file__).with_name("requirements.toml")


class RequirementsError(Exception):
    """requirements.toml is malformed or names files that do not exist."""


@dataclass(frozen=True)
class Requirement:
    id: str
    table: str
    title: str
    seed_state: str
    state: str
    modules: tuple[str, ...]
    note: str

    @property
    def newly_covered(self) -> bool:
        """The original only plans (or partly does) this row, and we do more of it."""
        rank = {"planned": 0, "not": 0, "partly": 1, "done": 2}
        return rank[self.state] > rank[self.seed_state]


def _text(entry: dict[str, object], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise RequirementsError(f"{where}: '{key}' must be a string")
    return value


def load(path: Path = DEFAULT_FILE, repo: Path | None = None) -> list[Requirement]:
    """The rows in file order. With `repo`, every module path must exist under it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RequirementsError(f"{path}: {e}") from e
    entries = data.get("req")
    if not isinstance(entries, list) or not entries:
        raise RequirementsError(f"{path}: no [[req]] entries")
    rows: list[Requirement] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        where = f"{path.name} entry {n}"
        if not isinstance(entry, dict):
            raise RequirementsError(f"{where}: not a table")
        rid = _text(entry, "id", where).strip()
        where = f"{path.name} '{rid}'"
        if not rid or rid in seen:
            raise RequirementsError(f"{where}: empty or duplicate id")
        seen.add(rid)
        state, seed_state = _text(entry, "state", where), _text(entry, "seed_state", where)
        if state not in STATES:
            raise RequirementsError(f"{where}: state {state!r} is not one of {', '.join(STATES)}")
        if seed_state not in SEED_STATES:
            raise RequirementsError(f"{where}: seed_state {seed_state!r} is not one of {', '.join(SEED_STATES)}")
        modules = entry.get("modules", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise RequirementsError(f"{where}: 'modules' must be a list of paths")
        if state != "not" and not modules:
            raise RequirementsError(f"{where}: a {state} row names the files that implement it")
        if repo is not None:
            missing = [m for m in modules if not (repo / m).exists()]
            if missing:
                raise RequirementsError(f"{where}: no such file or directory: {', '.join(missing)}")
        note = _text(entry, "note", where)
        if state == "partly" and not note:
            raise RequirementsError(f"{where}: a partly row says in its note what is missing")
        rows.append(Requirement(rid, _text(entry, "table", where), _text(entry, "title", where), seed_state,
                                state, tuple(modules), note))
    return rows
