"""Imports run one way: http -> jobs -> transcript -> shared (gateway/__init__.py), read from
the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each part of the code may import of Chorus (prefixes), beside itself.
ALLOWED = {
    "shared": ("shared",),
    "engine": ("engine", "shared"),
    "gateway.errors": (),
    "gateway.settings": ("shared",),
    "gateway.transcript": ("gateway.transcript", "gateway.errors", "gateway.settings", "shared"),
    "gateway.jobs": ("gateway.jobs", "gateway.transcript", "gateway.errors", "gateway.settings", "shared",
                     "engine.main"),  # the engine process's entry point, which the pool spawns
    "gateway.cluster": ("gateway.cluster", "gateway.jobs", "gateway.transcript", "gateway.errors",
                        "gateway.settings", "shared"),
    "gateway.http": ("gateway.http", "gateway.jobs", "gateway.transcript", "gateway.errors", "gateway.settings",
                     "shared"),
    "gateway.cli": ("gateway", "engine.embedded", "shared"),
}


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("gateway", "engine", "shared"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found.append((name, path))
    return found


def part_of(module: str) -> str:
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def chorus_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{a.name}" for a in node.names)  # a submodule or a name in one
    return {n for n in names if n.split(".")[0] in ("gateway", "engine", "shared")}


@pytest.mark.parametrize("module, path", modules(), ids=[m for m, _ in modules()])
def test_imports_run_one_way(module, path):
    if module == "gateway":
        return
    allowed = ALLOWED[part_of(module)]
    wrong = [name for name in chorus_imports(path)
             if not any(name == a or name.startswith(a + ".") for a in allowed)
             and name != "gateway"]
    assert not wrong, f"{module} may not import {wrong} (allowed: {allowed})"


def test_every_package_says_what_it_owns_and_may_import():
    for init in [ROOT / p / "__init__.py" for p in ("gateway", "engine", "shared", "gateway/http", "gateway/jobs",
                                                    "gateway/transcript")]:
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(ROOT)} has no docstring saying what it may import"
