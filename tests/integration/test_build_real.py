"""Building real images on the real Docker daemon, from a real capture of a real venv.

The base image is made by ``reprobox base``'s code (debootstrap + this machine's interpreter; no
registry is reachable here) once and reused while its tag exists. The project is a git repository
with an editable package and a venv holding ``attrs`` and ``six`` from the real package index; it
is captured and locked with reprobox's own capture, then built. Checked here:

* the capture probe, run inside the built image, reports the same interpreter version and the
  same package names, versions and sources as the capture;
* labels (experiment, environment digest, OCI created/revision/source without credentials);
* a rebuild of the same experiment is all cached, and a code-only change rebuilds only the code
  layer;
* a canary credential in the index URL is used by the host's fetch (the install works) but no
  layer, no history entry and no image config holds the canary, and no Python step sees an index;
* a base that is neither local nor pullable is a clear error naming ``reprobox base``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from reprobox import payload
from reprobox.base import build_base, find_interpreter, host_release
from reprobox.build import WORKDIR, build_experiment
from reprobox.engine import Mount, get_engine
from reprobox.errors import BaseImageMissing, EngineError
from reprobox.store import Store

from ..asserts import refuses
from ..conftest import git, require
from ..saved_image import where_in_image

pytestmark = [pytest.mark.docker, pytest.mark.network]

DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)
PROBE = payload.script("probe")
VERSION = platform.python_version()


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str:
    _id, codename = host_release()
    require(
        os.geteuid() == 0 and shutil.which("debootstrap") is not None,
        "root and debootstrap (to build the base image with `reprobox base`)",
    )
    return build_base(VERSION, codename or "bookworm", progress=print)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("build-real") / "demo"
    (repo / "src" / "demo_pkg").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "demo-pkg"\nversion = "0.3.0"\n'
    )
    (repo / "src" / "demo_pkg" / "__init__.py").write_text("ANSWER = 42\n")
    (repo / "train.py").write_text("import attr, six, demo_pkg\nprint(demo_pkg.ANSWER)\n")
    (repo / ".gitignore").write_text(".venv/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://build-user:remote-token@git.example/demo.git")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "demo project")
    python = find_interpreter(VERSION).executable
    venv = repo / ".venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "attrs==23.2.0", "six==1.16.0"], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(repo)], check=True)
    return repo


def _capture(repo: Path) -> str:
    from reprobox.pipeline import capture_experiment

    outcome = capture_experiment(
        repo,
        command="python train.py",
        cwd=repo,
        python=str(repo / ".venv" / "bin" / "python"),
        lock=True,
    )
    assert outcome.locked, outcome.warnings
    return outcome.id


@pytest.fixture(scope="module")
def built(project: Path, base_image: str) -> dict:
    exp_id = _capture(project)
    store = Store(project)
    lines: list[str] = []
    result = build_experiment(store, store.load(exp_id), progress=lines.append)
    made = [result.image_id]  # tests that rebuild the same tag add theirs: all go at the end
    yield {
        "id": exp_id,
        "result": result,
        "log": lines,
        "store": store,
        "layers": _layers(result.tag),
        "made": made,
    }
    for image in [result.tag, *made]:
        get_engine().remove_image(image)


def _layers(tag: str) -> list[str]:
    out = subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{json .RootFS.Layers}}", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def _probe(image: str, tmp: Path) -> dict:
    shutil.copy(PROBE, tmp / "probe.py")
    out = get_engine().run_container(
        image, ["python", "-I", "/probe/probe.py"], mounts=[Mount(tmp, "/probe", read_only=True)]
    )
    assert out.exit_code == 0, out.output
    return json.loads(out.output[out.output.index("{") :])


def test_the_image_holds_the_captured_environment(built: dict, tmp_path: Path) -> None:
    from reprobox.capture.python import parse_probe

    stored = built["store"].load(built["id"])
    seen = parse_probe(_probe(built["result"].tag, tmp_path), Path(WORKDIR))
    assert seen.interpreter.version == stored.environment.interpreter.version == VERSION

    def ident(packages):  # type: ignore[no-untyped-def]
        return {p.name: (p.version, p.source.identity()) for p in packages}

    assert ident(seen.packages) == ident(stored.environment.packages)
    assert ident(seen.packages)["demo-pkg"] == (
        "0.3.0",
        {"kind": "directory", "path": ".", "editable": True},
    )
    assert stored.image == built["result"].tag  # recorded as local state, not in the record


def test_pip_installs_when_this_machine_has_no_uv(
    built: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprobox.lock import uv as uv_mod
    from reprobox.capture.python import parse_probe

    monkeypatch.setattr(uv_mod, "find_uv", lambda: None)
    store: Store = built["store"]
    stored = store.load(built["id"])
    tag = f"reprobox-test/pip:{uuid.uuid4().hex[:8]}"
    result = build_experiment(store, stored, tag=tag)
    try:
        assert result.installer == "pip"
        assert "python3.11 -m pip install" in result.dockerfile.replace(
            f"python{stored.environment.interpreter.major_minor}", "python3.11"
        )
        seen = parse_probe(_probe(tag, tmp_path), Path(WORKDIR))
        assert {p.name: (p.version, p.source.identity()) for p in seen.packages} == {
            p.name: (p.version, p.source.identity()) for p in stored.environment.packages
        }
    finally:
        get_engine().remove_image(tag)


def test_the_image_carries_the_bytecode_of_what_it_installed(built: dict) -> None:
    """Each locked layer's .pyc is written at build time (payload/finish_layer.py), and Python
    takes it as valid: the rerun's own user, who cannot write site-packages, compiles nothing."""
    script = (
        "import importlib.util, os, attr, six\n"
        "for m in (attr, six):\n"
        "    pyc = importlib.util.cache_from_source(m.__file__)\n"
        "    print(m.__name__, os.path.isfile(pyc), m.__spec__.cached == pyc)\n"
    )
    out = get_engine().run_container(built["result"].tag, ["python", "-c", script])
    assert out.exit_code == 0, out.output
    assert out.output.split() == ["attr", "True", "True", "six", "True", "True"]


