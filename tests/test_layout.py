"""The layout holds: the README's "What is where" names every module of the tree that exists,
and imports flow one way (workflows <- activities <- worker, runtime and the command line)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"activities", "starter", "runtime", "worker", "settings", "logs", "bench", "tests"}


def where_table() -> list[str]:
    """Every path the README's "What is where" table names."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## What is where", 1)[1].split("\n## ", 1)[0]
    return [p for line in section.splitlines() for p in re.findall(r"`([\w./-]+)`", line)]


def modules(package: str) -> list[Path]:
    return sorted(
        p for p in (ROOT / package).rglob("*.py") if p.name not in {"__init__.py", "__main__.py"}
    )


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_every_path_the_table_names_exists() -> None:
    # Paths of the tree, not the files a run writes (``.data/``).
    named = [p for p in where_table() if ("/" in p or p.endswith(".py")) and p[0] != "."]
    assert named
    assert [p for p in named if not (ROOT / p).exists()] == []


def test_every_module_is_in_the_table() -> None:
    named = set(where_table())
    tree = [*modules("workflows"), *modules("runtime"), *modules("starter")]
    tree += [ROOT / f"{name}.py" for name in ("worker", "settings", "logs")]
    missing = []
    for path in tree:
        relative = path.relative_to(ROOT)
        inside = f"{relative.parts[0]}/{relative.parts[1]}/" if len(relative.parts) > 2 else None
        # A module is named itself, or by the sub-package it lives in (workflows/lifecycle/).
        if str(relative) not in named and inside not in named:
            missing.append(str(relative))
    assert missing == []


def test_workflow_code_imports_nothing_of_the_layers_above_it() -> None:
    arrows = {
        f"{path.relative_to(ROOT)} -> {module}"
        for path in modules("workflows")
        for module in imports_of(path) & TOP_LEVEL
    }
    assert arrows == set()


def test_activities_import_no_command_line_nor_worker() -> None:
    arrows = {
        f"{path.relative_to(ROOT)} -> {module}"
        for path in modules("activities")
        for module in imports_of(path) & {"starter", "worker", "bench", "tests"}
    }
    assert arrows == set()
