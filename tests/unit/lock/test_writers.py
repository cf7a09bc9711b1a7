"""The two lock files as text: golden files for every kind of entry, credentials never written.

Regenerate the golden files after an intended format change with
``REPROBOX_UPDATE_GOLDEN=1 pytest tests/unit/lock/test_writers.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
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


# --------------------------------------------------------------------------- installed sizes


def _recorded(packages: list[LockedPackage]):  # type: ignore[no-untyped-def]
    from reprobox.model import Package

    from ...factories import make_env, with_packages

    return with_packages(make_env(), *(Package(p.name, p.version) for p in packages))


def test_the_installed_wheel_sizes_read_back_from_pylock_are_the_locks_own():
    """The Dockerfile the lock writes cuts its layers by LockResult.installed_sizes; a build of
    the stored experiment by what check_pylock reads back from pylock.toml: the two agree, so
    the committed Dockerfile is the one that gets built."""
    from reprobox.lock.checks import check_pylock
    from reprobox.lock.result import LockResult

    packages = _packages()
    packages[1] = replace(packages[1], files=(replace(packages[1].files[0], size=2_000_000),))
    text = render_pylock(packages, target=TARGET, environment_digest=DIGEST, tool_version="0.1.0")
    result = LockResult("", text, packages=tuple(packages))
    sizes = result.installed_sizes()
    # the installed wheel's size, not another file's; sdist-only and non-index packages: none
    assert sizes == {"pyyaml": 1000, "torch": 2_000_000, "tiny": 1000}
    assert check_pylock(text, _recorded(packages)) == sizes


def test_a_size_pylock_cannot_vouch_for_is_left_out():
    from reprobox.lock.checks import check_pylock

    packages = _packages()[:3]
    env = _recorded(packages)
    head = 'lock-version = "1.0"\n'

    def entry(name: str, version: str, wheels: str, tool: str) -> str:
        return (
            f'[[packages]]\nname = "{name}"\nversion = "{version}"\nwheels = [{wheels}]\n{tool}\n'
        )

    def wheel(file: str, size: str) -> str:
        return f'{{name = "{file}", size = {size}, hashes = {{sha256 = "{"a" * 64}"}}}}'

    ours = "[packages.tool.reprobox]\ninstalled = {}"
    text = head + "".join(
        [
            # a size that is not one: negative, a boolean, a string, beyond any wheel
            entry("pyyaml", "6.0.2", wheel(YAML_WHEEL, "-1"), ours.format(json.dumps(YAML_WHEEL))),
            entry(
                "torch",
                "2.3.0+cpu",
                wheel("torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl", "true"),
                ours.format('"torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"'),
            ),
            # `installed` names no wheel of the entry, or is not a string
            entry(
                "tiny",
                "1.0+local",
                wheel("tiny-1.0+local-py3-none-any.whl", "5"),
                ours.format('"other.whl"'),
            ),
        ]
    )
    assert check_pylock(text, env) == {}
    for tool in ('[packages.tool]\nreprobox = "x"', ours.format("7"), ""):
        odd = head + entry("tiny", "1.0+local", wheel("tiny-1.0+local-py3-none-any.whl", "5"), tool)
        assert check_pylock(odd, env) == {}
    big = head + entry(
        "tiny",
        "1.0+local",
        wheel("tiny-1.0+local-py3-none-any.whl", str(1 << 40)),
        ours.format('"tiny-1.0+local-py3-none-any.whl"'),
    )
    assert check_pylock(big, env) == {}
    fine = big.replace(str(1 << 40), "4096")
    assert check_pylock(fine, env) == {"tiny": 4096}
