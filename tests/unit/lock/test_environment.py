"""lock_environment end to end against local indexes: what gets locked, from where, and the files.

The indexes are real (an HTTP server with pages recorded from PyPI, file:// indexes and
find-links folders on disk); the lock files are checked by the tools that consume them: pip
installs requirements.lock in hash-checking mode, packaging.pylock validates pylock.toml, and
uv installs it when present.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.errors import IndexUnavailable, ValidationError
from reprobox.lock import IndexConfig, UnlockablePackages, lock_environment
from reprobox.lock.dists import ReleaseFilter
from reprobox.model import Environment, Interpreter, OSInfo, Package, PackageSource
from tests.fixtures.lock.fakeindex import (
    FakeIndex,
    html_page,
    json_files,
    make_wheel,
    recorded,
    sha256_of,
)

from ...conftest import require, require_module
from ...asserts import refuses

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

INTERP = Interpreter("cpython", "3.11.7", abi="cp311", platform="linux-x86_64")
LINUX = OSInfo(system="Linux", arch="x86_64")
SIX_TAGS = ("py2-none-any", "py3-none-any")
PYYAML_TAGS = ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _env(*packages: Package) -> Environment:
    return Environment(interpreter=INTERP, packages=packages, os=LINUX)


def _hashes(project: str, version: str, names: set[str] | None = None) -> list[str]:
    keep = ReleaseFilter(project, version)
    return sorted(
        f["hashes"]["sha256"]
        for f in json_files(project)
        if keep(f["filename"]) and (names is None or f["filename"] in names)
    )


@pytest.fixture()
def world(tmp_path: Path):
    """An HTTP index (six, pyyaml, a package only published as sdist), a find-links folder with
    a local-version wheel, and a repository with an editable package."""
    sdist_only = {
        "html": html_page(
            "tinybuilt",
            [
                ("/files/tinybuilt-1.0.tar.gz#sha256=" + "ab" * 32, "tinybuilt-1.0.tar.gz"),
                (
                    "/files/tinybuilt-1.0-cp311-cp311-manylinux_2_17_x86_64.whl#sha256="
                    + "cd" * 32,
                    "tinybuilt-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                ),
            ],
        )
    }
    pages = {
        "six": {"json": recorded("six", "json"), "html": recorded("six", "html")},
        "pyyaml": {"json": recorded("pyyaml", "json")},
        "tinybuilt": sdist_only,
    }
    links = tmp_path / "wheels"
    links.mkdir()
    local = make_wheel(links, "tiny", "1.0+cpu")
    repo = tmp_path / "repo"
    (repo / "src" / "mypkg").mkdir(parents=True)
    with FakeIndex(pages) as idx:
        yield {
            "index": idx,
            "config": IndexConfig(index_url=idx.url, find_links=(str(links),), timeout=5.0),
            "local_wheel": local,
            "links": links,
            "repo": repo,
            "cache": tmp_path / "cache",
        }


def _packages() -> list[Package]:
    return [
        Package("six", "1.16.0", wheel_tags=SIX_TAGS, installer="pip"),
        Package("pyyaml", "6.0.2", wheel_tags=PYYAML_TAGS, display_name="PyYAML"),
        Package("tinybuilt", "1.0", wheel_tags=("cp311-cp311-linux_x86_64",)),
        Package("tiny", "1.0+cpu", wheel_tags=("py3-none-any",)),
        Package(
            "gitpkg",
            "0.3",
            source=PackageSource(
                "vcs",
                url="https://github.com/example/gitpkg.git",
                vcs="git",
                commit=COMMIT,
                requested_revision="main",
            ),
        ),
        Package(
            "mypkg",
            "0.1.dev0",
            source=PackageSource(
                "directory", url="file:///ignored", path="src/mypkg", editable=True, in_repo=True
            ),
        ),
    ]


def test_lock_of_a_mixed_environment(world):
    env = _env(*_packages())
    messages: list[str] = []
    result = lock_environment(
        env,
        repo_root=world["repo"],
        config=world["config"],
        cache_dir=world["cache"],
        progress=messages.append,
    )
    req = result.requirements_lock
    by_name = {p.name: p for p in result.packages}

    # six: the installed pure wheel and the sdist, from the HTTP index
    six = by_name["six"]
    assert six.installed == "six-1.16.0-py2.py3-none-any.whl"
    assert sorted(f.sha256 for f in six.files) == _hashes("six", "1.16.0")
    # pyyaml: the installed manylinux wheel plus every Linux cp311 wheel and the sdist
    after = req.split("pyyaml==6.0.2 \\\n", 1)[1].splitlines()
    yaml_block = "\n".join(itertools.takewhile(lambda line: line.startswith("    --hash="), after))
    linux_names = {
        n
        for n in (f["filename"] for f in json_files("pyyaml"))
        if "-6.0.2-cp311-" in n and "linux" in n
    } | {"pyyaml-6.0.2.tar.gz"}
    expected = _hashes("pyyaml", "6.0.2", linux_names)
    assert len(expected) == 6
    got = [
        line.strip().rstrip(" \\").removeprefix("--hash=sha256:")
        for line in yaml_block.splitlines()
        if "--hash=" in line
    ]
    assert got == expected
    # a wheel built on the capture host: its sdist is what gets locked
    assert by_name["tinybuilt"].built_from_sdist
    assert "tinybuilt==1.0 \\\n    --hash=sha256:" + "ab" * 32 + "\n" in req
    # a local version found in a find-links folder
    assert by_name["tiny"].source.kind == "find-links"
    assert f"#     find-links {world['links']}" in req
    assert "\n--" not in req  # no option line: sources come from the installing machine
    assert f"tiny==1.0+cpu \\\n    --hash=sha256:{sha256_of(world['local_wheel'])}" in req
    assert any("tiny==1.0+cpu" in w and "local find-links" in w for w in result.warnings)
    # VCS and directory packages: described, never required (pip would refuse them)
    assert "gitpkg==" not in req and "mypkg==" not in req
    assert f"gitpkg @ git+https://github.com/example/gitpkg.git@{COMMIT}" in req
    assert "editable directory src/mypkg of the repository" in req
    assert "--index-url" not in req
    assert result.files == {"requirements.lock": req, "pylock.toml": result.pylock_toml}
    assert any("looked up" in m for m in messages)

    pylock = tomllib.loads(result.pylock_toml)
    assert pylock["lock-version"] == "1.0"
    assert pylock["environments"] == [
        "python_full_version == '3.11.7' and implementation_name == 'cpython' and "
        "sys_platform == 'linux' and platform_machine == 'x86_64'"
    ]
    entries = {p["name"]: p for p in pylock["packages"]}
    assert entries["pyyaml"]["index"] == world["index"].url
    assert entries["pyyaml"]["sdist"]["name"] == "pyyaml-6.0.2.tar.gz"
    assert all(w["size"] > 0 and "sha256" in w["hashes"] for w in entries["pyyaml"]["wheels"])
    assert entries["gitpkg"]["vcs"] == {
        "type": "git",
        "url": "https://github.com/example/gitpkg.git",
        "requested-revision": "main",
        "commit-id": COMMIT,
    }
    assert entries["mypkg"]["directory"] == {"path": "../../../src/mypkg", "editable": True}
    assert "version" not in entries["mypkg"]
    assert entries["tiny"]["tool"]["reprobox"]["find-links"] == str(world["links"])
    assert entries["tinybuilt"]["tool"]["reprobox"]["built-from-sdist"] is True
    pylock_mod = require_module("packaging.pylock", "packaging >= 25 (packaging.pylock)")
    pylock_mod.Pylock.from_dict(pylock)  # raises on anything PEP 751 does not allow


def test_lock_is_deterministic_and_a_warm_lock_asks_nothing(world):
    env = _env(*_packages())
    first = lock_environment(
        env, repo_root=world["repo"], config=world["config"], cache_dir=world["cache"]
    )
    asked = len(world["index"].project_requests())
    second = lock_environment(
        env, repo_root=world["repo"], config=world["config"], cache_dir=world["cache"]
    )
    assert second.requests == 0 and len(world["index"].project_requests()) == asked
    assert first.files == second.files and first.warnings == second.warnings


def test_every_unlockable_package_is_named_with_the_fix(world, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _env(
        *_packages(),
        Package("notthere", "1.0"),
        Package("six-fork", "2.0"),
        Package("dirpkg", "1.0", source=PackageSource("directory", path=str(outside))),
        Package(
            "localwhl",
            "1.0",
            source=PackageSource(
                "archive",
                url=(tmp_path / "localwhl-1.0-py3-none-any.whl").as_uri(),
                hash="sha256=" + "11" * 32,
            ),
        ),
    )
    with refuses(UnlockablePackages, names=["dirpkg", "localwhl", "notthere", "six-fork"]) as err:
        lock_environment(
            env, repo_root=world["repo"], config=world["config"], cache_dir=world["cache"]
        )
    exc = err.value
    assert [p.name for p in exc.problems] == ["dirpkg", "localwhl", "notthere", "six-fork"]
    text = str(exc)
    assert "cannot lock 4 packages" in text
    assert f"installed from the directory {outside}, outside the repository" in text
    assert "installed from the local file" in text
    assert "no configured index or find-links location has this project" in text
    assert "--no-lock" in exc.hint and "find-links" in exc.hint
    assert exc.partial is not None and "six==1.16.0" in exc.partial.requirements_lock


def test_an_archive_whose_hash_an_index_serves_is_locked_from_the_index(world):
    whl = world["local_wheel"]
    env = _env(
        Package(
            "tiny",
            "1.0+cpu",
            source=PackageSource(
                "archive", url="file:///somewhere/else/" + whl.name, hash="sha256=" + sha256_of(whl)
            ),
        )
    )
    result = lock_environment(
        env, repo_root=world["repo"], config=world["config"], cache_dir=world["cache"]
    )
    assert f"tiny==1.0+cpu \\\n    --hash=sha256:{sha256_of(whl)}" in result.requirements_lock


def test_unreachable_index_raises_index_unavailable(world, tmp_path):
    cfg = IndexConfig(index_url="http://127.0.0.1:9/simple", timeout=2.0, retries=0)
    with refuses(IndexUnavailable, names=["127.0.0.1:9", "reprobox lock EXP"]):
        lock_environment(
            _env(Package("six", "1.16.0", wheel_tags=SIX_TAGS)),
            repo_root=world["repo"],
            config=cfg,
            cache_dir=tmp_path / "c",
        )


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (Package("six", "1.16.0\n--index-url http://evil.example/simple"), "packages[six].version"),
        (Package("six;rm -rf", "1.0"), "packages[six;rm -rf].name"),
        (
            Package("six", "1.0", wheel_tags=("py3-none-any\n--trusted-host evil",)),
            "packages[six].wheel_tags[0]",
        ),
        (
            Package(
                "x",
                "1.0",
                source=PackageSource("vcs", url="https://h/r.git", vcs="git", commit="$(id)"),
            ),
            "packages[x].source.commit",
        ),
        (
            Package("x", "1.0", source=PackageSource("directory", path="../../etc", in_repo=True)),
            "packages[x].source.path",
        ),
    ],
)
def test_hostile_values_are_refused_before_anything_is_asked(world, bad, field):
    with refuses(ValidationError, field=field):
        lock_environment(
            _env(bad), repo_root=world["repo"], config=world["config"], cache_dir=world["cache"]
        )
    assert world["index"].requests == []


def test_cross_platform_platform_name_is_checked(world):
    from reprobox.errors import UsageError

    with refuses(UsageError, names=["windows/amd64", "linux/amd64"]):
        lock_environment(
            _env(),
            repo_root=world["repo"],
            config=world["config"],
            cache_dir=world["cache"],
            platform="windows/amd64",
        )


# --------------------------------------------------------------------------- installers


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def _freeze(python: Path) -> list[str]:
    import json

    out = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; print(json.dumps(sorted("
            "f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=python.parent,
    ).stdout
    return json.loads(out)


@pytest.fixture()
def offline_world(tmp_path: Path):
    """A file:// index of real tiny wheels and a find-links folder: installable, no network."""
    files = tmp_path / "files"
    files.mkdir()
    alpha = make_wheel(files, "alpha", "1.0")
    beta = make_wheel(files, "beta", "2.0", requires=("alpha",))
    (files / "beta-2.0.tar.gz").write_bytes(b"an sdist pip must not pick: the wheel is locked")
    simple = tmp_path / "simple"
    for whl, extra in ((alpha, []), (beta, [("../../files/beta-2.0.tar.gz", "beta-2.0.tar.gz")])):
        name = whl.name.split("-")[0]
        (simple / name).mkdir(parents=True)
        (simple / name / "index.html").write_bytes(
            html_page(name, [(f"../../files/{whl.name}#sha256={sha256_of(whl)}", whl.name), *extra])
        )
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "gamma", "3.0+local")
    config = IndexConfig(index_url=simple.as_uri(), find_links=(str(links),))
    env = _env(
        Package("alpha", "1.0", wheel_tags=("py3-none-any",)),
        Package("beta", "2.0", wheel_tags=("py3-none-any",)),
        Package("gamma", "3.0+local", wheel_tags=("py3-none-any",)),
    )
    return {"config": config, "env": env, "tmp": tmp_path}


