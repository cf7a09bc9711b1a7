"""The benchmarks import reprobox's modules inside functions (they run against any checkout):
every name they import from reprobox must exist, or a benchmark fails only when it is run."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def reprobox_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) of every ``from reprobox... import name`` in benchmarks/."""
    found = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "reprobox":
                found.extend((path.name, node.lineno, node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                found.extend(
                    (path.name, node.lineno, a.name, "")
                    for a in node.names
                    if a.name.split(".")[0] == "reprobox"
                )
    return found


def test_the_benchmarks_import_from_reprobox() -> None:
    # the reader sees them: bench_build, bench_lock and envs import from reprobox
    assert {f for f, *_ in reprobox_imports()} >= {"bench_build.py", "bench_lock.py", "envs.py"}


@pytest.mark.parametrize(
    "where,line,module,name",
    reprobox_imports(),
    ids=lambda v: str(v),
)
def test_every_reprobox_name_a_benchmark_imports_exists(
    where: str, line: int, module: str, name: str
) -> None:
    mod = importlib.import_module(module)
    if name:
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}") is not None, (
            f"benchmarks/{where}:{line} imports {name} from {module}, which has no such name"
        )
