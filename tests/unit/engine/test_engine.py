"""The engine layer: BuildKit, Podman and classic log condensing, client discovery (on stand-in
docker executables that answer like the real clients), a daemon that does not answer, the pieces
Docker and Podman share, real builds through each builder, and what engine/ may import."""

from __future__ import annotations

import ast
import os
import stat
import uuid
from pathlib import Path

import pytest

from reprobox import engine as engine_pkg
from reprobox.engine import (
    BuildLog,
    BuildRequest,
    DockerEngine,
    Engine,
    PodmanEngine,
    find_buildkit_client,
    step_titles,
)
from reprobox.engine.docker import _gpu_request
from reprobox.engine.interface import GpuRequest, OutputCollector
from reprobox.engine.logs import ClassicLog, PodmanLog
from reprobox.engine.logs import build_hint as _build_hint
from reprobox.engine.podman import _gpu_devices
from reprobox.errors import EngineError, UsageError

from ...asserts import refuses
from ...conftest import require
from ...factories import FIXTURES

TITLES = (
    "FROM python:3.11.7-slim-bookworm",
    "System packages that own the native libraries the Python packages load",
    "Locked Python packages, layer 1 of 2",
    "WORKDIR /workspace",
)


def _feed(name: str, titles: tuple[str, ...] = TITLES) -> tuple[BuildLog, list[str]]:
    shown: list[str] = []
    log = BuildLog(shown.append, titles)
    for line in (FIXTURES / name).read_text().splitlines():
        log.feed(line)
    return log, shown


def test_a_real_build_log_is_condensed_to_one_line_per_step() -> None:
    log, shown = _feed("buildkit-ok.log")
    assert shown[0] == "[build 1/4] FROM python:3.11.7-slim-bookworm  (cached)"
    assert (
        "[build 2/4] System packages that own the native libraries the Python packages load  (0.2s)"
    ) in shown
    assert "    Installed 2 packages in 9ms" in shown
    assert shown[-1] == "[build 4/4] WORKDIR /workspace  (0.0s)"
    assert not any("[internal]" in line or "exporting" in line for line in shown)
    assert log.warnings == ["system packages are not pinned: the capture host runs ubuntu jammy"]
    assert (log.steps, log.cached) == (4, 1)


def test_a_fully_cached_rebuild() -> None:
    log, shown = _feed("buildkit-cached.log")
    assert (log.steps, log.cached) == (4, 3)
    assert sum(line.endswith("(cached)") for line in shown) == 3


def test_without_titles_the_instruction_is_shown_without_mounts() -> None:
    _log, shown = _feed("buildkit-ok.log", ())
    assert any(line.startswith('[build 3/4] RUN set -eu; echo "Prepared') for line in shown)


def test_a_failed_step_reports_its_output_with_credentials_stripped() -> None:
    log, shown = _feed(
        "buildkit-fail.log", ("FROM python:3.11.7-slim-bookworm", "Locked Python packages")
    )
    assert shown[-1] == "[build 2/2] Locked Python packages  FAILED"
    text = log.error_text()
    assert text.startswith("step [build 2/2] Locked Python packages:")
    assert "hash mismatch" in text
    assert "hunter2" not in text and "https://private.example/simple/demo/" in text
    assert "reprobox lock" in _build_hint(text)


@pytest.mark.parametrize(
    "output,expected",
    [
        ("Temporary failure in name resolution", "--network host"),
        ("certificate verify failed: self-signed certificate", "CA bundle"),
        ("something else entirely", "--dry-run"),
    ],
)
def test_build_hints(output: str, expected: str) -> None:
    assert expected in _build_hint(output)


def test_step_titles_follow_the_comment_blocks() -> None:
    text = (
        "FROM base\n\n# First section: details.\n# More.\nRUN a \\\n    b\n\n"
        '# Code, at the commit. More words.\nCOPY ["src/", "/w/"]\nRUN c\nENV X=1\n'
        "WORKDIR /w\nLABEL a=b\n"
    )
    assert step_titles(text) == (
        "FROM base",
        "First section",
        'COPY ["src/", "/w/"]',
        "Code, at the commit",
        "WORKDIR /w",
    )


# --------------------------------------------------------------------------- client discovery


