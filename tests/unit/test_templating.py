"""Templates compiled once: a second process renders every golden Dockerfile from the bytecode
cache without compiling, byte for byte the same; a damaged cache entry is compiled again. The
cache is kept beside the templates, as Python keeps bytecode, where that folder is the user's
own and bytecode may be written; else in ``XDG_CACHE_HOME``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]

RENDER_ALL = """
import sys
from pathlib import Path
import jinja2
from reprobox import templating
templating.PACKAGE_CACHE = Path(sys.argv[2])
if sys.argv[1] == "no-compile":
    def refuse(self, *a, **k):
        raise AssertionError("a template was compiled although its bytecode was cached")
    jinja2.Environment.compile = refuse
from tests.unit.build.test_render import CASES, test_golden
for name in sorted(CASES):
    test_golden(name)
print("rendered", len(CASES))
"""


def _render(
    xdg: Path, mode: str, package: Optional[Path] = None, *, bytecode: bool = False
) -> subprocess.CompletedProcess[str]:
    """Every golden Dockerfile rendered in a process of its own, with ``package`` as the
    folder beside the templates (none: one that cannot be made) and bytecode written or not
    (``PYTHONDONTWRITEBYTECODE``)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    env.pop("REPROBOX_UPDATE_GOLDEN", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    where = package if package is not None else Path("/proc/no-such-folder/__pycache__")
    return subprocess.run(
        [sys.executable, "-c", RENDER_ALL, mode, str(where)],
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


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("__jinja2_*.cache"))


def test_the_compiled_templates_are_kept_beside_them_as_bytecode_is(tmp_path):
    """No user cache needed (a CI job's fresh HOME, a container's): the entries go beside the
    templates, and a second process with an empty user cache compiles nothing."""
    package = tmp_path / "pkg" / "__pycache__"
    package.parent.mkdir()
    first = _render(tmp_path / "xdg1", "compile", package, bytecode=True)
    assert first.returncode == 0, first.stderr
    assert _entries(package), "no template bytecode beside the templates"
    assert not (tmp_path / "xdg1" / "reprobox" / "templates").exists()
    second = _render(tmp_path / "xdg2", "no-compile", package, bytecode=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_no_bytecode_written_means_none_beside_the_templates(tmp_path):
    package = tmp_path / "pkg" / "__pycache__"
    package.parent.mkdir()
    assert _render(tmp_path / "xdg", "compile", package, bytecode=False).returncode == 0
    assert not package.exists() or not _entries(package)
    assert _entries(tmp_path / "xdg" / "reprobox" / "templates")


def test_a_folder_others_may_write_to_is_not_read_from(tmp_path):
    """Compiled code is read back from the folder: one that others may write to, or a link,
    is left alone for the user's cache."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(target)
    for i, folder in enumerate((shared, link)):
        xdg = tmp_path / f"xdg{i}"
        assert _render(xdg, "compile", folder, bytecode=True).returncode == 0
        assert _entries(xdg / "reprobox" / "templates"), folder
    assert not _entries(shared) and not _entries(target)
