"""The two lock files as text: golden files for every kind of entry, credentials never written.

Regenerate the golden files after an intended format change with
``REPROBOX_UPDATE_GOLDEN=1 pytest tests/unit/lock/test_writers.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path


from reprobox.lock.config import IndexConfig
from reprobox.lock.dists import DistFile, Source
from reprobox.lock.pylock import render_pylock, vcs_url
from reprobox.lock.requirements import render_requirements
from reprobox.lock.result import LockedPackage
from reprobox.lock.select import Target
from reprobox.model import PackageSource

from ...conftest import require_module

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "lock" / "golden"
TARGET = Target("3.11.7", "cpython", "cp311", "linux", "x86_64")
DIGEST = "sha256:" + "0" * 64
PRIVATE = Source("https://alice:t0ken@private.example/simple", "index", 0)
EXTRA = Source("https://download.example/whl/cpu", "index", 1)
LINKS = Source("/opt/wheels", "find-links", 2)
CONFIG = IndexConfig(
    index_url=PRIVATE.location, extra_index_urls=(EXTRA.location,), find_links=(LINKS.location,)
)


def _file(
    name: str,
    src: Source,
    digest: str,
    size: int | None = 1000,
    at: str | None = "2024-08-06T20:32:14.124356Z",
) -> DistFile:
    base = src.location if "://" in src.location else "file://" + src.location
    return DistFile(name, f"{base}/files/{name}", src, {"sha256": digest * 64}, size, at)


YAML_WHEEL = "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def _packages() -> list[LockedPackage]:
    return [
        LockedPackage(
            "pyyaml",
            "6.0.2",
            "index",
            (
                _file(YAML_WHEEL, PRIVATE, "a"),
                _file("PyYAML-6.0.2-cp311-cp311-musllinux_1_1_aarch64.whl", PRIVATE, "b"),
                _file("pyyaml-6.0.2.tar.gz", PRIVATE, "c", at="not a date"),
            ),
            PRIVATE,
            installed=YAML_WHEEL,
        ),
        LockedPackage(
            "torch",
            "2.3.0+cpu",
            "index",
            (_file("torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl", EXTRA, "d"),),
            EXTRA,
            installed="torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl",
        ),
        LockedPackage(
            "tiny",
            "1.0+local",
            "index",
            (_file("tiny-1.0+local-py3-none-any.whl", LINKS, "e", at=None),),
            LINKS,
            installed="tiny-1.0+local-py3-none-any.whl",
        ),
        LockedPackage(
            "oldstyle",
            "0.1",
            "index",
            (_file("oldstyle-0.1.tar.bz2", PRIVATE, "f", size=None),),
            PRIVATE,
            built_from_sdist=True,
        ),
        LockedPackage(
            "gitpkg",
            "0.3",
            "vcs",
            origin=PackageSource(
                "vcs",
                url="git@github.com:example/gitpkg.git",
                vcs="git",
                commit="1" * 40,
                subdirectory="python",
            ),
        ),
        LockedPackage(
            "mypkg",
            "0.1.dev0",
            "directory",
            origin=PackageSource("directory", path="src/mypkg", editable=True, in_repo=True),
            repo_path="src/mypkg",
        ),
        LockedPackage(
            "vendored",
            "2.0",
            "archive",
            origin=PackageSource(
                "archive",
                url="file:///repo/vendor/vendored-2.0-py3-none-any.whl",
                hash="sha256=" + "9" * 64,
            ),
            repo_path="vendor/vendored-2.0-py3-none-any.whl",
        ),
        LockedPackage(
            "remote",
            "1.1",
            "archive",
            origin=PackageSource(
                "archive", url="https://files.example/remote-1.1.tar.gz", hash="sha256=" + "8" * 64
            ),
        ),
    ]


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("REPROBOX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; see the module docstring"


def test_requirements_lock_golden():
    text = render_requirements(
        _packages(), target=TARGET, environment_digest=DIGEST, config=CONFIG, tool_version="0.1.0"
    )
    _golden("requirements.lock", text)
    assert "t0ken" not in text and "alice" not in text
    assert "--index-url" not in text.replace("--extra-index-url", "")


def test_pylock_golden_and_valid():
    text = render_pylock(
        _packages(), target=TARGET, environment_digest=DIGEST, tool_version="0.1.0"
    )
    _golden("pylock.toml", text)
    assert "t0ken" not in text and "alice" not in text
    data = tomllib.loads(text)
    pylock = require_module("packaging.pylock", "packaging >= 25 (packaging.pylock)")
    pylock.Pylock.from_dict(data)


def test_comment_text_cannot_start_a_requirement_line():
    hostile = LockedPackage(
        "gitpkg",
        "0.3",
        "vcs",
        origin=PackageSource(
            "vcs",
            url="https://h.example/r.git\n--index-url https://evil.example",
            vcs="git",
            commit="1" * 40,
        ),
    )
    text = render_requirements(
        [hostile],
        target=TARGET,
        environment_digest=DIGEST,
        config=IndexConfig(),
        tool_version="0.1.0",
    )
    assert not any(line.startswith("--index-url") for line in text.splitlines())


def test_vcs_urls_for_pep_751():
    assert vcs_url("git@github.com:org/repo.git", "git") == "ssh://git@github.com/org/repo.git"
    assert vcs_url("git+https://u:p@h.example/r.git", "git") == "https://h.example/r.git"
    assert vcs_url("ssh://git@github.com/org/r.git", "git") == "ssh://git@github.com/org/r.git"
