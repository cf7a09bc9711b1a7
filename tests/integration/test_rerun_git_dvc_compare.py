"""A DVC pipeline rerun on the real things: git inside the container, only the pipeline's inputs
pulled, files named inside a differing output folder, ``--ignore-output``, a CSV compared with a
tolerance, and a system package whose recorded version left the archive (a substitution).

The project: ``data/input.csv`` (``dvc add``-ed, the only thing pushed to a local-folder remote)
and one stage, ``python stamp.py``, that

* writes ``git rev-parse HEAD`` into the metrics file ``commit.json`` (git must work in the
  rerun's container: its worktree's ``.git`` names a host path the container does not have);
* writes the folder ``out/`` with ``same.txt`` (identical everywhere), ``where.txt`` ("original"
  or "rerun", so it differs in the rerun) and ``scores.csv`` (0.5 originally, 0.5000001 in the
  rerun: within ``--rtol 1e-5``).

The capture's environment gets the system package ``git`` (the image needs it for the stage) at a
version the Debian archive never had, re-sealed with tests/hostile.py: the build installs the
current ``git`` and the verdict lists the substitution. reprobox runs with a PATH that has no
``dvc``: the DVC that pulls and orchestrates comes with reprobox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.factories import reprobox_exe, sh
from tests.hostile import reseal

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.network, pytest.mark.dvc]

PYTHON_VERSION = "3.11.7"
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)
GONE_VERSION = "1:2.0.0-0reprobox1"

STAMP = """\
import os, subprocess
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                      check=True).stdout.strip()
with open("commit.json", "w") as fh:
    fh.write('{"commit": "%s"}' % head)
inside = "REPROBOX_EXPERIMENT" in os.environ  # set by `reprobox run` for the rerun
os.makedirs("out", exist_ok=True)
with open("out/same.txt", "w") as fh:
    fh.write(open("data/input.csv").read().upper())
with open("out/where.txt", "w") as fh:
    fh.write("rerun\\n" if inside else "original\\n")
with open("out/scores.csv", "w") as fh:
    fh.write("name,score\\nmodel,%s\\n" % ("0.5000001" if inside else "0.5"))
"""

DVC_YAML = """\
stages:
  stamp:
    cmd: python stamp.py
    deps:
      - stamp.py
      - data/input.csv
    outs:
      - out
    metrics:
      - commit.json:
          cache: false
"""


def path_without_dvc() -> str:
    """PATH with no folder that holds a ``dvc`` program."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "dvc").exists()
    ]
    return os.pathsep.join(keep)


def reprobox(
    cwd: Path, *args: str, venv: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = path_without_dvc()
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return sh(cwd, reprobox_exe(), *args, env=env, check=check)


@pytest.fixture(scope="module")
def base_image(docker_daemon: None) -> str:
    from reprobox.base import build_base

    return build_base(PYTHON_VERSION, "bookworm")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base_image: str, dvc_cli: str):
    from reprobox.backends.venv import find_interpreter

    where = tmp_path_factory.mktemp("rerun-project")
    venv = where / "venv"
    sh(where, str(find_interpreter(PYTHON_VERSION)), "-m", "venv", str(venv))
    repo = where / "project"
    (repo / "data").mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "config", "user.email", "dev@example.org")
    sh(repo, "git", "config", "user.name", "Dev")
    (repo / "stamp.py").write_text(STAMP)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "data" / "input.csv").write_text("a,b\n1,2\n")
    remote = where / "dvc-remote"
    sh(repo, dvc_cli, "init", "-q")
    sh(repo, dvc_cli, "remote", "add", "-d", "storage", str(remote))
    sh(repo, dvc_cli, "add", "-q", "data/input.csv")
    # Only the input is pushed: the stage's outputs are recomputed by the rerun, never pulled.
    sh(repo, dvc_cli, "push", "-q", "data/input.csv.dvc")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "pipeline")
    commit = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    venv_env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    sh(repo, dvc_cli, "repro", "-q", env=venv_env)
    assert json.loads((repo / "commit.json").read_text()) == {"commit": commit}
    # The results are staged, not committed: the capture's commit is the one the stage read.
    sh(repo, "git", "add", "dvc.lock", "commit.json")
    done = reprobox(repo, "capture", "--json", "--name", "pipeline", venv=venv)
    exp_id = json.loads(done.stdout)["id"]
    folder = repo / ".reprobox" / "experiments" / exp_id

    from reprobox.capture.system import apt_sources

    # The build installs from this host's own apt sources (Debian's archive, signatures on).
    sources, _warnings = apt_sources()

    def add_git(env: dict) -> None:
        env["system_packages"].append(
            {"name": "git", "version": GONE_VERSION, "manager": "dpkg", "libraries": []}
        )
        env["apt_sources"] = [s.to_dict() for s in sources]

    new_id = reseal(folder, environment=add_git)
    yield repo, new_id, commit, remote
    ids = sh(
        repo, DOCKER, "images", "-q", "--filter", f"label=reprobox.experiment={new_id}", check=False
    ).stdout.split()
    for image in sorted(set(ids)):
        sh(repo, DOCKER, "rmi", "-f", image, check=False)


