"""`reprobox base` without debootstrap or a daemon: interpreter discovery and staging (on this
machine's real interpreter), APT sources parsing, and refusals."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.base import build_base, describe_interpreter, find_interpreter, render_base_dockerfile
from reprobox.base.interpreter import owning_packages, stage_interpreter
from reprobox.base.rootfs import AptSource, _retarget_suite, _sources_file, apt_sources, rootfs_tag
from reprobox.capture import system
from reprobox.errors import UsageError, ValidationError

from ...conftest import require
from ...asserts import refuses


def _relocatable() -> bool:
    interp = describe_interpreter(Path(sys.executable))
    return interp is not None and str(interp.prefix) not in ("/usr", "/")


def test_describe_the_running_interpreter() -> None:
    interp = describe_interpreter(Path(sys.executable))
    assert interp is not None
    assert interp.version == platform.python_version()
    assert interp.implementation == "cpython"
    assert (interp.stdlib / "os.py").is_file()
    assert interp.mm == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_find_and_stage_the_running_interpreter(tmp_path: Path) -> None:
    require(
        _relocatable(), "a relocatable (non-distribution) Python running the tests, such as pyenv's"
    )
    version = platform.python_version()
    interp = find_interpreter(version)
    assert interp.version == version
    dest = tmp_path / "usr-local"
    stage_interpreter(interp, dest)
    mm = interp.mm
    assert (dest / "bin" / f"python{mm}").is_file()
    stdlib = dest / "lib" / f"python{mm}"
    assert (stdlib / "os.py").is_file()
    assert sorted(p.name for p in (stdlib / "site-packages").iterdir()) in ([], ["README.txt"])
    assert not list(stdlib.rglob("__pycache__"))
    assert not (stdlib / "test").exists()
    assert not list(dest.rglob("libpython*.a"))
    if interp.shared:
        assert list((dest / "lib").glob("libpython*.so*"))
    old = interp.build_prefix.encode()
    for data_file in stdlib.glob("_sysconfigdata_*.py"):
        text = data_file.read_bytes()
        assert old not in text and b"/usr/local" in text
    for script in (dest / "bin").iterdir():
        head = script.read_bytes()[:200]
        if head.startswith(b"#!") and b"python" in head.split(b"\n")[0]:
            assert head.startswith(b"#!/usr/local/bin/python")
    # The staged interpreter runs (with its libpython found next to it).
    env = dict(os.environ, LD_LIBRARY_PATH=str(dest / "lib"), PYTHONHOME=str(dest))
    out = subprocess.run(
        [
            str(dest / "bin" / f"python{mm}"),
            "-S",
            "-c",
            "import platform, json; print(platform.python_version())",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == version


def test_a_version_not_installed_here_names_how_to_install_it() -> None:
    with refuses(UsageError, names=["pyenv install 3.99.1", "uv python install 3.99.1"]):
        find_interpreter("3.99.1")


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    with refuses(ValidationError, field="--python", names="'3.11'"):
        build_base("3.11")
    with refuses(ValidationError, field="--python", names="'3.11.7; id'"):
        build_base("3.11.7; id")
    with refuses(ValidationError, field="--os", names="'Bookworm!'"):
        build_base("3.11.7", "Bookworm!")
    with refuses(UsageError, names=["'jammy'", "Debian release"]):
        build_base("3.11.7", "jammy")


def test_apt_sources_both_formats(tmp_path: Path) -> None:
    apt = tmp_path / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (apt / "sources.list").write_text(
        "# old style\ndeb [arch=amd64] http://old.example/debian bullseye main non-free\n"
        "deb-src http://old.example/debian bullseye main\n"
    )
    found = apt_sources(tmp_path)
    assert found == [
        AptSource(
            "http://mirror.example/debian",
            ("bookworm", "bookworm-updates"),
            ("main", "contrib"),
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://old.example/debian", ("bullseye",), ("main", "non-free")),
    ]
    text = _sources_file(found[:2])
    assert "URIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates" in text


def test_suites_are_moved_to_the_requested_release() -> None:
    assert _retarget_suite("bookworm-security", "trixie") == "trixie-security"
    assert _retarget_suite("bookworm", "bullseye") == "bullseye"
    assert _retarget_suite("bookworm/updates", "bullseye") == "bullseye/updates"
    assert _retarget_suite("jammy", "bookworm") is None


def test_rootfs_tag_follows_its_content() -> None:
    a = rootfs_tag("bookworm", ["libssl3", "tzdata"], "http://m/debian")
    assert a == rootfs_tag("bookworm", ["tzdata", "libssl3", "tzdata"], "http://m/debian")
    assert a != rootfs_tag("bookworm", ["tzdata"], "http://m/debian")
    assert a.startswith("reprobox/rootfs:bookworm-")


def test_base_recipe_is_laid_out_like_the_official_image() -> None:
    text = render_base_dockerfile("3.12.1", "trixie", "reprobox/rootfs:trixie-x", "uv build")
    assert text.splitlines()[8] == "FROM reprobox/rootfs:trixie-x"
    assert "PYTHON_VERSION=3.12.1" in text and "LANG=C.UTF-8" in text
    assert 'COPY ["python/", "/usr/local/"]' in text
    assert "ldconfig" in text and "ln -sf python3.12 python3" in text
    assert "ensurepip" in text and 'CMD ["python3"]' in text
    with refuses(ValidationError, field="interpreter source", names="'\"'"):
        render_base_dockerfile("3.12.1", "trixie", "x", 'a "quoted" $source')


def test_library_owners_come_from_the_capture_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    require(system.package_manager() == "dpkg", "a dpkg database")
    ghost = Path("/nonexistent/libghost.so.1")
    owners, unowned = owning_packages([Path("/usr/bin/dpkg-query"), ghost])
    assert owners == {"dpkg"} and unowned == [ghost]
    # Without dpkg, the base copies every library itself: nothing is owned.
    monkeypatch.setattr(system, "package_manager", lambda: None)
    assert owning_packages([Path("/usr/bin/dpkg-query")]) == (set(), [Path("/usr/bin/dpkg-query")])
