"""Podman's layer cache and what a step bind-mounts, with the real podman.

Podman's builder (buildah 1.28 here) reuses a ``RUN`` step's layer when the step's text and
build arguments match, whatever the files it bind-mounts from the context hold: two experiments'
lock steps read the same text, so the second image got the first one's packages (a rerun of one
project verified a package of another). reprobox keys each such step with a build argument
holding a digest of what it mounts (reprobox.engine.mountkeys); these tests build two contexts
whose Dockerfiles are the same text through the real engine and read back what each image holds.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from reprobox.engine.interface import BuildRequest
from reprobox.engine.podman import PodmanEngine
from tests.conftest import require

pytestmark = [pytest.mark.slow]

BASE = "python:3.11.7-slim-bookworm"


@pytest.fixture(scope="module")
def podman() -> PodmanEngine:
    require(shutil.which("podman") is not None, "podman (scripts/setup-podman.sh)")
    if subprocess.run(["podman", "image", "exists", BASE]).returncode:
        require(
            subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode
            == 0,
            f"{BASE} in Docker (`reprobox base`)",
        )
        subprocess.run(
            f"docker save {BASE} | podman load -q",
            shell=True,
            check=True,
            capture_output=True,
        )
    return PodmanEngine()


@pytest.fixture
def tags():
    made: list[str] = []
    yield made
    for tag in made:  # by tag, never by id: an id can carry other tags
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True)


def _context(where: Path, dockerfile: str, lock: str) -> Path:
    (where / "lock").mkdir(parents=True)
    (where / "lock" / "all.txt").write_text(lock)
    (where / "tools").mkdir()
    (where / "tools" / "packages.txt").write_text("six\n")
    (where / "Dockerfile").write_text(dockerfile)
    return where


def _dockerfile(salt: str, keyed: bool) -> str:
    # the salt makes this run's steps its own: no layer of an earlier run can match them
    arg = "ARG REPROBOX_INPUTS_LOCK_1\n" if keyed else ""
    return (
        f"FROM {BASE}\n"
        f"{arg}"
        "RUN --mount=type=bind,source=lock/all.txt,target=/tmp/reprobox/lock/all.txt \\\n"
        "    --mount=type=bind,source=tools,target=/tmp/reprobox/tools \\\n"
        f"    set -eu; echo {salt} >/dev/null; \\\n"
        "    cat /tmp/reprobox/lock/all.txt /tmp/reprobox/tools/packages.txt > /installed.txt\n"
    )


def _two_contexts(where: Path, keyed: bool) -> tuple[str, Path, Path]:
    """This run's salt, and two contexts of one Dockerfile text with different locks."""
    salt = uuid.uuid4().hex
    text = _dockerfile(salt, keyed=keyed)
    first = _context(where / "first", text, "six==1.16.0\n")
    return salt, first, _context(where / "second", text, "six==1.15.0\n")


def _build(engine: PodmanEngine, context: Path, tag: str, tags: list, said: list):
    tags.append(f"localhost/reprobox-cachetest:{tag}")
    tag = tags[-1]
    built = engine.build(
        BuildRequest(context=context, dockerfile=context / "Dockerfile", tag=tag),
        said.append,
    )
    out = subprocess.run(
        ["podman", "run", "--rm", "--pull=never", tag, "cat", "/installed.txt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return built, out


def test_a_step_is_reused_only_when_what_it_mounts_is_the_same(
    podman: PodmanEngine, tmp_path: Path, tags: list
):
    salt, first, second = _two_contexts(tmp_path, keyed=True)
    said: list[str] = []

    built, out = _build(podman, first, f"{salt}-1", tags, said)
    assert out == "six==1.16.0\nsix\n"
    # the same Dockerfile text, another lock: its own layer, not the first one's
    built, out = _build(podman, second, f"{salt}-2", tags, said)
    assert out == "six==1.15.0\nsix\n"
    # the first context again, unchanged: its layer is reused; and a copy of it elsewhere too
    built, out = _build(podman, first, f"{salt}-3", tags, said)
    assert out == "six==1.16.0\nsix\n" and built.cached_steps >= 1
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    built, out = _build(podman, copy, f"{salt}-4", tags, said)
    assert out == "six==1.16.0\nsix\n" and built.cached_steps >= 1
    # a change to another mounted folder (tools/) is a change of the step too
    (second / "tools" / "packages.txt").write_text("six\ntqdm\n")
    built, out = _build(podman, second, f"{salt}-5", tags, said)
    assert out == "six==1.15.0\nsix\ntqdm\n"
    assert not [s for s in said if "without the cache" in s]


def test_a_mounting_step_with_no_key_is_built_without_the_cache(
    podman: PodmanEngine, tmp_path: Path, tags: list
):
    salt, first, second = _two_contexts(tmp_path, keyed=False)
    said: list[str] = []
    _built, out = _build(podman, first, f"{salt}-1", tags, said)
    assert out == "six==1.16.0\nsix\n"
    _built, out = _build(podman, second, f"{salt}-2", tags, said)
    assert out == "six==1.15.0\nsix\n"
    assert (
        said.count(
            "1 step(s) of this Dockerfile mount files podman's layer cache does not look at: "
            "building without the cache"
        )
        == 2
    )