def _fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    """An executable answering `docker version` and `docker buildx version` like a real client."""
    folder.mkdir(parents=True)
    path = folder / "docker"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then echo "{version}"; exit 0; fi\n'
        'if [ "$1" = buildx ]; then\n'
        + (
            '  echo "github.com/docker/buildx v0.12.1 30feaa1"; exit 0\n'
            if buildx
            else "  echo \"docker: 'buildx' is not a docker command.\" >&2; exit 1\n"
        )
        + "fi\nexit 1\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_first_docker_on_path_is_skipped_when_it_refuses_buildkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = _fake_docker(tmp_path / "a", "28.2.2", buildx=False)
    old = _fake_docker(tmp_path / "b", "20.10.24+dfsg1", buildx=False)
    monkeypatch.setenv("PATH", f"{new.parent}{os.pathsep}{old.parent}")
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    monkeypatch.delenv("REPROBOX_DOCKER", raising=False)
    client = find_buildkit_client()
    assert client is not None
    assert client.argv == (str(old), "build") and client.env == {"DOCKER_BUILDKIT": "1"}


def test_buildx_is_preferred_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _fake_docker(tmp_path / "a", "28.2.2", buildx=True)
    monkeypatch.setenv("PATH", str(new.parent))
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    monkeypatch.delenv("REPROBOX_DOCKER", raising=False)
    client = find_buildkit_client()
    assert client is not None and client.argv == (str(new), "buildx", "build", "--load")


def test_no_buildkit_client_or_buildkit_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = _fake_docker(tmp_path / "a", "28.2.2", buildx=False)
    monkeypatch.setenv("PATH", str(new.parent))
    monkeypatch.delenv("REPROBOX_DOCKER", raising=False)
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    if not any(
        Path(p).exists() for p in ("/usr/bin/docker", "/usr/local/bin/docker", "/snap/bin/docker")
    ):
        assert find_buildkit_client() is None
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    assert find_buildkit_client() is None
    monkeypatch.delenv("DOCKER_BUILDKIT")
    monkeypatch.setenv("REPROBOX_DOCKER", str(new))
    assert find_buildkit_client() is None


def test_a_daemon_that_does_not_answer_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    engine = DockerEngine()
    assert engine.available() is False
    with pytest.raises(EngineError) as info:
        engine.info()
    assert "does not answer" in info.value.message
    assert "systemctl start docker" in (info.value.hint or "")


# --------------------------------------------------------------------------- shared pieces


def test_gpu_requests_mean_the_same_to_both_engines() -> None:
    def request(**kw: object) -> dict[str, object]:
        return kw

    assert _gpu_request(request, True) == {"count": -1, "capabilities": [["gpu"]]}
    assert _gpu_request(request, "all") == {"count": -1, "capabilities": [["gpu"]]}
    assert _gpu_request(request, "2") == {"count": 2, "capabilities": [["gpu"]]}
    assert _gpu_request(request, "0,3") == {"device_ids": ["0", "3"], "capabilities": [["gpu"]]}
    assert _gpu_devices(True) == _gpu_devices("all") == ["all"]
    assert _gpu_devices("2") == ["0", "1"]  # a count: the first two
    assert _gpu_devices("device=0") == ["0"]  # one device: Docker's own spelling
    assert _gpu_request(request, "device=0") == {"device_ids": ["0"], "capabilities": [["gpu"]]}
    assert _gpu_devices("0,3") == ["0", "3"]
    assert GpuRequest.parse("1,2") == GpuRequest(ids=("1", "2"))
    uuid = "GPU-5f7a1c2e-0b1d-4e3f-9a8b-7c6d5e4f3a2b"
    assert GpuRequest.parse(f"device={uuid}") == GpuRequest(ids=(uuid,))


@pytest.mark.parametrize(
    "value",
    # "0" read as a count of none by Docker and as device 0 by Podman; a count of 10**20 made
    # Podman list every device index up to it; '²' passes str.isdigit() and fails int()
    ["0", "-1", "00", "99999999999999999999", "1000", "\u00b2", "all,0", "1,1", ",", "", "x"],
)
def test_a_gpu_request_no_engine_reads_alike_is_refused(value: str) -> None:
    with refuses(UsageError, names=["--gpus", "device=0"]):
        GpuRequest.parse(value)


def test_output_is_handed_on_in_whole_lines_however_it_is_cut() -> None:
    lines: list[str] = []
    out = OutputCollector(lines.append)
    for chunk in ("epo", "ch 1\nepoch", " 2\n", "", "done"):
        out.text(chunk)
    assert lines == ["epoch 1", "epoch 2"]
    assert out.finish() == "epoch 1\nepoch 2\ndone"
    assert lines == ["epoch 1", "epoch 2", "done"]
    quiet = OutputCollector(None)
    quiet.line("a")
    quiet.line("b")
    assert quiet.finish() == "a\nb\n"