def _layer_with_twins(base_image: str, tmp_path: Path, *, finish: bool) -> tuple[str, int]:
    """An image whose last step installs a distribution holding the same 3 MiB twice, then runs
    finish_layer.py on it when ``finish``; its tag and the size of that step's layer."""
    ctx = tmp_path / ("finished" if finish else "plain")
    info = ctx / "site" / "twins-1.0.dist-info"
    (ctx / "site" / "twins").mkdir(parents=True)
    info.mkdir()
    blob = os.urandom(3 << 20)
    (ctx / "site" / "twins" / "libtwin.so").write_bytes(blob)
    (ctx / "site" / "twins" / "libtwin.so.1").write_bytes(blob)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: twins\nVersion: 1.0\n")
    claim = "sha256={},{}".format(
        base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode(), len(blob)
    )
    (info / "RECORD").write_text(
        f"twins/libtwin.so,{claim}\ntwins/libtwin.so.1,{claim}\n"
        "twins-1.0.dist-info/METADATA,,\ntwins-1.0.dist-info/RECORD,,\n"
    )
    (ctx / "lock.txt").write_text("twins==1.0\n")
    shutil.copy2(payload.script("finish_layer"), ctx / "finish_layer.py")
    site = f"/usr/local/lib/python{VERSION.rsplit('.', 1)[0]}/site-packages"
    step = f"cp -a /ctx/site/. {site}/"
    if finish:
        step += " && python3 -I /ctx/finish_layer.py /ctx/lock.txt"
    (ctx / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN --mount=type=bind,source=.,target=/ctx {step}\n"
    )
    tag = f"reprobox-test/twins:{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [DOCKER, "build", "-q", "-t", tag, str(ctx)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        check=True,
        capture_output=True,
    )
    sizes = subprocess.run(
        [DOCKER, "history", "--human=false", "--format", "{{.Size}}", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return tag, int(sizes[0])


def test_identical_files_of_a_step_take_their_room_once(base_image: str, tmp_path: Path) -> None:
    """finish_layer.py's hard links survive the layer's export: the step's layer holds the
    twin's bytes once (without it, twice), and both names read the same bytes."""
    tags = []
    try:
        tag, plain = _layer_with_twins(base_image, tmp_path, finish=False)
        tags.append(tag)
        tag, finished = _layer_with_twins(base_image, tmp_path, finish=True)
        tags.append(tag)
        assert plain >= 2 * (3 << 20), plain
        assert 3 << 20 <= finished < 4 << 20, finished
        site = f"/usr/local/lib/python{VERSION.rsplit('.', 1)[0]}/site-packages/twins"
        out = get_engine().run_container(
            tag,
            [
                "sh",
                "-c",
                f"stat -c %i {site}/libtwin.so {site}/libtwin.so.1; "
                f"cmp {site}/libtwin.so {site}/libtwin.so.1 && echo same",
            ],
        )
        assert out.exit_code == 0, out.output
        first, second, verdict = out.output.split()
        assert first == second and verdict == "same"
    finally:
        for tag in tags:
            get_engine().remove_image(tag)


def test_labels_and_progress(built: dict) -> None:
    result = built["result"]
    labels = get_engine().image_labels(result.tag)
    stored = built["store"].load(built["id"])
    assert labels["reprobox.experiment"] == built["id"]
    assert labels["reprobox.env-digest"] == stored.environment.digest
    assert labels["org.opencontainers.image.revision"] == stored.experiment.git.commit
    assert labels["org.opencontainers.image.source"] == "https://git.example/demo.git"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert result.tag == f"reprobox/demo:{built['id']}"
    log = "\n".join(built["log"])
    assert "Locked Python packages" in log and "The project's own packages" in log
    assert "buildkit" in result.builder and result.installer in ("uv", "pip")


def test_rebuilds_reuse_layers_and_code_changes_rebuild_only_the_code(
    built: dict, project: Path
) -> None:
    store: Store = built["store"]
    again = build_experiment(store, store.load(built["id"]))
    built["made"].append(again.image_id)
    assert again.cached  # every step from the cache: the same layers, a new `created` label
    assert _layers(again.tag) == built["layers"]

    marker = uuid.uuid4().hex  # content no earlier build had: no cache entry can match it
    (project / "src" / "demo_pkg" / "__init__.py").write_text(f"ANSWER = {marker!r}\n")
    git(project, "commit", "-qam", "change the code")
    changed = _capture(project)
    lines: list[str] = []
    result = build_experiment(store, store.load(changed), progress=lines.append)
    try:
        steps = [line for line in lines if line.startswith("[")]
        # the project's own package (a static pyproject.toml): its install reads the metadata
        # and layout only, so a change to the code alone leaves it cached too
        install_steps = [
            s
            for s in steps
            if "Locked Python packages" in s or "System packages" in s or "own packages" in s
        ]
        assert len(install_steps) >= 2 and all(s.endswith("(cached)") for s in install_steps), steps
        code_steps = [s for s in steps if "COPY" in s]
        assert code_steps and not any(s.endswith("(cached)") for s in code_steps), steps
        out = get_engine().run_container(
            result.tag, ["python", "-c", "import demo_pkg; print(demo_pkg.ANSWER)"]
        )
        assert out.output.strip() == marker
        # a two-part build (no `RUN --network` on this builder) leaves no intermediate tag
        for name in re.findall(r"FROM (reprobox/system:\S+)", "\n".join(lines)):
            gone = subprocess.run(
                [DOCKER, "image", "inspect", name], capture_output=True, text=True
            )
            assert gone.returncode != 0, f"{name} was left behind"
    finally:
        get_engine().remove_image(result.tag)


def test_no_layer_holds_a_credential(
    built: dict, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprobox.lock import read_index_config

    canary = f"canary-{uuid.uuid4().hex}"
    real = read_index_config()
    assert real.index_url.startswith("https://"), "the canary rides on the real remote index"
    scheme, rest = real.index_url.split("://", 1)
    monkeypatch.setenv("PIP_INDEX_URL", f"{scheme}://reprobox-test:{canary}@{rest}")
    store: Store = built["store"]
    tag = f"reprobox-test/canary:{uuid.uuid4().hex[:8]}"
    # A new cache id and no layer cache: the install really runs, through the canary URL.
    result = build_experiment(
        store,
        store.load(built["id"]),
        tag=tag,
        no_cache=True,
        cache_id=f"canary-{uuid.uuid4().hex[:8]}",
    )
    try:
        # Every file of every layer, configs and manifests, in the layer.tar layout or the OCI
        # blobs/sha256 one (Docker 25+); the reader fails if it finds no layer at all.
        assert where_in_image(tag, canary.encode(), tmp_path, DOCKER) == []
        history = subprocess.run(
            [DOCKER, "history", "--no-trunc", tag], check=True, capture_output=True, text=True
        ).stdout
        inspect = subprocess.run(
            [DOCKER, "image", "inspect", tag], check=True, capture_output=True, text=True
        ).stdout
        assert canary not in history and canary not in inspect
        # The host fetched the packages through the canary URL; no Python step saw an index.
        steps = [line for line in history.splitlines() if "pip install" in line]
        assert steps and all("--no-index" in s and "secret" not in s for s in steps)
    finally:
        get_engine().remove_image(tag)
    assert result.image_id


def test_a_missing_base_names_reprobox_base(built: dict) -> None:
    store: Store = built["store"]
    with pytest.raises(BaseImageMissing) as info:
        build_experiment(store, store.load(built["id"]), base_image="python:3.99.1-slim-bookworm")
    assert "reprobox base --python 3.99.1 --os bookworm" in (info.value.hint or "")


def test_dry_run_needs_no_engine(built: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    store: Store = built["store"]
    result = build_experiment(store, store.load(built["id"]), dry_run=True)
    assert result.dry_run and result.image_id is None
    assert result.dockerfile.startswith("# Image of reprobox experiment")


def test_the_classic_builder_through_the_sdk(base_image: str, tmp_path: Path) -> None:
    from reprobox.engine import BuildRequest

    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image}\nARG PIP_INDEX_URL\n"
        "RUN echo 'reprobox: warning: classic builder in use' && echo \"$PIP_INDEX_URL\" > /idx\n"
    )
    tag = f"reprobox-test/classic:{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    engine = get_engine()
    built = engine.build(
        BuildRequest(
            context=tmp_path,
            dockerfile=tmp_path / "Dockerfile",
            tag=tag,
            labels={"reprobox.experiment": "000000000000"},
            build_args={"PIP_INDEX_URL": "https://index.example/simple"},
            buildkit=False,
        ),
        lines.append,
    )
    try:
        assert built.image_id.startswith("sha256:") and engine.image_exists(tag)
        assert engine.image_labels(tag)["reprobox.experiment"] == "000000000000"
        assert any(line.startswith("Step 1/") for line in lines), lines
        assert built.warnings == ("classic builder in use",)
        out = engine.run_container(tag, ["cat", "/idx"])
        assert (out.exit_code, out.output.strip()) == (0, "https://index.example/simple")
        failing = engine.run_container(tag, ["sh", "-c", "echo oops >&2; exit 3"])
        assert failing.exit_code == 3 and "oops" in failing.output
    finally:
        engine.remove_image(tag)
    with refuses(EngineError, names=["classic builder cannot pass build secrets", "BuildKit"]):
        engine.build(
            BuildRequest(
                context=tmp_path,
                dockerfile=tmp_path / "Dockerfile",
                tag=tag,
                secrets={"reprobox-env": tmp_path / "Dockerfile"},
                buildkit=False,
            )
        )


def test_engine_info(docker_daemon: None) -> None:
    info = get_engine().info()
    assert info["server_version"] and info["engine"] == "docker"
    assert isinstance(info["nvidia_runtime"], bool)
    # This machine's first `docker` on PATH may refuse BuildKit; another client must be found.
    if Path("/usr/bin/docker").exists():
        assert info["buildkit"] is True and info["buildkit_client"]


def test_debian_own_python_as_the_base(docker_daemon: None, tmp_path: Path) -> None:
    """A venv made from Debian's python3: the base installs the same Debian package."""
    from reprobox.base import describe_interpreter
    from reprobox.capture.python import parse_probe

    system = describe_interpreter(Path("/usr/bin/python3"))
    host_id, codename = host_release()
    require(
        system is not None
        and system.kind == "distribution"
        and host_id == "debian"
        and os.geteuid() == 0
        and shutil.which("debootstrap") is not None,
        "Debian's python3 with its venv module, root and debootstrap",
    )
    assert system is not None
    repo = tmp_path / "debian-python"
    repo.mkdir()
    (repo / "train.py").write_text("import six\n")
    (repo / ".gitignore").write_text(".venv/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project")
    venv = repo / ".venv"
    made = subprocess.run(
        ["/usr/bin/python3", "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    require(made.returncode == 0, "Debian's python3-venv package")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "six==1.16.0"], check=True
    )
    image = build_base(system.version, codename or "bookworm")
    assert image == f"python:{system.version}-slim-{codename}"
    exp_id = _capture(repo)
    store = Store(repo)
    stored = store.load(exp_id)
    result = build_experiment(store, stored)
    try:
        assert result.base_image == image
        seen = parse_probe(_probe(result.tag, tmp_path), Path(WORKDIR))
        assert seen.interpreter.version == system.version
        assert {p.name: (p.version, p.source.identity()) for p in seen.packages} == {
            p.name: (p.version, p.source.identity()) for p in stored.environment.packages
        }
    finally:
        get_engine().remove_image(result.tag)
