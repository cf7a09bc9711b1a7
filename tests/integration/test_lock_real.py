"""The lock against the real index this machine's pip is configured with.

A real virtualenv gets a dozen packages from the real index (compiled ones with platform wheels —
numpy, PyYAML, MarkupSafe, charset-normalizer — and pure ones), reprobox's probe records it, and
the lock made from that record must rebuild it exactly: ``pip install --require-hashes
--no-deps -r requirements.lock`` into a fresh virtualenv gives the same ``pip freeze``, and so
does ``uv pip install -r pylock.toml`` when uv is here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.lock import lock_environment, read_index_config
from reprobox.model import Environment, OSInfo, Package

from ..conftest import require, require_module, require_tool

pytestmark = pytest.mark.network

PINS = [
    "numpy==2.0.2",
    "PyYAML==6.0.2",
    "MarkupSafe==2.1.5",
    "charset-normalizer==3.4.0",
    "six==1.16.0",
    "requests==2.32.3",
    "urllib3==2.2.3",
    "idna==3.10",
    "certifi==2024.8.30",
    "packaging==24.1",
    "attrs==24.2.0",
]


def _run(*argv: str | Path, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", path)
    return path / "bin" / "python"


def _freeze(python: Path, tmp: Path) -> list[str]:
    return _run(python, "-m", "pip", "freeze", "--all", cwd=tmp).splitlines()


def _distributions(python: Path, tmp: Path) -> list[str]:
    code = (
        "import importlib.metadata as m, json; print(json.dumps(sorted("
        "f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions())))"
    )
    return json.loads(_run(python, "-c", code, cwd=tmp))


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A venv with PINS installed by its own pip from the host's configured indexes."""
    from reprobox.capture.python import parse_probe, run_probe

    require(sys.version_info[:2] == (3, 11), "Python 3.11 running the tests (the pins are for it)")
    tmp = tmp_path_factory.mktemp("lock-real")
    python = _venv(tmp / "captured")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", *PINS, cwd=tmp)
    probe = parse_probe(run_probe(python), tmp)
    env = Environment(
        interpreter=probe.interpreter,
        packages=probe.packages,
        os=OSInfo(system="Linux", arch=platform.machine()),
    )
    return {"tmp": tmp, "python": python, "env": env}


def test_requirements_lock_rebuilds_the_exact_freeze(captured):
    tmp = captured["tmp"]
    result = lock_environment(captured["env"], repo_root=tmp, cache_dir=tmp / "cache")
    assert result.warnings == ()
    by_name = {p.name: p for p in result.packages}
    # the installed file is identified for every package, from the real index
    for pkg in captured["env"].packages:
        assert by_name[pkg.name].installed, pkg.name
    numpy = by_name["numpy"]
    assert numpy.installed.endswith("-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert any("aarch64" in f.filename for f in numpy.files)  # a Linux/arm64 rebuild finds one
    assert not any("macosx" in f.filename or "win" in f.filename for f in numpy.files)

    lock = tmp / "requirements.lock"
    lock.write_text(result.requirements_lock)
    fresh = _venv(tmp / "fresh-pip")
    _run(fresh, "-m", "pip", "install", "--require-hashes", "--no-deps", "-r", lock, cwd=tmp)
    assert _freeze(fresh, tmp) == _freeze(captured["python"], tmp)

    # a second lock of the same environment is answered by the cache and is the same text
    again = lock_environment(captured["env"], repo_root=tmp, cache_dir=tmp / "cache")
    assert again.requests == 0 and again.files == result.files


def test_pylock_toml_is_valid_and_uv_installs_it(captured):
    tmp = captured["tmp"]
    result = lock_environment(captured["env"], repo_root=tmp, cache_dir=tmp / "cache")
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(result.pylock_toml)
    pylock = require_module("packaging.pylock", "packaging >= 25 (packaging.pylock)")
    pylock.Pylock.from_dict(data)
    assert all(p.get("index") for p in data["packages"])

    uv = require_tool("uv", "uv (pip install -e '.[test]')")
    where = tmp / ".reprobox" / "experiments" / "0123456789ab"
    where.mkdir(parents=True, exist_ok=True)
    (where / "pylock.toml").write_text(result.pylock_toml)
    _run(uv, "venv", "-q", "-p", captured["python"], tmp / "fresh-uv")
    target = tmp / "fresh-uv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    _run(
        uv,
        "pip",
        "install",
        "-q",
        "-p",
        target,
        "--cache-dir",
        tmp / "uv-cache",
        "-r",
        where / "pylock.toml",
        env=env,
    )
    assert _distributions(target, tmp) == _distributions(captured["python"], tmp)


def test_local_version_from_the_configured_find_links_folder(tmp_path):
    """torch +cpu is served by this machine's find-links folder (/opt/wheels), not by PyPI."""
    config = read_index_config()
    wheel = None
    for folder in config.find_links:
        for candidate in Path(folder).glob("torch-*+cpu-cp311-cp311-*.whl"):
            wheel = candidate
    require(wheel is not None, "a torch +cpu wheel in the configured find-links folders")
    assert wheel is not None
    version = wheel.name.split("-")[1]
    tags = (wheel.name[:-4].split("-", 2)[2],)
    env = Environment(
        interpreter=_interp(),
        os=OSInfo(system="Linux", arch="x86_64"),
        packages=(Package("torch", version, wheel_tags=tags),),
    )
    result = lock_environment(env, repo_root=tmp_path, config=config, cache_dir=tmp_path / "c")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"torch=={version} \\\n    --hash=sha256:{digest}" in result.requirements_lock
    assert f"#     find-links {wheel.parent}" in result.requirements_lock
    assert result.packages[0].source.kind == "find-links"


def test_macos_capture_relocked_for_linux_reports_what_changed(tmp_path):
    """ipykernel on macOS pulls appnope, which Linux does not need: dropped and reported."""
    require_tool("uv", "uv (pip install -e '.[test]')")
    from reprobox.model import Interpreter

    mac = Interpreter("cpython", "3.11.7", abi="cp311", platform="macosx-11.0-arm64")
    env = Environment(
        interpreter=mac,
        os=OSInfo(system="Darwin", arch="arm64"),
        packages=(
            Package("six", "1.16.0", wheel_tags=("py2-none-any", "py3-none-any"), requested=True),
            Package("ipykernel", "6.29.5", wheel_tags=("py3-none-any",), requested=True),
            Package("appnope", "0.1.4", wheel_tags=("py3-none-any",)),
            Package(
                "pyyaml", "6.0.2", wheel_tags=("cp311-cp311-macosx_11_0_arm64",), requested=True
            ),
        ),
    )
    result = lock_environment(
        env, repo_root=tmp_path, cache_dir=tmp_path / "c", platform="linux/arm64"
    )
    changes = {c.name: c for c in result.changed_versions}
    assert changes["appnope"].locked is None
    assert "six" not in changes and "ipykernel" not in changes and "pyyaml" not in changes
    yaml = next(p for p in result.packages if p.name == "pyyaml")
    assert any("aarch64" in f.filename for f in yaml.files)
    assert not any("x86_64" in f.filename or "macosx" in f.filename for f in yaml.files)
    assert "platform_machine == 'aarch64'" in result.pylock_toml


def _interp():
    from reprobox.model import Interpreter

    return Interpreter("cpython", "3.11.7", abi="cp311", platform="linux-x86_64")
