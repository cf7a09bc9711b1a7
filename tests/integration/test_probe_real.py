"""The probe in real interpreters and real venvs, with the real dpkg database.

Network tests build a venv with numpy from the index, an editable package living in a git
repository and a ``git+file://`` install, then capture it from outside (the test interpreter,
like a pipx-installed reprobox) and from inside (the venv's own interpreter running reprobox).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import packaging
import pytest

from reprobox.capture import python as py
from reprobox.capture import system

from ..conftest import git, require, require_pyenv_python

ROOT = Path(__file__).resolve().parents[2]
HAS_DPKG = system.package_manager() == "dpkg"


def _project(where: Path, name: str, version: str = "0.1.0") -> Path:
    pkg = where / "src" / name.replace("-", "_")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (where / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    )
    return where


def _pip(python: Path, *args: str, env: dict | None = None) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )


# --------------------------------------------------------------------------- offline


def test_probe_of_the_running_interpreter_is_complete():
    """Every distribution importlib.metadata sees, and nothing else (no PYTHONPATH leak)."""
    import importlib.metadata as md

    raw = py.run_probe(Path(sys.executable))
    result = py.parse_probe(raw, ROOT)
    ours = {(p.name, p.version) for p in result.packages}
    seen: dict[str, str] = {}
    for dist in md.distributions():
        name = py.canonical_name(dist.metadata["Name"] or "")
        seen.setdefault(name, dist.version)
    extra_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not extra_path:
        assert ours == set(seen.items())
    assert result.interpreter.version.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    editable = [p for p in result.packages if p.name == "reprobox"]
    if editable and editable[0].source.kind == "directory":
        assert editable[0].source.in_repo and editable[0].source.path == "."


@pytest.mark.parametrize("version", ["3.8", "3.9", "3.12", "3.13"])
def test_probe_runs_on_other_cpython_versions(version, tmp_path):
    python = require_pyenv_python(version)
    raw = py.run_probe(python, cache_dir=tmp_path)
    result = py.parse_probe(raw, tmp_path)
    assert result.interpreter.version.startswith(version + ".")
    assert result.interpreter.abi == "cp" + version.replace(".", "")
    assert result.interpreter.kind == "pyenv"
    assert any(u == "<python>" for users in result.library_users.values() for u in users)


def test_system_python_with_debian_egg_info():
    require(Path("/usr/bin/python3").exists(), "the distribution's Python (/usr/bin/python3)")
    result = py.parse_probe(py.run_probe(Path("/usr/bin/python3")), ROOT)
    assert result.interpreter.kind == "system"
    assert result.packages, "Debian's dist-packages hold at least pip or setuptools"


def _base_python() -> Path:
    """The interpreter outside any venv (a venv hides the user site-packages)."""
    if sys.prefix == sys.base_prefix:
        return Path(sys.executable)
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        cand = Path(sys.base_prefix) / "bin" / name
        if cand.exists():
            return cand
    return Path(getattr(sys, "_base_executable", sys.executable))


@pytest.mark.network
def test_user_site_is_seen_like_a_normal_run(tmp_path):
    base = _base_python()
    proj = _project(tmp_path / "userproj", "user-site-demo", "4.5.6")
    env = {**os.environ, "PYTHONUSERBASE": str(tmp_path / "userbase")}
    env.pop("PYTHONNOUSERSITE", None)
    # The wheel is built where a build backend can be had (the index); the base interpreter then
    # installs it into its user site with no index and nothing to build.
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(proj)],
        check=True,
        capture_output=True,
        text=True,
    )
    _pip(base, "--user", "--no-deps", "--no-index", str(next(wheels.glob("*.whl"))), env=env)
    old = dict(os.environ)
    try:
        os.environ.update({"PYTHONUSERBASE": str(tmp_path / "userbase")})
        os.environ.pop("PYTHONNOUSERSITE", None)
        seen = {d["name"]: d for d in py.run_probe(base)["distributions"]}
        assert seen["user-site-demo"]["version"] == "4.5.6"
        os.environ["PYTHONNOUSERSITE"] = "1"
        hidden = {d["name"] for d in py.run_probe(base)["distributions"]}
        assert "user-site-demo" not in hidden
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_real_dpkg_owns_the_c_library(tmp_path):
    require(HAS_DPKG, "a dpkg-based system")
    import ctypes.util

    libc = ctypes.util.find_library("c")  # "libc.so.6"
    raw = py.run_probe(Path(sys.executable))
    result = py.parse_probe(raw, ROOT)
    path = result.needed_libraries.get(libc or "libc.so.6")
    assert path, "the interpreter itself needs the C library"
    packages, unowned = system.owning_packages(
        [path, "/nonexistent/libghost.so.1"], {path: ["libc.so.6"]}, cache_dir=tmp_path
    )
    names = {p.name: p for p in packages}
    assert "libc6" in names and names["libc6"].libraries == ("libc.so.6",)
    assert names["libc6"].version and names["libc6"].arch
    assert unowned == ["/nonexistent/libghost.so.1"]
    again = system.owning_packages(
        [path, "/nonexistent/libghost.so.1"], {path: ["libc.so.6"]}, cache_dir=tmp_path
    )
    assert again == (packages, unowned)


def test_list_scan_agrees_with_dpkg_query():
    """The in-process scan of /var/lib/dpkg/info gives what `dpkg-query -S` gives."""
    require(HAS_DPKG, "a dpkg-based system")
    raw = py.run_probe(Path(sys.executable))
    result = py.parse_probe(raw, ROOT)
    paths = sorted(result.libraries_by_path())
    variants = {v for p in paths for v in system.path_variants(p)}
    scanned = system._dpkg_scan_lists(variants)
    queried = system._dpkg_search(variants)
    assert scanned == {k: v for k, v in queried.items() if k in variants}
    # the lists read ahead (while a capture's probe runs) answer the same
    ahead = system.DpkgLists.read()
    assert system._dpkg_scan_lists(variants, system.DPKG_INFO, ahead) == scanned


# --------------------------------------------------------------------------- real venvs (index)


@pytest.fixture(scope="module")
def science_venv(tmp_path_factory):
    """numpy from the index + an editable package in a git repo + a git+file:// install."""
    base = tmp_path_factory.mktemp("probe-real")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    _project(repo / "pkg", "Editable_Demo", "0.2.0")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "init")
    vcs = _project(base / "vcs", "vcs-demo", "1.2.3")
    git(vcs, "init", "-q", "-b", "main")
    git(vcs, "add", ".")
    git(vcs, "commit", "-q", "-m", "v1")
    commit = git(vcs, "rev-parse", "HEAD").strip()
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _pip(python, "numpy", "-e", str(repo / "pkg"), f"git+file://{vcs}")
    return {"repo": repo, "python": python, "commit": commit, "vcs": vcs, "venv": env_dir}


