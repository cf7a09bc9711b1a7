"""``reprobox push`` and the pull by digest, against a real registry (Debian's docker-registry on
127.0.0.1, started by ``scripts/start-registry.sh``) and the real Docker daemon.

A stdlib-only project keeps the images small: push from one clone, then a FRESH clone with the
local image removed (by tag) pulls by digest and reproduces; a publication pointing at another
experiment's image is refused by its labels and the run builds instead; a registry that does not
answer or refuses the push fails with one line naming it; a hand-edited images.json is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import require
from tests.factories import (
    DOCKER,
    capture,
    commit,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    sh,
)
from tests.integration.test_run_e2e import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SCRIPT = ROOT / "scripts" / "start-registry.sh"
PORT = int(os.environ.get("REPROBOX_REGISTRY_PORT", "5000"))
REGISTRY = f"127.0.0.1:{PORT}"


@pytest.fixture(autouse=True)
def _this_machine_trusts_the_local_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry the tests push to is one this machine trusts (the host's configuration)."""
    monkeypatch.setenv("REPROBOX_REGISTRIES", REGISTRY)


CLOSED_PORT = 5997  # nothing listens there (checked in the test)
#: A unique namespace per test session: nothing here collides with another run's images.
NAMESPACE = f"rbtest{uuid.uuid4().hex[:8]}"

TRAIN = (
    "import json\n"
    "values = [0.5, 1.25, 2.0]\n"
    "json.dump({'total': sum(i * v for i, v in enumerate(values, start=1))},"
    " open('metrics.json', 'w'))\n"
)


def _answers(port: int) -> bool:
    return (
        subprocess.run(
            ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", f"http://127.0.0.1:{port}/v2/"],
            capture_output=True,
        ).returncode
        == 0
    )


@pytest.fixture(scope="session")
def registry(docker_daemon: None) -> str:
    """The local registry, started by the project's own script (idempotent)."""
    if not _answers(PORT):
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            env={**os.environ, "REPROBOX_REGISTRY_PORT": str(PORT)},
        )
        require(done.returncode == 0, f"a local registry ({SCRIPT.name}): {done.stderr[-300:]}")
    return f"{REGISTRY}/{NAMESPACE}"


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str:
    from reprobox.base import build_base

    return build_base("3.11.7", "bookworm")


_TAGS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_tags():
    yield
    for tag in _TAGS:
        sh(ROOT, DOCKER, "rmi", tag, check=False)


def remove_local_tags(exp_id: str) -> None:
    """Remove every tag of the experiment's images here (by tag, never by id)."""
    out = sh(
        ROOT,
        DOCKER,
        "images",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}}|{{.Repository}}@{{.Digest}}",
        "--filter",
        f"label=reprobox.experiment={exp_id}",
    ).stdout
    for line in out.split():
        tag, by_digest = line.split("|")
        if not tag.endswith(":<none>"):
            sh(ROOT, DOCKER, "rmi", tag, check=False)
        if not by_digest.endswith("@<none>"):
            sh(ROOT, DOCKER, "rmi", by_digest, check=False)
    left = sh(ROOT, DOCKER, "images", "-q", "--filter", f"label=reprobox.experiment={exp_id}")
    assert left.stdout.strip() == "", f"images of {exp_id} are still here"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base_image: str):
    """Two stdlib-only experiments (different names: different ids, the same lock)."""
    where = tmp_path_factory.mktemp("registry")
    repo = new_repo(where / "project", {"train.py": TRAIN, ".gitignore": "metrics.json\n"})
    venv = make_venv(where / "venv")
    sh(repo, str(venv / "bin" / "python"), "train.py")
    first = capture(
        repo, venv, "--name", "first", "--cmd", "python train.py", "--metrics", "metrics.json"
    )["id"]
    second = capture(
        repo, venv, "--name", "second", "--cmd", "python train.py", "--metrics", "metrics.json"
    )["id"]
    return where, repo, first, second


