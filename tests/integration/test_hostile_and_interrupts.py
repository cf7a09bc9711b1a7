"""A capture from a stranger is refused before anything runs; a stopped daemon and Ctrl-C in the
middle of a run give one clear message and leave no worktree or container behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.model import OutputFile
from reprobox.store import Store

from ..conftest import git
from ..hostile import reseal

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_project(git_repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A repository with a tiny venv (pip only) and a committed script."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (git_repo / "job.py").write_text(
        "import json, sys, time\n"
        "secs = float(sys.argv[1]) if len(sys.argv) > 1 else 0\n"
        "time.sleep(secs)\n"
        "json.dump({'score': 1.5}, open('score.json', 'w'))\n"
    )
    (git_repo / ".gitignore").write_text("score.json\n")
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "job")
    return git_repo, venv


def capture(repo: Path, venv: Path, *args: str) -> str:
    subprocess.run([str(venv / "bin" / "python"), "job.py"], cwd=repo, check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    proc = cli("capture", "--metrics", "score.json", *args, cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def plant(repo: Path, exp_id: str, **changes: object) -> str:
    """Rewrite a stored experiment with hostile values and a matching id, as an attacker would."""
    store = Store(repo)
    stored = store.load(exp_id)
    hostile = replace(stored.experiment, **changes).with_id()  # type: ignore[arg-type]
    return store.save(
        hostile,
        stored.environment,
        {
            p.name: p.read_bytes()
            for p in stored.path.iterdir()
            if p.name not in ("experiment.json", "environment.json")
        },
    ).id


HOSTILE = [
    ("cwd", {"cwd": "../../etc"}, "cwd"),
    ("metrics path", {"metrics": {"../../../etc/passwd": {"x": 1}}}, "metrics file"),
    ("output path", {"outputs": (OutputFile("/etc/shadow", "0" * 64, 1),)}, "outputs[0].path"),
    ("command with NUL", {"command": "python job.py\x00; rm -rf /"}, "command"),
    ("env injection", {"env": {"LD_PRELOAD": "/tmp/evil.so"}}, "env"),
]


@pytest.mark.parametrize("label,changes,field", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_capture_is_refused_before_anything_runs(small_project, label, changes, field):
    repo, venv = small_project
    exp_id = capture(repo, venv, "--cmd", "python job.py", "--no-lock")
    bad = plant(repo, exp_id, **changes)
    for args in (["run", bad, "--backend", "venv"], ["build", bad, "--dry-run"], ["show", bad]):
        proc = cli(*args, cwd=repo)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "refusing" in proc.stderr and field in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    runs = repo / ".reprobox" / "local" / "runs"
    assert not runs.exists() or not list(runs.iterdir())
    assert "worktree" not in git(repo, "worktree", "list").split("\n")[1:2]


def test_hostile_patch_is_refused(small_project):
    repo, venv = small_project
    (repo / "job.py").write_text((repo / "job.py").read_text() + "# changed\n")
    exp_id = capture(repo, venv, "--cmd", "python job.py", "--no-lock")
    folder = Store(repo).experiments_dir / exp_id
    evil = (
        b"diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
        b"new file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n"
        b"@@ -0,0 +1 @@\n+touch /tmp/pwned\n"
    )
    (folder / "patch.diff").write_bytes(evil)
    proc = cli("run", exp_id, "--backend", "venv", cwd=repo)  # the seal names the edited file
    assert proc.returncode == 2 and "patch.diff was changed after capture" in proc.stderr, (
        proc.stderr
    )
    # Re-sealed as an attacker would (patch_sha256 too): the patch's own check refuses it.
    resealed = reseal(
        folder, experiment=lambda d: d["git"].update(patch_sha256=hashlib.sha256(evil).hexdigest())
    )
    proc = cli("run", resealed, "--backend", "venv", cwd=repo)
    assert proc.returncode == 2 and "patch" in proc.stderr and ".git" in proc.stderr, proc.stderr
    assert len(git(repo, "worktree", "list").strip().splitlines()) == 1


@pytest.mark.docker
def test_stopped_daemon_is_one_clear_message(small_project, tmp_path: Path):
    repo, venv = small_project
    exp_id = capture(repo, venv, "--cmd", "python job.py", "--no-lock")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    for args in (
        ["build", exp_id],
        ["run", exp_id, "--backend", "docker"],
        ["verify", exp_id, "--backend", "docker"],
    ):
        proc = cli(*args, cwd=repo, env=env)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "daemon" in proc.stderr.lower() and "fix:" in proc.stderr, proc.stderr
    assert len(git(repo, "worktree", "list").strip().splitlines()) == 1


def _containers(label_value: str) -> list[str]:
    out = subprocess.run(
        [DOCKER, "ps", "-aq", "--filter", f"ancestor={label_value}"], capture_output=True, text=True
    )
    return out.stdout.split()


@pytest.mark.docker
@pytest.mark.network
@pytest.mark.slow
def test_ctrl_c_during_a_container_run_cleans_up(small_project, tmp_path: Path):
    repo, venv = small_project
    exp_id = capture(repo, venv, "--cmd", "python job.py 120")
    build = cli("build", exp_id, cwd=repo)
    assert build.returncode == 0, build.stderr
    tag = build.stdout.strip().splitlines()[-1]
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    p = subprocess.Popen(
        [sys.executable, "-m", "reprobox.cli", "run", exp_id, "--backend", "docker"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _containers(tag):
        time.sleep(0.5)
    assert _containers(tag), "the container never started"
    time.sleep(1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(1)
    assert _containers(tag) == []
    assert len(git(repo, "worktree", "list").strip().splitlines()) == 1
    subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)


def test_report_json_is_valid_after_a_venv_run(small_project):
    # Sanity of the success path the refusals above are measured against.
    repo, venv = small_project
    exp_id = capture(repo, venv, "--cmd", "python job.py")
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    proc = cli("run", exp_id, "--backend", "venv", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == "reprobox.run/2" and report["verdict"] == "reproduced"


@pytest.mark.docker
@pytest.mark.network
@pytest.mark.slow
def test_ctrl_c_during_an_image_build(git_repo: Path, tmp_path: Path):
    """SIGINT while BuildKit installs the locked packages: exit 130, the build child is gone,
    and the committed record does not claim an image."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "numpy"], check=True
    )
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    cap = cli("capture", "--cmd", "python -c 'import numpy'", cwd=git_repo, env=env)
    assert cap.returncode == 0, cap.stderr
    exp_id = cap.stdout.strip().splitlines()[-1]
    before = (git_repo / ".reprobox/experiments" / exp_id / "experiment.json").read_text()
    p = subprocess.Popen(
        [sys.executable, "-m", "reprobox.cli", "build", exp_id, "--no-cache"],
        cwd=git_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stderr is not None
    seen = []
    for line in p.stderr:
        seen.append(line)
        if "Locked Python packages" in line:
            break
    else:
        pytest.fail("the build never reached the package layer:\n" + "".join(seen))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    err = "".join(seen) + err
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    children = subprocess.run(
        ["pgrep", "-f", f"reprobox/.*:{exp_id}"], capture_output=True, text=True
    ).stdout.split()
    assert children == [], "a build process outlived the interrupt"
    after = (git_repo / ".reprobox/experiments" / exp_id / "experiment.json").read_text()
    assert after == before
