"""Shared test plumbing.

Integration tests need the real things: a Docker daemon, DVC, the package index. Locally a missing
one skips those tests; on CI (``CI`` set) it fails them, so a green CI means they really ran.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ON_CI = bool(os.environ.get("CI"))

# The test extra installs its programs (dvc, uv, zizmor) beside the interpreter running the
# tests; the tests and the code under test call them by name, as on a user's PATH.
_VENV_BIN = str(Path(sys.executable).parent)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _VENV_BIN + os.pathsep + os.environ.get("PATH", "")

# A test run started in the background by a shell without job control (`cmd &` in a script)
# inherits SIGINT ignored, and so would every process the tests start: the Ctrl-C tests would
# then see no interrupt at all. A handler here makes Python's own the default again, here and
# (a handled signal is reset to its default on exec) in every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (on CI) when a real component is missing."""
    if ok:
        return
    if ON_CI:
        pytest.fail(f"{what} is required on CI; .ci/run must install and start it")
    pytest.skip(f"{what} not available here")


def require_tool(name: str, what: str | None = None) -> str:
    """The path of program ``name``, through :func:`require` (``what`` says how to get it).

    Looked for on PATH, then beside the interpreter running the tests: the test extra installs
    its programs (uv, dvc, zizmor) into the virtualenv, which need not be on PATH."""
    beside = Path(sys.executable).parent / name
    path = shutil.which(name) or (str(beside) if os.access(beside, os.X_OK) else None)
    require(path is not None, what or f"`{name}` on PATH (scripts/setup.sh installs it)")
    return str(path)


def require_module(name: str, what: str | None = None) -> ModuleType:
    """Module ``name`` (a test dependency: ``pip install -e '.[test]'``), through ``require``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, what or f"the Python module {name} (pip install -e '.[test]')")
        raise  # not reached: require skipped or failed


PYENV_VERSIONS = Path(os.path.expanduser("~/.pyenv/versions"))


def require_pyenv_python(version: str) -> Path:
    """The newest ``python<version>`` pyenv built (``version`` such as "3.9" or "2.7.18")."""
    major_minor = ".".join(version.split(".")[:2])
    exact = sorted(PYENV_VERSIONS.glob(f"{version}/bin/python{major_minor}"))
    found = exact or sorted(PYENV_VERSIONS.glob(f"{version}.*/bin/python{major_minor}"))
    require(bool(found), f"CPython {version} built by pyenv (scripts/setup.sh installs it)")
    return found[-1]


def _docker_answers() -> bool:
    client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if not client:
        return False
    try:
        return subprocess.run([client, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _index_answers() -> bool:
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                "/tmp/reprobox-index-probe",
                "--quiet",
                "six==1.16.0",
            ],
            capture_output=True,
            timeout=120,
        )
        return out.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    require(_docker_answers(), "a running Docker daemon")


@pytest.fixture(scope="session")
def index_access() -> None:
    require(_index_answers(), "the package index")


@pytest.fixture(scope="session")
def dvc_cli() -> str:
    """A ``dvc`` program: on PATH, or the one installed with reprobox (``reprobox[dvc]``)."""
    import sys

    beside = Path(sys.executable).parent / "dvc"
    path = shutil.which("dvc") or (str(beside) if beside.is_file() else None)
    require(path is not None, "DVC (`dvc` on PATH, or `pip install 'reprobox[dvc]'`)")
    return str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marked tests get the matching fixture, so a marker alone is enough to require the thing."""
    for item in items:
        names = {m.name for m in item.iter_markers()}
        fixtures = getattr(item, "fixturenames", None)
        if fixtures is None:
            continue
        # Parametrised items share one list: each gets its own, so one case's marker does not
        # make its siblings require the thing.
        fixtures = item.fixturenames = list(fixtures)  # type: ignore[attr-defined]
        if "docker" in names and "docker_daemon" not in fixtures:
            fixtures.append("docker_daemon")
        if "network" in names and "index_access" not in fixtures:
            fixtures.append("index_access")
        if "dvc" in names and "dvc_cli" not in fixtures:
            fixtures.append("dvc_cli")


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """An empty-but-committed git repository."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "init")
    return repo
