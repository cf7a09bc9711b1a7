"""The substitutions an image's build wrote, read from a real image through the real Docker
daemon once, then from the user's cache by image id (no container for a second run).

The image is made here from a tiny root filesystem (this machine's ``sh`` and ``cat`` with the
libraries they load) holding a substitutions file, imported through the engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from reprobox.backends import docker as docker_backend
from reprobox.engine import DockerEngine
from reprobox.build.render import SUBSTITUTIONS_FILE

pytestmark = pytest.mark.docker

LINE = "git 1:2.0.0-0reprobox1 1:2.39.5-0+deb12u2\n"


def _rootfs(where: Path, substitutions: str) -> Path:
    """A tarball with /bin/sh, /bin/cat, the libraries they need and the substitutions file."""
    files = {
        os.path.realpath(shutil.which("sh") or "/bin/sh"): "bin/sh",
        os.path.realpath(shutil.which("cat") or "/bin/cat"): "bin/cat",
    }
    for binary in list(files):
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                files[os.path.realpath(path)] = path.lstrip("/")
    subs = where / "substitutions"
    subs.write_text(substitutions)
    tarball = where / "rootfs.tar"
    with tarfile.open(tarball, "w") as tf:
        for src, dest in files.items():
            tf.add(src, arcname=dest)
        tf.add(subs, arcname=SUBSTITUTIONS_FILE.lstrip("/"))
    return tarball


@pytest.fixture
def image(tmp_path):  # type: ignore[no-untyped-def]
    engine = DockerEngine()
    tag = f"reprobox-test-substitutions-{uuid.uuid4().hex[:12]}:latest"
    engine.import_rootfs(_rootfs(tmp_path, LINE), tag)
    try:
        yield engine, tag
    finally:
        engine.remove_image(tag)


def test_a_second_read_of_the_same_image_starts_no_container(image, tmp_path, monkeypatch):
    engine, tag = image
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    started: list[str] = []
    real = engine.run_container

    def counting(img, *args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(img)
        return real(img, *args, **kwargs)

    monkeypatch.setattr(engine, "run_container", counting)
    first = docker_backend.image_substitutions(engine, tag)
    assert [s.name for s in first] == ["git"] and len(started) == 1
    image_id = engine.image_id(tag)
    assert image_id is not None
    cached = tmp_path / "xdg" / "reprobox" / "substitutions" / f"{image_id.split(':')[-1]}.txt"
    assert cached.read_text() == LINE
    second = docker_backend.image_substitutions(engine, tag)
    assert second == first and len(started) == 1


def test_another_image_is_read_again(image, tmp_path, monkeypatch):
    engine, tag = image
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert [s.name for s in docker_backend.image_substitutions(engine, tag)] == ["git"]
    other = f"reprobox-test-substitutions-{uuid.uuid4().hex[:12]}:latest"
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    engine.import_rootfs(_rootfs(other_dir, "libfoo 1.0-1 -\n"), other)
    try:
        assert [s.name for s in docker_backend.image_substitutions(engine, other)] == ["libfoo"]
    finally:
        engine.remove_image(other)
