"""Shared test plumbing.

Integration tests need the real things: a Docker daemon, DVC, the package index. Locally a missing
one skips those tests; on CI (``CI`` set) it fails them, so a green CI means they really ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ON_CI = bool(os.environ.get("CI"))


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (on CI) when a real component is missing."""
    if ok:
        return
    if ON_CI:
        pytest.fail(f"{what} is required on CI; .ci/run must install and start it")
    pytest.skip(f"{what} not available here")


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
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-d", "/tmp/reprobox-index-probe", "--quiet", "six==1.16.0"],
            capture_output=True, timeout=120,
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
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=env).stdout


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
