"""A two-part build's system part is built while the host fetches the wheels and assembles the
context; a failure on either side stops or reports the other, and no intermediate tag is left.

The engine is a fake here (the real two-part build is in tests/integration/test_build_real.py);
the fetch is replaced by one that waits for the system part's build to have started, so a build
that ran them one after the other fails these tests instead of passing them slowly."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

import reprobox.build.builder as build_mod
from reprobox.build import Fetched, build_experiment
from reprobox.build.context import SYSTEM_DOCKERFILE
from reprobox.engine import BuildKitClient, BuildRequest, BuildStopped, EngineBuild
from reprobox.engine.command import run_build
from reprobox.engine.logs import StepLog
from reprobox.errors import EngineError, IndexUnavailable
from reprobox.store import Store

from ...conftest import git
from ...factories import FIXTURES, small, with_env

LOCK = (FIXTURES / "requirements.lock").read_text()
WAIT = 20.0  # seconds a side waits for the other before the test calls it sequential


class FakeEngine:
    """Builds nothing; records each request and lets a test script the system part."""

    def __init__(self, system: Any = None) -> None:
        self.requests: list[BuildRequest] = []
        self.system_started = threading.Event()
        self.system = system or (lambda request: EngineBuild("sha256:system", 0.1))
        self.tags: dict[str, str] = {}
        self.removed: list[str] = []

    def available(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return {"server_version": "20.10.24"}  # no `RUN --network`: a two-part build

    def buildkit(self) -> BuildKitClient:
        return BuildKitClient(("docker", "build"), {}, "fake")

    def ensure_image(self, ref: str, hint: str) -> None:
        pass

    def build(self, request: BuildRequest, progress: Any = None) -> EngineBuild:
        self.requests.append(request)
        if request.tag.startswith("reprobox/system:"):
            self.system_started.set()
            built = self.system(request)
            self.tags[request.tag] = built.image_id
            return built
        return EngineBuild("sha256:final", 0.1)

    def image_id(self, tag: str) -> Optional[str]:
        return self.tags.get(tag)

    def remove_image(self, tag: str) -> None:
        self.removed.append(tag)
        self.tags.pop(tag, None)


def _stored(repo: Path):  # type: ignore[no-untyped-def]
    (repo / "pyproject.toml").write_text('[project]\nname = "mypkg"\nversion = "0.1.0"\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project")
    exp, env = small()
    commit = git(repo, "rev-parse", "HEAD").strip()
    exp = with_env(replace(exp, git=replace(exp.git, commit=commit, patch=None, dirty=False)), env)
    files = {"requirements.lock": LOCK, "pylock.toml": (FIXTURES / "pylock.toml").read_text()}
    return Store(repo).save(exp, env, files)


@pytest.fixture
def setup(git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stored = _stored(git_repo)
    return Store(git_repo), stored


def _fetch_after_system(engine: FakeEngine, seen: dict[str, bool], error: Any = None):  # type: ignore[no-untyped-def]
    def fetch(*args: Any) -> Fetched:
        seen["system started during the fetch"] = engine.system_started.wait(WAIT)
        if error is not None:
            raise error
        return Fetched((), 0)

    return fetch


def test_the_system_part_is_built_while_the_host_fetches(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, stored = setup
    fetch_done = threading.Event()
    seen: dict[str, bool] = {}

    def system(request: BuildRequest) -> EngineBuild:
        seen["fetch ended during the system part"] = fetch_done.wait(WAIT)
        return EngineBuild("sha256:system", 0.1)

    engine = FakeEngine(system)
    inner = _fetch_after_system(engine, seen)

    def fetch(*args: Any) -> Fetched:
        try:
            return inner(*args)
        finally:
            fetch_done.set()

    monkeypatch.setattr(build_mod, "get_engine", lambda: engine)
    monkeypatch.setattr(build_mod, "fetch_artifacts", fetch)
    lines: list[str] = []
    result = build_experiment(store, stored, tag="demo:test", progress=lines.append)

    assert seen == {
        "system started during the fetch": True,
        "fetch ended during the system part": True,
    }
    system_req, python_req = engine.requests
    assert system_req.tag.startswith("reprobox/system:")
    # its own small context: the Dockerfile, no wheels, no code
    assert system_req.dockerfile == system_req.context / SYSTEM_DOCKERFILE
    assert sorted(p.name for p in system_req.context.iterdir()) == [
        ".dockerignore",
        SYSTEM_DOCKERFILE,
        "tools",
    ]
    assert "System packages" in system_req.dockerfile.read_text()
    assert system_req.network is None and system_req.secrets  # the network, the CA secret
    # the Python part: from the system part, network off, no secret
    assert f"FROM {system_req.tag}" in python_req.dockerfile.read_text()
    assert python_req.network == "none" and not python_req.secrets
    assert engine.removed == [system_req.tag]  # no intermediate tag left behind
    assert result.image_id == "sha256:final" and "build-system" in result.timings


def test_a_failed_fetch_stops_the_system_part_and_is_the_error(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, stored = setup
    stopped = threading.Event()

    def system(request: BuildRequest) -> EngineBuild:
        assert request.stop is not None
        if request.stop.wait(WAIT):  # a long apt step, until it is stopped
            stopped.set()
            raise BuildStopped(f"the build of {request.tag} was stopped")
        return EngineBuild("sha256:system", 0.1)

    engine = FakeEngine(system)
    seen: dict[str, bool] = {}
    failure = IndexUnavailable("cannot reach the index", "check the network")
    monkeypatch.setattr(build_mod, "get_engine", lambda: engine)
    monkeypatch.setattr(build_mod, "fetch_artifacts", _fetch_after_system(engine, seen, failure))
    with pytest.raises(IndexUnavailable) as caught:
        build_experiment(store, stored, tag="demo:test")
    assert caught.value is failure  # the fetch's own error, not the stopped build's
    assert seen == {"system started during the fetch": True}
    assert stopped.is_set()
    assert len(engine.requests) == 1  # the Python part never started
    assert engine.removed == []  # stopped before it was tagged: nothing to remove


def test_a_failed_system_part_is_the_error_once_the_fetch_is_done(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, stored = setup

    def system(request: BuildRequest) -> EngineBuild:
        raise EngineError("building the system part failed at apt-get install", "fix apt")

    engine = FakeEngine(system)
    seen: dict[str, bool] = {}
    monkeypatch.setattr(build_mod, "get_engine", lambda: engine)
    monkeypatch.setattr(build_mod, "fetch_artifacts", _fetch_after_system(engine, seen))
    with pytest.raises(EngineError, match="apt-get install"):
        build_experiment(store, stored, tag="demo:test")
    assert seen == {"system started during the fetch": True}
    assert [r.tag.split(":")[0] for r in engine.requests] == ["reprobox/system"]


class _Lines(StepLog):
    def __init__(self, stop: threading.Event) -> None:
        super().__init__(None)
        self.stop = stop
        self.lines: list[str] = []

    def feed(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) == 3:
            self.stop.set()


def test_a_stopped_build_ends_its_client(tmp_path: Path) -> None:
    """The client command (here a shell that prints forever) is terminated at the next line."""
    stop = threading.Event()
    script = 'echo "$$"; while :; do echo step; sleep 0.05; done'
    request = BuildRequest(tmp_path, tmp_path / "Dockerfile", "demo:test", stop=stop)
    log = _Lines(stop)
    with pytest.raises(BuildStopped, match="demo:test"):
        run_build(("sh", "-c", script, "sh"), dict(os.environ), request, log, sys.exit)
    pid = int(log.lines[0])
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(pid, 0)
    assert log.lines[1:] == ["step", "step"]


def test_an_engine_that_cannot_answer_never_hides_the_builds_own_error(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system part failed and the daemon went away: the error reported is the build's;
    the removal of the tag is attempted, and its failure is a warning."""
    store, stored = setup

    def system(request: BuildRequest) -> EngineBuild:
        raise EngineError("building the system part failed: the daemon went away", "restart it")

    engine = FakeEngine(system)

    def no_answer(tag: str) -> Optional[str]:
        raise EngineError(f"cannot inspect image {tag}: connection refused")

    def no_removal(tag: str) -> None:
        raise EngineError(f"cannot remove {tag}: connection refused")

    monkeypatch.setattr(engine, "image_id", no_answer)
    monkeypatch.setattr(engine, "remove_image", no_removal)
    monkeypatch.setattr(build_mod, "get_engine", lambda: engine)
    monkeypatch.setattr(build_mod, "fetch_artifacts", _fetch_after_system(engine, {}))
    lines: list[str] = []
    with pytest.raises(EngineError, match="the daemon went away"):
        build_experiment(store, stored, tag="demo:test", progress=lines.append)
    assert any(
        line.startswith("warning: could not remove the intermediate image reprobox/system:")
        for line in lines
    ), lines