def _check_science(result, ctx):
    pkgs = {p.name: p for p in result.packages}
    numpy_version = subprocess.run(
        [str(ctx["python"]), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    numpy = pkgs["numpy"]
    assert numpy.version == numpy_version
    assert numpy.source.kind == "index" and numpy.installer == "pip" and numpy.requested
    assert any("manylinux" in t for t in numpy.wheel_tags)
    editable = pkgs["editable-demo"]
    assert editable.display_name == "Editable_Demo"
    assert editable.source.to_dict() == {
        "kind": "directory",
        "path": "pkg",
        "editable": True,
        "in_repo": True,
    }
    vcs = pkgs["vcs-demo"].source
    assert (vcs.kind, vcs.vcs, vcs.commit) == ("vcs", "git", ctx["commit"])
    assert vcs.url == f"file://{ctx['vcs']}"
    assert result.interpreter.kind == "venv"
    numpy_libs = {s for s, users in result.library_users.items() if "numpy" in users}
    assert numpy_libs, "numpy's extension modules need system libraries"
    assert not any("openblas" in s for s in result.needed_libraries), "bundled, not system"
    return numpy_libs


@pytest.mark.network
@pytest.mark.slow
def test_capture_from_outside_the_venv(science_venv, tmp_path):
    ctx = science_venv
    target = py.find_target_python(None, {"VIRTUAL_ENV": str(ctx["venv"]), "PATH": ""})
    assert target == ctx["python"]
    raw = py.run_probe(target, cache_dir=tmp_path)
    result = py.parse_probe(raw, ctx["repo"])
    numpy_libs = _check_science(result, ctx)
    if HAS_DPKG:
        by_path = {p: s for p, s in result.libraries_by_path().items() if set(s) & numpy_libs}
        packages, unowned = system.owning_packages(sorted(by_path), by_path)
        names = {p.name for p in packages}
        assert "libc6" in names
        assert unowned == []
        if "libgcc_s.so.1" in numpy_libs:
            assert "libgcc-s1" in names
    # a second capture reads the cache and finds the same
    again = py.parse_probe(py.run_probe(target, cache_dir=tmp_path), ctx["repo"])
    assert again.packages == result.packages
    assert again.needed_libraries == result.needed_libraries
    assert again.raw["native"]["cache_misses"] == 0 and again.raw["native"]["cache_hits"]


@pytest.mark.network
@pytest.mark.slow
def test_capture_from_inside_the_venv(science_venv):
    """The venv's own interpreter runs reprobox (here from the source tree) and probes itself."""
    ctx = science_venv
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from reprobox.capture import python as py\n"
        "t = py.find_target_python()\n"
        "r = py.parse_probe(py.run_probe(t), Path(sys.argv[1]))\n"
        "print(json.dumps({'target': str(t), 'packages': [p.to_dict() for p in r.packages],"
        " 'libs': r.needed_libraries}))\n"
    )
    # reprobox's own dependencies as an install would bring them (packaging, which the record
    # grammars use), and nothing else: the venv under test stays as it is.
    deps = ctx["repo"].parent / "reprobox-deps"
    deps.mkdir(exist_ok=True)
    if not (deps / "packaging").exists():
        (deps / "packaging").symlink_to(Path(packaging.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("CONDA_PREFIX",)}
    env.update(
        {
            "VIRTUAL_ENV": str(ctx["venv"]),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{deps}",
            "PATH": f"{ctx['venv'] / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    out = subprocess.run(
        [str(ctx["python"]), "-c", code, str(ctx["repo"])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    inside = json.loads(out)
    assert inside["target"] == str(ctx["python"])
    outside = py.parse_probe(py.run_probe(ctx["python"]), ctx["repo"])
    assert inside["packages"] == [p.to_dict() for p in outside.packages]
    assert inside["libs"] == outside.needed_libraries