def run(repo: Path, exp: str, remote: Path, *args: str) -> tuple[int, dict, str]:
    done = reprobox(
        repo,
        "run",
        exp,
        "--backend",
        "docker",
        "--dvc-remote",
        str(remote),
        "--json",
        *args,
        check=False,
    )
    assert done.returncode in (0, 1), f"reprobox run failed:\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(done.stdout), done.stderr


def test_the_rerun_reads_git_pulls_inputs_only_and_names_the_differing_file(project):
    repo, exp_id, commit, remote = project
    status, report, stderr = run(repo, exp_id, remote)
    assert status == 1, json.dumps(report, indent=1) + stderr[-3000:]
    assert report["schema"] == "reprobox.run/2"
    # git in the container: the recorded commit, read by the stage, equals the recorded metric
    metric = {m["key"]: m for m in report["metrics"]}["commit"]
    assert metric["status"] == "same" and metric["observed"] == commit
    # only the pipeline's input was pulled (its outputs are not in the remote)
    data = next(p for p in report["phases"] if p["name"] == "data")
    assert "input(s) (data/input.csv.dvc)" in data["detail"]
    # the folder's difference names the file inside, and the CSV's first differing value
    out = {o["path"]: o for o in report["dvc_outputs"]}["out"]
    assert out["status"] == "differs" and out["algorithm"] == "md5"
    assert out["recorded_md5"].endswith(".dir") and "recorded_sha256" not in out
    files = {f["path"]: f for f in out["files"]}
    assert set(files) == {"where.txt", "scores.csv"}  # same.txt is the same
    assert files["scores.csv"]["detail"] == ("row 2, column score: recorded 0.5, now 0.5000001")
    text = " ".join(report["differences"])
    assert "where.txt differs" in text and "same.txt" not in text
    # the system package whose version left the archive: a substitution, listed
    assert report["substitutions"] == [
        f"system package git={GONE_VERSION}: no longer in the archive, "
        + report["substitutions"][0].rsplit(", ", 1)[1]
    ]
    assert "installed" in report["substitutions"][0]


def test_ignore_output_and_csv_tolerance_reproduce_with_substitutions(project):
    repo, exp_id, _commit, remote = project
    status, report, _ = run(
        repo, exp_id, remote, "--ignore-output", "out/where.txt", "--rtol", "1e-5"
    )
    assert status == 0, report["differences"]
    assert report["verdict"] == "reproduced with substitutions"
    out = {o["path"]: o for o in report["dvc_outputs"]}["out"]
    assert out["status"] == "close"
    assert {f["path"]: f["status"] for f in out["files"]} == {
        "where.txt": "ignored",
        "scores.csv": "close",
    }
    done = reprobox(
        repo,
        "run",
        exp_id,
        "--backend",
        "docker",
        "--dvc-remote",
        str(remote),
        "--ignore-output",
        "out/where.txt",
        "--rtol",
        "1e-5",
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith(f"REPRODUCED WITH SUBSTITUTIONS: experiment {exp_id}")
    assert f"system package git={GONE_VERSION}: no longer in the archive" in done.stdout
    # --strict: a substitution fails the run
    status, report, _ = run(
        repo, exp_id, remote, "--ignore-output", "out/where.txt", "--rtol", "1e-5", "--strict"
    )
    assert status == 1 and report["strict"] is True and report["differences"] == []


def test_verify_lists_the_substitution_instead_of_a_difference(project):
    repo, exp_id, _commit, _remote = project
    done = reprobox(repo, "verify", exp_id, "--backend", "docker", "--json", check=False)
    report = json.loads(done.stdout)
    assert report["differences"] == [], report["differences"]
    assert done.returncode == 0 and report["verdict"] == "identical with substitutions"
    assert len(report["substitutions"]) == 1
    assert report["substitutions"][0].startswith(f"system package git={GONE_VERSION}: ")
    strict = reprobox(
        repo, "verify", exp_id, "--backend", "docker", "--strict", "--json", check=False
    )
    assert strict.returncode == 1 and json.loads(strict.stdout)["strict"] is True
