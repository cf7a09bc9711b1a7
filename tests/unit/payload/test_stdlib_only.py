"""Every payload module runs in an interpreter that is not reprobox's: the standard library is
all it may import (py-rattler, shipped next to it, for ``rattler_install``), and it imports
under ``python -I -S`` (no site-packages, no PYTHON* variables, no script folder)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from reprobox import payload

#: Imports a payload module may make beyond the standard library, and why.
SHIPPED_WITH = {"rattler_install": {"rattler"}}  # py-rattler travels with it into the image


def imported_roots(source: str) -> set[str]:
    """The top-level names of every import in ``source``, at any depth; a relative import
    (into reprobox) is named ``.``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else (node.module or "").split(".")[0])
    return names


def test_the_import_reader_sees_third_party_relative_and_nested_imports() -> None:
    source = (
        "import os\nfrom docker import types\n"
        "def f():\n    from .. import proc\n    import jinja2.sandbox\n"
    )
    assert imported_roots(source) == {"os", "docker", ".", "jinja2"}


@pytest.mark.parametrize("name", payload.MODULES)
def test_payload_module_imports_the_standard_library_only(name: str) -> None:
    roots = imported_roots(payload.source(name).decode("utf-8"))
    assert roots, f"{name}.py: the reader found no import at all"
    assert "." not in roots, f"{name}.py imports from the reprobox package"
    allowed = set(sys.stdlib_module_names) | {"__future__"} | SHIPPED_WITH.get(name, set())
    assert roots <= allowed, f"{name}.py imports {sorted(roots - allowed)}"


@pytest.mark.parametrize("name", payload.MODULES)
def test_payload_module_imports_in_a_bare_isolated_interpreter(name: str) -> None:
    folder = str(payload.script(name).parent)
    code = (
        f"import sys; sys.path.insert(0, {folder!r}); import {name}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('reprobox', 'rattler')))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, f"{name}.py does not import under -I -S:\n{done.stderr}"
    assert done.stdout.strip() == "[]", f"{name}.py pulled in {done.stdout.strip()}"


def test_unknown_payload_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'sitecustomize'"):
        payload.script("sitecustomize")


def test_every_module_in_the_payload_folder_is_listed() -> None:
    folder = payload.script("probe").parent
    found = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    assert found == set(payload.MODULES)
