"""The import rule of docs/architecture.md, enforced.

Every module of the package sits in one layer. A module may import its own package and anything
in a lower layer; never a higher layer, never a sibling package of its own layer. (payload/ runs
inside other interpreters and imports the standard library only: tests/unit/test_payload.py.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reprobox"

# The layers of docs/architecture.md, lowest first. Keep the two in step.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "templates", "lazy", "names"),
    ("termsafe", "progress", "payload"),
    ("safefs", "redact", "proc", "templating"),
    ("model", "layout"),
    ("store", "diff"),
    ("workspace", "capture", "captured"),
    ("lock",),
    ("engine",),
    ("base",),
    ("build",),
    ("registry",),
    ("backends",),
    ("outcome",),
    ("run",),
    ("verify",),
    ("fanout", "pr", "doctor"),
    ("pipeline",),
    ("api",),
    ("render",),
    ("cli", "__main__"),
    ("entry",),
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _unit(module: str) -> str:
    """The architectural unit of a module: the first name below ``reprobox``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(target, node, at_top) for every import in the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
    top = set()
    for node in tree.body:
        top.add(id(node))
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` / version switches
            top.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Try):  # `try: import tomllib except ImportError: ...`
            top.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node, id(node) in top))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "reprobox" or (node.level and not node.module):
                # `from . import x` / `from reprobox import x`: the names are the modules
                for alias in node.names:
                    found.append((f"{target}.{alias.name}", node, id(node) in top))
            else:
                found.append((target, node, id(node) in top))
    return found


MODULES = _modules()


def test_every_module_has_a_layer() -> None:
    missing = sorted({_unit(m) for m, _ in MODULES if _unit(m) and _unit(m) not in LAYER_OF})
    assert missing == [], f"add these to LAYERS and docs/architecture.md: {missing}"


def _upward(module: str, path: Path) -> list[str]:
    """The imports of ``module`` that point up, or sideways to another unit of its layer."""
    unit = _unit(module)
    bad = []
    for target, node, _ in _imports(module, path):
        other = _unit(target) if target.startswith("reprobox.") else ""
        if not unit or not other or other == unit or other not in LAYER_OF:
            continue
        if LAYER_OF[other] >= LAYER_OF[unit]:
            bad.append(
                f"line {node.lineno}: {target} (layer {LAYER_OF[other]} >= {LAYER_OF[unit]})"
            )
    return bad


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(module: str, path: Path) -> None:
    bad = _upward(module, path)
    assert bad == [], f"{module} imports upward or sideways: {bad}"


def test_the_rule_catches_an_upward_a_sideways_and_a_lazy_import(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(
        "from ..model import Environment\n"  # down: fine
        "from ..build import render\n"  # capture -> build: up
        "from .. import workspace\n"  # capture -> workspace: sideways (same layer)
        "def f():\n"
        "    from ..run import plan_run\n",  # up, and inside a function
        encoding="utf-8",
    )
    bad = _upward("reprobox.capture.fake", fake)
    assert [b.split(":")[1].split()[0] for b in bad] == [
        "reprobox.build",
        "reprobox.workspace",
        "reprobox.run",
    ]


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_sit_at_module_top(module: str, path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = []
    for target, node, at_top in _imports(module, path):
        if at_top:
            continue
        here = lines[node.lineno - 1]
        above = lines[node.lineno - 2] if node.lineno > 1 else ""
        if "# lazy:" not in here and "# lazy:" not in above:
            bad.append(f"line {node.lineno}: {target} (a lazy import needs a `# lazy: reason`)")
    assert bad == [], f"{module}: imports inside functions: {bad}"


def test_the_layer_table_of_the_docs_is_layers() -> None:
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line.split("|") for line in doc.splitlines() if re.match(r"\| \d+ \|", line)]
    table = [
        (int(cells[1]), tuple(n.rstrip("/") for n in re.findall(r"`([^`]+)`", cells[2])))
        for cells in rows
    ]
    assert table == list(enumerate(LAYERS))