def test_pip_installs_requirements_lock_in_hash_checking_mode(offline_world):
    w = offline_world
    require(
        sys.version_info[:2] == (3, 11),
        "Python 3.11 running the tests (the fixture environment is a 3.11 capture)",
    )
    result = lock_environment(
        w["env"], repo_root=w["tmp"], config=w["config"], cache_dir=w["tmp"] / "cache"
    )
    lock = w["tmp"] / "requirements.lock"
    lock.write_text(result.requirements_lock)
    python = _venv(w["tmp"] / "venv")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": w["config"].index_url,
        # the lock names no source: the installing machine's configuration does
        "PIP_FIND_LINKS": " ".join(w["config"].find_links),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(lock),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert _freeze(python) == ["alpha==1.0", "beta==2.0", "gamma==3.0+local"]


def test_uv_installs_pylock_toml(offline_world):
    w = offline_world
    from reprobox.lock.uv import find_uv

    found = find_uv()
    require(found is not None, "uv (pip install -e '.[test]')")
    assert found is not None
    uv = str(found)
    result = lock_environment(
        w["env"], repo_root=w["tmp"], config=w["config"], cache_dir=w["tmp"] / "cache"
    )
    lock_dir = w["tmp"] / ".reprobox" / "experiments" / "abc"
    lock_dir.mkdir(parents=True)
    (lock_dir / "pylock.toml").write_text(result.pylock_toml)
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(w["tmp"] / "uvenv")], check=True)
    python = w["tmp"] / "uvenv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "-p",
            str(python),
            "--offline",
            "--cache-dir",
            str(w["tmp"] / "uvcache"),
            "-r",
            str(lock_dir / "pylock.toml"),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert _freeze(python) == ["alpha==1.0", "beta==2.0", "gamma==3.0+local"]