def push_json(
    repo: Path, exp: str, registry: str, *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    done = reprobox(repo, "push", exp, "--registry", registry, "--json", *extra, check=False)
    if check:
        assert done.returncode == 0, f"push failed:\n{done.stdout}\n{done.stderr}"
    return done


def manifest_digest(repository: str, tag: str) -> str:
    host, _, name = repository.partition("/")
    out = subprocess.run(
        [
            "curl",
            "-fsSI",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            f"http://{host}/v2/{name}/manifests/{tag}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stdout.splitlines():
        if line.lower().startswith("docker-content-digest:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(out.stdout)


def test_push_then_a_fresh_clone_pulls_by_digest_and_reproduces(project, registry, tmp_path):
    where, repo, first, _second = project
    done = push_json(repo, "first", registry)
    pub = json.loads(done.stdout)
    assert pub["experiment"] == first
    assert pub["repository"].startswith(f"{registry}/") and pub["tag"] == first
    # The recorded digest is the registry's own manifest digest.
    assert pub["digest"] == manifest_digest(pub["repository"], first)
    record = json.loads((repo / ".reprobox" / "experiments" / first / "images.json").read_text())
    assert record["schema"] == "reprobox.images/1" and record["experiment"] == first
    assert record["images"][0]["reference"] == f"{pub['repository']}@{pub['digest']}"
    # the store still loads the experiment, images.json beside its sealed manifest
    assert json.loads(reprobox(repo, "show", first, "--json").stdout)["experiment"]["id"] == first
    for tag in (pub["repository"] + ":" + first,):
        _TAGS.append(tag)
    commit(repo, "publish the image", ".reprobox")

    clone = publish_and_clone(repo, tmp_path)
    remove_local_tags(first)
    done = reprobox(clone, "run", "first", "--backend", "docker", "--json", check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "reproduced"
    assert f"pulling {pub['reference']}" in done.stderr
    assert "using the published image" in done.stderr
    assert "building it" not in done.stderr
    # verify uses the same pulled (now tagged) image
    done = reprobox(clone, "verify", "first", "--backend", "docker", "--json", check=False)
    assert done.returncode in (0, 1), done.stderr
    assert "pulled by digest" in done.stderr or "using the image" in done.stderr


def test_pulled_image_with_another_experiments_labels_is_refused_and_built(
    project, registry, tmp_path
):
    from reprobox.registry import seal_of

    where, repo, first, second = project
    theirs = json.loads(push_json(repo, "first", registry).stdout)
    # images.json of `second` pointing at the image of `first`, re-sealed so it passes the seal.
    path = repo / ".reprobox" / "experiments" / second / "images.json"
    doc = {
        "schema": "reprobox.images/1",
        "experiment": second,
        "env_digest": _env_digest(repo, second),
        "images": [
            {
                "repository": theirs["repository"],
                "tag": second,
                "digest": theirs["digest"],
                "reference": theirs["reference"],
                "pushed": theirs["pushed"],
                "engine": "docker",
            }
        ],
    }
    doc["seal"] = seal_of(doc)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    commit(repo, "a publication pointing elsewhere", ".reprobox")
    clone = publish_and_clone(repo, tmp_path)
    remove_local_tags(first)
    remove_local_tags(second)
    done = reprobox(clone, "run", "second", "--backend", "docker", "--json", check=False)
    assert done.returncode == 0, done.stderr
    assert (
        f"the pulled image {theirs['reference']} is refused: its label "
        "reprobox.experiment is" in done.stderr
    )
    assert "building it from its Dockerfile" in done.stderr
    assert json.loads(done.stdout)["verdict"] == "reproduced"


def _env_digest(repo: Path, exp: str) -> str:
    exp_json = json.loads(reprobox(repo, "show", exp, "--json").stdout)["experiment"]
    return exp_json["environment_digest"]


def test_edited_images_json_is_refused_naming_the_file(project, registry, tmp_path):
    where, repo, first, _second = project
    push_json(repo, "first", registry)
    path = repo / ".reprobox" / "experiments" / first / "images.json"
    saved = path.read_text()
    try:
        doc = json.loads(saved)
        doc["images"][0]["digest"] = "sha256:" + "0" * 64  # not re-sealed
        doc["images"][0]["reference"] = doc["images"][0]["repository"] + "@sha256:" + "0" * 64
        path.write_text(json.dumps(doc))
        done = reprobox(repo, "run", "first", "--backend", "docker", check=False)
        assert done.returncode == 2, done.stderr
        assert "images.json" in done.stderr and "seal does not match" in done.stderr
        done = reprobox(repo, "push", "first", "--registry", registry, check=False)
        assert done.returncode == 2 and "images.json" in done.stderr
    finally:
        path.write_text(saved)


def test_registry_down_fails_the_push_with_one_line(project, registry):
    where, repo, first, _second = project
    assert not _answers(CLOSED_PORT)
    done = push_json(repo, "first", f"127.0.0.1:{CLOSED_PORT}/team", check=False)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"the registry 127.0.0.1:{CLOSED_PORT} does not answer" in errors[0]
    assert "start-registry.sh" in done.stderr
    assert "Traceback" not in done.stderr


def test_read_only_registry_refuses_the_push_with_one_line(project, registry, tmp_path):
    where, repo, first, _second = project
    port = 5996
    env = {
        **os.environ,
        "REPROBOX_REGISTRY_PORT": str(port),
        "REPROBOX_REGISTRY_DIR": str(tmp_path / "ro-registry"),
        "REPROBOX_REGISTRY_READONLY": "1",
    }
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True)
    try:
        done = push_json(repo, "first", f"127.0.0.1:{port}/team", check=False)
        assert done.returncode == 3, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1
        assert f"the registry 127.0.0.1:{port} refused the push" in errors[0]
        assert "Traceback" not in done.stderr
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, check=False)
        sh(ROOT, DOCKER, "rmi", f"127.0.0.1:{port}/team/project:{first}", check=False)


def test_push_refuses_a_registry_with_a_scheme(project):
    where, repo, first, _second = project
    done = reprobox(repo, "push", "first", "--registry", "http://127.0.0.1:5000/x", check=False)
    assert done.returncode == 2 and "--registry" in done.stderr and "scheme" in done.stderr


def test_podman_builds_runs_verifies_and_pushes(project, registry, tmp_path):
    require(shutil.which("podman") is not None, "podman (scripts/setup-podman.sh)")
    where, repo, first, second = project
    # podman's storage needs the base image: from Docker's, no registry involved.
    if subprocess.run(["podman", "image", "exists", "python:3.11.7-slim-bookworm"]).returncode:
        subprocess.run(
            "docker save python:3.11.7-slim-bookworm | podman load -q",
            shell=True,
            check=True,
            capture_output=True,
        )
    clone = publish_and_clone(repo, tmp_path)
    try:
        done = reprobox(clone, "build", "second", "--engine", "podman", check=False)
        assert done.returncode == 0, done.stderr
        tag = done.stdout.strip().splitlines()[-1]
        labels = json.loads(
            subprocess.run(
                ["podman", "image", "inspect", "--format", "{{json .Labels}}", tag],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert labels["reprobox.experiment"] == second
        done = reprobox(
            clone,
            "run",
            "second",
            "--engine",
            "podman",
            "--backend",
            "docker",
            "--json",
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["verdict"] == "reproduced"
        done = reprobox(
            clone,
            "verify",
            "second",
            "--engine",
            "podman",
            "--backend",
            "docker",
            "--json",
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        assert [
            d
            for d in json.loads(done.stdout)["differences"]
            if d["kind"] not in ("system-package",)
        ] == []
        done = reprobox(
            clone,
            "push",
            "second",
            "--engine",
            "podman",
            "--registry",
            registry,
            "--json",
            check=False,
        )
        assert done.returncode == 0, done.stderr
        pub = json.loads(done.stdout)
        assert pub["engine"] == "podman"
        assert pub["digest"] == manifest_digest(pub["repository"], second)
        # podman pulls it back by digest, labels intact, after the local tags are gone
        subprocess.run(
            ["podman", "rmi", "--force", tag, f"{pub['repository']}:{second}"], capture_output=True
        )
        done = reprobox(
            clone,
            "run",
            "second",
            "--engine",
            "podman",
            "--backend",
            "docker",
            "--json",
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "using the published image" in done.stderr
    finally:
        subprocess.run(
            ["podman", "rmi", "--force", f"reprobox/clone:{second}"], capture_output=True
        )