def test_podman_and_classic_logs_count_steps_cache_hits_and_warnings() -> None:
    podman_log = (
        "STEP 1/3: FROM scratch\n"
        "STEP 2/3: RUN --mount=type=cache,target=/root/.cache/uv uv pip install x\n"
        "--> Using cache 00c76b92179b79981fd09904c67048ba854be6caf491a79713be64fd7ad12690\n"
        "--> 00c76b92179\n"
        "STEP 3/3: RUN echo 'reprobox: warning: torch is not pinned'\n"
        "reprobox: warning: torch is not pinned\n"
        "COMMIT reprobox-test:1\n"
    )
    shown: list[str] = []
    log = PodmanLog(shown.append)
    for line in podman_log.splitlines():
        log.feed(line)
    assert (log.steps, log.cached, log.warnings) == (3, 1, ["torch is not pinned"])
    assert shown[:2] == ["[1/3] FROM scratch", "[2/3] RUN uv pip install x"]
    # the argument that keys a step for podman's cache is a step of podman's, and no work
    shown = []
    log = PodmanLog(shown.append)
    for line in ("STEP 1/2: ARG REPROBOX_INPUTS_LOCK_1", "STEP 2/2: RUN true"):
        log.feed(line)
    assert shown == ["[2/2] RUN true"] and log.steps == 2
    titled: list[str] = []
    log = PodmanLog(titled.append, ("FROM scratch", "The locked packages", "Check"))
    for line in podman_log.splitlines():
        log.feed(line)
    assert titled[1] == "[2/3] The locked packages"

    shown = []
    classic = ClassicLog(shown.append)
    for line in (
        "Step 1/2 : FROM scratch",
        " ---> Using cache",
        "Step 2/2 : COPY a.txt /a.txt",
        "reprobox: warning: x is not pinned",
        "reprobox: warning: x is not pinned",
    ):
        classic.feed(line)
    assert (classic.steps, classic.cached, classic.warnings) == (2, 1, ["x is not pinned"])
    assert shown[0] == "Step 1/2 : FROM scratch"


# --------------------------------------------------------------------------- real builds

#: Tags unique to this test run: another run on the same daemon must not share them.
_RUN = uuid.uuid4().hex[:12]

_DOCKERFILE = "# Files\nFROM scratch\n# The first copy.\nCOPY a.txt /a.txt\nCOPY a.txt /b.txt\n"


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(_DOCKERFILE)
    return ctx


def _build_twice(engine: Engine, ctx: Path, tag: str, buildkit: bool = True) -> None:
    request = BuildRequest(
        context=ctx,
        dockerfile=ctx / "Dockerfile",
        tag=tag,
        labels={"org.reprobox.test": "engine"},
        buildkit=buildkit,
        step_titles=step_titles(_DOCKERFILE),
    )
    shown: list[str] = []
    try:
        first = engine.build(request, shown.append)
        again = engine.build(request, shown.append)
        assert first.steps >= 2 and again.image_id == first.image_id
        assert again.cached_steps >= 1
        # podman's inspect gives the id without the digest's algorithm, its --iidfile with it
        assert (engine.image_id(tag) or "").split(":")[-1] == first.image_id.split(":")[-1]
        assert engine.image_labels(tag).get("org.reprobox.test") == "engine"
        assert not list(ctx.parent.glob(".*.iid"))  # the id file is gone
        assert any("COPY a.txt /b.txt" in line for line in shown), shown
        broken = ctx / "Broken"
        broken.write_text("FROM scratch\nCOPY missing.txt /m.txt\n")
        with pytest.raises(EngineError) as info:
            engine.build(
                BuildRequest(
                    context=ctx, dockerfile=broken, tag=tag + "-broken", buildkit=buildkit
                ),
                shown.append,
            )
        assert "missing.txt" in info.value.message
    finally:
        engine.remove_image(tag)
    assert not engine.image_exists(tag)


def test_podman_builds_through_the_shared_command_path(tmp_path: Path) -> None:
    engine = PodmanEngine()
    require(engine.available(), "podman (scripts/setup-podman.sh)")
    _build_twice(engine, _context(tmp_path), f"reprobox-test-engine-build:podman-{_RUN}")


@pytest.mark.docker
def test_docker_builds_with_buildkit_and_with_the_classic_builder(tmp_path: Path) -> None:
    engine = DockerEngine()
    require(engine.buildkit() is not None, "a BuildKit-capable docker client")
    ctx = _context(tmp_path)
    _build_twice(engine, ctx, f"reprobox-test-engine-build:buildkit-{_RUN}")
    _build_twice(engine, ctx, f"reprobox-test-engine-build:classic-{_RUN}", buildkit=False)


