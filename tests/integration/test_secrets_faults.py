"""Secrets never reach a record or the output; faults give one clear message and leave nothing
half-written. Everything here drives the real CLI in a real git repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import git, require
from ..fixtures.lock.silent import SilentIndex
from ..saved_image import where_in_image

CANARY = "CANARYc4n4ry7f3e"


def reprobox(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def store_text(repo: Path) -> str:
    out = []
    for p in (repo / ".reprobox").rglob("*"):
        if p.is_file():
            out.append(p.read_bytes().decode(errors="replace"))
    return "\n".join(out)


@pytest.fixture
def project(git_repo: Path) -> Path:
    (git_repo / "train.py").write_text(
        "import json\njson.dump({'acc': 0.75}, open('m.json','w'))\n"
    )
    (git_repo / "m.json").write_text('{"acc": 0.75}\n')
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "train")
    return git_repo


def test_canaries_appear_nowhere(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".netrc").write_text(f"machine pypi.org login me password {CANARY}netrc\n")
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"x": {"auth": CANARY + "docker"}}})
    )
    pipconf = tmp_path / "pip.conf"
    # A credentialed extra index on a closed loopback port: the lock cannot reach it, and the
    # warning about it must not show the credential.
    pipconf.write_text(
        f"[global]\nextra-index-url = http://user:{CANARY}pipconf@127.0.0.1:9/simple\n"
    )
    git(
        project,
        "remote",
        "add",
        "origin",
        f"https://bob:{CANARY}remote@git.example.com/team/demo.git",
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "PIP_CONFIG_FILE": str(pipconf),
        "PIP_INDEX_URL": f"http://token:{CANARY}pipenv@127.0.0.1:9/simple",
        "MY_API_TOKEN": CANARY + "envtoken",
        "AWS_SECRET_ACCESS_KEY": CANARY + "aws",
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    proc = reprobox(
        "capture",
        "--cmd",
        "python train.py",
        "--metrics",
        "m.json",
        "--python",
        sys.executable,
        cwd=project,
        env=env,
    )
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    text = store_text(project)
    assert CANARY not in text
    exp_id = proc.stdout.strip().splitlines()[-1]
    data = json.loads((project / ".reprobox/experiments" / exp_id / "experiment.json").read_text())
    assert data["git"]["remote"] == "https://git.example.com/team/demo.git"
    assert data["env"]["OMP_NUM_THREADS"] == "1" and data["env"]["PYTHONHASHSEED"] == "0"
    assert not any("TOKEN" in k or "SECRET" in k for k in data["env"])
    # The unreachable index leaves the lock to later, with a warning that names the fix.
    assert "reprobox lock" in proc.stderr
    for cmd in (["show", exp_id, "--json"], ["ls"], ["pr", exp_id], ["diff", exp_id, exp_id]):
        out = reprobox(*cmd, cwd=project, env=env)
        assert out.returncode == 0, out.stderr
        assert CANARY not in out.stdout + out.stderr


def test_index_unreachable_then_lock_completes(project: Path, tmp_path: Path) -> None:
    pipconf = tmp_path / "pip.conf"
    pipconf.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\n")
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": str(pipconf),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
    }
    proc = reprobox(
        "capture", "--cmd", "python train.py", "--python", sys.executable, cwd=project, env=env
    )
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "lock" in proc.stderr and "reprobox lock" in proc.stderr
    exp_id = proc.stdout.strip().splitlines()[-1]
    folder = project / ".reprobox/experiments" / exp_id
    assert not (folder / "requirements.lock").exists()
    # Still unreachable: `reprobox lock` fails cleanly, naming the fix.
    again = reprobox("lock", exp_id, cwd=project, env=env)
    no_traceback(again)
    assert again.returncode == 3
    assert "127.0.0.1:9" in again.stderr and "fix:" in again.stderr


def test_slow_index_is_bounded(project: Path, tmp_path: Path) -> None:
    with SilentIndex() as srv:
        url = srv.url
        env = {
            **os.environ,
            "PIP_INDEX_URL": url,
            "PIP_EXTRA_INDEX_URL": "",
            "PIP_FIND_LINKS": "",
            "PIP_CONFIG_FILE": os.devnull,
            "REPROBOX_INDEX_TIMEOUT": "3",
            "PIP_DEFAULT_TIMEOUT": "3",
        }
        proc = reprobox(
            "capture",
            "--cmd",
            "python train.py",
            "--python",
            sys.executable,
            cwd=project,
            env=env,
            timeout=300,
        )
        no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
        assert "reprobox lock" in proc.stderr


def test_git_missing(project: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # A PATH with Python but without git.
    (bindir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bindir)}
    proc = reprobox(
        "capture", "--cmd", "python train.py", "--python", sys.executable, cwd=project, env=env
    )
    no_traceback(proc)
    assert proc.returncode == 3
    assert "git" in proc.stderr and "fix:" in proc.stderr
    assert not (project / ".reprobox" / "experiments").exists() or not any(
        (project / ".reprobox" / "experiments").iterdir()
    )


def test_bad_inputs_are_clear(project: Path) -> None:
    (project / "m$(id).json").write_text('{"a": 1}\n')
    cases = [
        (["capture", "--metrics", "missing.json", "--no-lock"], 2, "missing.json"),
        (["capture", "--name", "x;rm -rf /", "--no-lock"], 2, "--name"),
        (["capture", "--metrics", "m$(id).json", "--no-lock"], 2, "cannot be recorded"),
        (["capture", "--output", "../outside.bin", "--no-lock"], 2, "outside"),
        (["capture", "--python", "/nonexistent/python", "--no-lock"], 3, "/nonexistent/python"),
        (["run", "nothing-here"], 2, "no experiment"),
        (["diff", "abc"], 2, "no experiment"),
    ]
    for args, code, needle in cases:
        proc = reprobox(*args, cwd=project)
        no_traceback(proc)
        assert proc.returncode == code, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    assert not (project / ".reprobox" / "experiments").exists() or not any(
        (project / ".reprobox" / "experiments").iterdir()
    )


def test_disk_full_leaves_nothing(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "root (to mount a tiny tmpfs)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        repo = mnt / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "a.txt").write_text("x\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "init")
        # Fill the filesystem so the store cannot be written.
        try:
            with open(mnt / "filler", "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * 4096)
        except OSError:
            pass
        proc = reprobox(
            "capture", "--cmd", "true", "--no-lock", "--python", sys.executable, cwd=repo
        )
        no_traceback(proc)
        assert proc.returncode == 3
        assert "disk is full" in proc.stderr or "No space left" in proc.stderr
        exps = repo / ".reprobox" / "experiments"
        assert not exps.exists() or [p.name for p in exps.iterdir()] == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_ctrl_c_during_capture_leaves_nothing(project: Path, tmp_path: Path) -> None:
    # A target "python" that hangs in the probe, so the capture is interrupted mid-way.
    slow = tmp_path / "slowpython"
    slow.write_text(f'#!/bin/sh\nsleep 30\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reprobox.cli",
            "capture",
            "--cmd",
            "true",
            "--no-lock",
            "--python",
            str(slow),
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    exps = project / ".reprobox" / "experiments"
    assert not exps.exists() or [x.name for x in exps.iterdir()] == []


@pytest.mark.docker
@pytest.mark.network
def test_no_canary_reaches_a_built_image(project: Path, tmp_path: Path) -> None:
    """Home-folder credentials, secret-looking variables and a credentialed remote are in the
    environment of capture and build; `docker save` of the image holds none of them."""
    import platform
    import shutil

    from reprobox.base import build_base, host_release

    require(
        os.geteuid() == 0 and shutil.which("debootstrap") is not None,
        "root and debootstrap (to build the base image; scripts/setup.sh installs it)",
    )
    _id, codename = host_release()
    build_base(platform.python_version(), codename or "bookworm")
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"

    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".netrc").write_text(f"machine example.com login me password {CANARY}netrc\n")
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"example.com": {"auth": CANARY + "docker"}}})
    )
    git(project, "remote", "add", "origin", f"https://bob:{CANARY}remote@git.example.com/t/d.git")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "VIRTUAL_ENV": str(venv),
        "MY_API_TOKEN": CANARY + "env",
        "DOCKER_CONFIG": str(home / ".docker"),
    }
    proc = reprobox("capture", "--cmd", "python train.py", "--build", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    tag = json.loads(reprobox("show", "latest", "--json", cwd=project, env=env).stdout)[
        "image"
    ]  # local state, beside the sealed record
    assert tag
    try:
        # Every file of every layer, configs and manifests, in either layout docker save writes.
        assert where_in_image(tag, CANARY.encode(), tmp_path, docker) == []
        history = subprocess.run(
            [docker, "history", "--no-trunc", tag], capture_output=True, text=True
        ).stdout
        inspect = subprocess.run(
            [docker, "image", "inspect", tag], capture_output=True, text=True
        ).stdout
        assert CANARY not in history and CANARY not in inspect
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
