"""Templates compiled once per user: a second process renders every golden Dockerfile from the
bytecode cache in ``XDG_CACHE_HOME`` without compiling, byte for byte the same; a damaged cache
entry is compiled again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RENDER_ALL = """
import sys
import jinja2
if sys.argv[1] == "no-compile":
    def refuse(self, *a, **k):
        raise AssertionError("a template was compiled although its bytecode was cached")
    jinja2.Environment.compile = refuse
from tests.unit.build.test_render import CASES, test_golden
for name in sorted(CASES):
    test_golden(name)
print("rendered", len(CASES))
"""


def _render(xdg: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    env.pop("REPROBOX_UPDATE_GOLDEN", None)
    return subprocess.run(
        [sys.executable, "-c", RENDER_ALL, mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_second_process_renders_the_golden_files_without_compiling(tmp_path):
    first = _render(tmp_path, "compile")
    assert first.returncode == 0, first.stderr
    cached = list((tmp_path / "reprobox" / "templates").glob("__jinja2_*.cache"))
    assert cached, "no template bytecode was kept"
    second = _render(tmp_path, "no-compile")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_a_damaged_cache_entry_is_compiled_again(tmp_path):
    assert _render(tmp_path, "compile").returncode == 0
    for entry in (tmp_path / "reprobox" / "templates").glob("__jinja2_*.cache"):
        entry.write_bytes(b"not bytecode")
    again = _render(tmp_path, "compile")
    assert again.returncode == 0, again.stderr
    refused = _render(tmp_path, "no-compile")  # the entries were rewritten by the compile
    assert refused.returncode == 0, refused.stderr


def test_an_unwritable_cache_still_renders(tmp_path):
    blocker = tmp_path / "xdg"
    blocker.write_text("a file where the cache folder would be")
    done = _render(blocker, "compile")
    assert done.returncode == 0, done.stderr