def test_the_engine_package_stands_on_the_foundation_only() -> None:
    """engine/ may import its own modules and reprobox's foundation, nothing above it."""
    foundation = {"errors", "termsafe", "redact", "proc", "safefs", "progress"}
    folder = Path(engine_pkg.__file__).parent
    reached: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                names = [node.module] if node.module else [a.name for a in node.names]
                reached.setdefault(path.name, set()).update(n.split(".")[0] for n in names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not (module or "").startswith("reprobox"), f"{path.name}: {module}"
    assert reached, "the reader found no import of the foundation at all"
    beyond = {
        name: sorted(mods - foundation) for name, mods in reached.items() if mods - foundation
    }
    assert not beyond, beyond


def test_the_bytecode_summary_of_a_step_is_shown() -> None:
    shown: list[str] = []
    log = BuildLog(shown.append, TITLES)
    for line in (
        "#6 [3/4] RUN set -eu; uv pip install ...; "
        "python3.11 -I /tmp/reprobox/tools/finish_layer.py /tmp/reprobox/lock/all.txt",
        "#6 0.202 Installed 2 packages in 9ms",
        "#6 0.250 identical files: 3 stored once (7.9 MB saved)",
        "#6 0.310 bytecode: 5 of 6 files compiled (test suites left out)",
        "#6 0.311 some chatter nobody needs",
        "#6 DONE 0.4s",
    ):
        log.feed(line)
    assert "    bytecode: 5 of 6 files compiled (test suites left out)" in shown
    assert "    identical files: 3 stored once (7.9 MB saved)" in shown
    assert not any("chatter" in line for line in shown)


# --------------------------------------------------------------------------- run_container


class _Container:
    """A container as the Docker SDK shows it: its followed log (``streamed``, in chunks) may
    end before the whole log (``whole``) is written, as it does for one that exits at once."""

    def __init__(self, streamed: list[bytes], whole: bytes) -> None:
        self.streamed, self.whole = streamed, whole
        self.removed = False

    def logs(self, stream: bool = False, follow: bool = False, **_kw: object):
        assert stream, "a log is read as a stream, never whole into memory"
        if follow:
            return iter(self.streamed)
        # after the exit: the whole log, in chunks cut elsewhere than the followed ones
        return iter(self.whole[i : i + 3] for i in range(0, len(self.whole), 3))

    def wait(self) -> dict:
        return {"StatusCode": 0}

    def remove(self, force: bool = False) -> None:
        self.removed = True


def _engine_with(container: _Container, monkeypatch: pytest.MonkeyPatch) -> DockerEngine:
    from types import SimpleNamespace

    import reprobox.engine.docker as docker_engine

    sdk = SimpleNamespace(
        errors=SimpleNamespace(
            ImageNotFound=type("ImageNotFound", (Exception,), {}),
            APIError=type("APIError", (Exception,), {}),
            DockerException=Exception,
        ),
        types=SimpleNamespace(Mount=lambda *a, **k: (a, k)),
    )
    monkeypatch.setattr(docker_engine, "_sdk", lambda: sdk)
    engine = DockerEngine()
    engine._client = SimpleNamespace(containers=SimpleNamespace(run=lambda image, **kw: container))
    return engine


def test_output_the_followed_log_left_out_is_read_once_the_container_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the follow ended after the first chunk: the daemon saw the container exit in between
    container = _Container([b"1:3.11.2-6\n", b"epo"], b"1:3.11.2-6\nepoch 2\ndone")
    lines: list[str] = []
    got = _engine_with(container, monkeypatch).run_container("img", ["x"], stream=lines.append)
    assert got.output == "1:3.11.2-6\nepoch 2\ndone"
    assert lines == ["1:3.11.2-6", "epoch 2", "done"]  # each line handed on once
    assert got.exit_code == 0 and container.removed


def test_a_log_streamed_whole_is_not_read_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = "héllo\nwörld\n".encode()
    cut = [whole[:2], whole[2:]]  # cut inside the two bytes of "é"
    lines: list[str] = []
    got = _engine_with(_Container(cut, whole), monkeypatch).run_container(
        "img", ["x"], stream=lines.append
    )
    assert lines == ["héllo", "wörld"] and got.output == "héllo\nwörld\n"
    nothing = _engine_with(_Container([], b""), monkeypatch).run_container("img", ["true"])
    assert nothing.output == "" and nothing.exit_code == 0


def test_junk_in_the_engine_variables_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """REPROBOX_ENGINE=junk was taken for auto, and a REPROBOX_DOCKER that cannot run made
    builds fall back to the classic builder without a word."""
    from reprobox import engine as eng
    from reprobox.engine.buildkit import find_buildkit_client

    monkeypatch.setattr(eng, "_ENGINE", None)
    monkeypatch.setenv("REPROBOX_ENGINE", "junk")
    with refuses(UsageError, names=["REPROBOX_ENGINE", "junk"]):
        eng.get_engine()
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    monkeypatch.setenv("REPROBOX_DOCKER", str(tmp_path / "no-such-docker"))
    with refuses(UsageError, names=["REPROBOX_DOCKER", "no-such-docker"]):
        find_buildkit_client()
