"""No stage imports a later one: capture and workspace import no lock or build code, lock no
build code (the stages are composed in reprobox/pipeline.py). Every import counts, at module top
or inside a function, absolute or relative."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import reprobox

if sys.version_info >= (3, 11):
    pass
else:  # reprobox depends on tomli there
    pass

PACKAGE = Path(reprobox.__file__).resolve().parent

#: Modules of reprobox after the stage, which the stage must not import.
LATER = (
    "lock",
    "build",
    "engine",
    "base",
    "backends",
    "registry",
    "run",
    "compare",
    "verify",
    "fanout",
    "pr",
    "doctor",
    "pipeline",
    "api",
    "cli",
)
FORBIDDEN = {
    "capture": LATER,
    "workspace": LATER,
    "lock": LATER[1:],
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file of the package: for
    ``from . import x`` both the package and ``package.x``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _violations(stage: str) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        for line, target in imported_modules(path):
            parts = target.split(".")
            if parts[0] == "reprobox" and len(parts) > 1 and parts[1] in FORBIDDEN[stage]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    return bad


def test_the_walk_sees_relative_and_function_level_imports() -> None:
    """The check itself: the pipeline's imports of lock and build are found, as are imports
    inside functions (api imports the pipeline there)."""
    pipeline = {t for _line, t in imported_modules(PACKAGE / "pipeline.py")}
    assert "reprobox.lock.lock_environment" in pipeline
    assert "reprobox.build.render" in pipeline
    api = {t for _line, t in imported_modules(PACKAGE / "api.py")}
    assert "reprobox.pipeline" in api


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_no_stage_imports_a_later_one(stage: str) -> None:
    assert (PACKAGE / stage).is_dir()
    assert _violations(stage) == []
