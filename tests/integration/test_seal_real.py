"""The seal and local state, end to end with real git (and Docker where marked): a capture
committed and cloned, built and rerun in the clone, leaves ``git status`` clean; committed links
in the store send nothing outside the repository; a local image whose labels name another capture
is not used; ``reprobox lock`` re-seals an offline capture under a new id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ..conftest import git

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def status(repo: Path) -> str:
    """Everything git would show, untracked files included (ignored ones are not)."""
    return git(repo, "status", "--porcelain", "--untracked-files=all")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A repository with a committed script and a tiny venv (no packages) to capture."""
    repo = tmp_path / f"sealproj{uuid.uuid4().hex[:8]}"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "job.py").write_text(
        "import json\njson.dump({'score': 1.5}, open('score.json', 'w'))\n"
    )
    (repo / ".gitignore").write_text("score.json\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "job")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return repo, venv


def capture(repo: Path, venv: Path, *args: str) -> str:
    subprocess.run([str(venv / "bin" / "python"), "job.py"], cwd=repo, check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    proc = cli(
        "capture", "--cmd", "python job.py", "--metrics", "score.json", *args, cwd=repo, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def clone(repo: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(where)], check=True)
    return where


def test_run_in_a_clone_leaves_git_status_clean(project: tuple[Path, Path], tmp_path: Path):
    repo, venv = project
    exp_id = capture(repo, venv)
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    assert status(repo) == ""  # the capture's own caches are local state already
    copy = clone(repo, tmp_path / "clone")
    proc = cli("run", exp_id, "--backend", "venv", "--json", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["report_path"]).parent == copy / ".reprobox" / "local" / "runs"
    assert Path(report["report_path"]).is_file()
    assert status(copy) == ""
    # A second run (and `ls`, `show`) keeps it clean too.
    for args in (("run", exp_id, "--backend", "venv"), ("ls",), ("show", exp_id)):
        assert cli(*args, cwd=copy).returncode == 0
    assert status(copy) == ""


def _commit_links(repo: Path, outside: Path, *links: str) -> None:
    for rel in links:
        link = repo / rel
        if link.is_dir():  # the local state the capture made here
            shutil.rmtree(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(outside, link.parent), link)
    git(repo, "add", "-f", *links)
    git(repo, "commit", "-q", "-m", "links")


def test_committed_local_link_is_refused_before_anything_runs(
    project: tuple[Path, Path], tmp_path: Path
):
    repo, venv = project
    exp_id = capture(repo, venv)
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    outside = tmp_path / "outside"
    outside.mkdir()
    _commit_links(repo, outside, ".reprobox/local")
    copy = clone(repo, tmp_path / "clone")
    assert (copy / ".reprobox" / "local").is_symlink()
    proc = cli("run", exp_id, "--backend", "venv", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    assert ".reprobox/local" in proc.stderr and "symbolic link" in proc.stderr
    assert "phase 4/5 command" not in proc.stderr and "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []
    assert len(git(copy, "worktree", "list").strip().splitlines()) == 1


def test_committed_runs_link_receives_nothing(project: tuple[Path, Path], tmp_path: Path):
    """`.reprobox/runs` (where reports used to go) committed as a link: reports are local state
    now, written under .reprobox/local through no link; the linked folder gets nothing."""
    repo, venv = project
    exp_id = capture(repo, venv)
    outside = tmp_path / "outside"
    outside.mkdir()
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    _commit_links(repo, outside, ".reprobox/runs", ".reprobox/cache")
    copy = clone(repo, tmp_path / "clone")
    proc = cli("run", exp_id, "--backend", "venv", "--json", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["report_path"]).parent == copy / ".reprobox/local/runs"
    assert list(outside.iterdir()) == []
    assert status(copy) == ""


def test_lock_after_an_offline_capture_reseals(project: tuple[Path, Path]):
    repo, venv = project
    first = capture(repo, venv, "--no-lock")
    folder = repo / ".reprobox" / "experiments" / first
    assert not (folder / "requirements.lock").exists()
    proc = cli("lock", first, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    new_id = proc.stdout.strip().splitlines()[-1]
    assert new_id != first and f"{first} is now {new_id}" in proc.stderr
    assert not folder.exists()
    record = json.loads((repo / ".reprobox/experiments" / new_id / "experiment.json").read_text())
    assert record["supersedes"] == first and "requirements.lock" in record["files"]
    old = cli("show", first, cwd=repo)
    assert old.returncode == 2 and f"re-sealed as {new_id}" in old.stderr
    again = cli("lock", new_id, cwd=repo)  # the same lock again: nothing to re-seal
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == new_id
    # Capturing the same run again (lock and all) finds the sealed record.
    assert capture(repo, venv) == new_id
    # An offline capture, then the same run captured with the lock: re-sealed, and said so.
    (repo / "job.py").write_text((repo / "job.py").read_text() + "# v2\n")
    git(repo, "commit", "-qam", "v2")
    offline = capture(repo, venv, "--no-lock")
    subprocess.run([str(venv / "bin" / "python"), "job.py"], cwd=repo, check=True)
    proc = cli(
        "capture",
        "--cmd",
        "python job.py",
        "--metrics",
        "score.json",
        cwd=repo,
        env={**os.environ, "VIRTUAL_ENV": str(venv)},
    )
    online = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0 and online != offline
    assert f"captured before as {offline}" in proc.stderr and online in proc.stderr
    assert not (repo / ".reprobox/experiments" / offline).exists()


@pytest.mark.docker
def test_a_mislabelled_local_image_is_not_used_and_build_keeps_the_clone_clean(
    project: tuple[Path, Path], tmp_path: Path
):
    repo, venv = project
    exp_id = capture(repo, venv)
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    copy = clone(repo, tmp_path / f"sealclone{uuid.uuid4().hex[:8]}")
    from reprobox.build import default_tag

    tag = default_tag(copy, exp_id)
    # Any image under the experiment's default tag (here the bare base image): not this capture.
    base = "python:3.11.7-slim-bookworm"
    subprocess.run([DOCKER, "pull", "-q", base], capture_output=True)
    assert subprocess.run([DOCKER, "tag", base, tag]).returncode == 0
    try:
        proc = cli("run", exp_id, "--backend", "docker", cwd=copy)
        assert f"not using the local image {tag}" in proc.stderr, proc.stderr
        assert "reprobox.experiment is None" in proc.stderr
        assert proc.returncode == 0, proc.stderr
        labels = json.loads(
            subprocess.run(
                [DOCKER, "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert labels["reprobox.experiment"] == exp_id  # rebuilt for this capture
        build = cli("build", exp_id, cwd=copy)
        assert build.returncode == 0, build.stderr
        assert status(copy) == ""
        shown = cli("show", exp_id, cwd=copy)
        assert f"image       {tag}" in shown.stdout
    finally:
        subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)


@pytest.mark.docker
def test_an_image_named_in_a_resealed_record_is_never_used(
    project: tuple[Path, Path], tmp_path: Path
):
    """experiment.json once carried the image tag outside the id. A record re-sealed with an
    `image` field (any image on the runner) gets a rebuilt image of its own; the named image
    never runs."""
    from ..hostile import reseal

    repo, venv = project
    exp_id = capture(repo, venv)
    evil = f"sealtest-evil:{uuid.uuid4().hex[:8]}"
    base = "python:3.11.7-slim-bookworm"
    subprocess.run([DOCKER, "pull", "-q", base], capture_output=True)
    built = subprocess.run(
        [DOCKER, "build", "-q", "-t", evil, "-"],
        capture_output=True,
        input=f"FROM {base}\nLABEL sealtest=canary\n",
        text=True,
    )
    assert built.returncode == 0, built.stderr
    new_id = reseal(
        repo / ".reprobox/experiments" / exp_id, experiment=lambda d: d.update(image=evil)
    )
    git(repo, "add", "-A", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    from reprobox.build import default_tag

    try:
        proc = cli("run", new_id, "--backend", "docker", "--json", cwd=repo)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert evil not in report["environment"] and evil not in proc.stderr
        assert default_tag(repo, new_id) in report["environment"]
        used = json.loads(
            subprocess.run(
                [
                    DOCKER,
                    "image",
                    "inspect",
                    "--format",
                    "{{json .Config.Labels}}",
                    default_tag(repo, new_id),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert used["reprobox.experiment"] == new_id and "sealtest" not in used
        assert status(repo) == ""
    finally:
        subprocess.run([DOCKER, "rmi", "-f", evil, default_tag(repo, new_id)], capture_output=True)
