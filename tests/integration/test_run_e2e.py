"""``reprobox run`` / ``reprobox verify`` end to end, on the real things.

Every scenario is a real git repository with a real virtualenv (scikit-learn from the real package
index), recorded with the real ``reprobox capture`` CLI, pushed to a bare repository and cloned
afresh; in the clone the experiment's image is removed first, then ``reprobox run`` rebuilds and
reruns it on the real Docker daemon (DVC scenarios: real DVC with a local-folder remote, the data
present only in the remote). Nothing here is faked.

Markers: ``docker``, ``network``, ``dvc``, ``slow``. The Python base image
(``python:3.11.7-slim-bookworm``) is built once per session with ``reprobox base``'s code when it
is missing (no registry is needed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ..factories import (
    DOCKER,
    PYTHON_VERSION,
    capture,
    commit,
    find_python,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    run_json,
    sh,
)

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REQUIREMENTS = (EXAMPLES / "dvc-pipeline" / "project" / "requirements.txt").read_text().split()


# --------------------------------------------------------------------------- helpers


#: Experiments whose images the scenarios build; removed when the module is done.
_BUILT: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _remove_built_images():
    yield
    for exp_id in sorted(_BUILT):
        ids = sh(
            ROOT,
            DOCKER,
            "images",
            "-q",
            "--filter",
            f"label=reprobox.experiment={exp_id}",
            check=False,
        )
        for image in sorted(set(ids.stdout.split())):
            sh(ROOT, DOCKER, "rmi", "-f", image, check=False)


def remove_images(exp_id: str) -> None:
    """No image of the experiment on this machine: the run must build it."""
    _BUILT.add(exp_id)
    ids = sh(ROOT, DOCKER, "images", "-q", "--filter", f"label=reprobox.experiment={exp_id}")
    for image in sorted(set(ids.stdout.split())):
        sh(ROOT, DOCKER, "rmi", "-f", image, check=False)
    left = sh(ROOT, DOCKER, "images", "-q", "--filter", f"label=reprobox.experiment={exp_id}")
    assert left.stdout.strip() == ""


def worktrees(repo: Path) -> int:
    out = sh(repo, "git", "worktree", "list", "--porcelain").stdout
    return sum(1 for line in out.splitlines() if line.startswith("worktree "))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str:
    from reprobox.base import build_base

    return build_base(PYTHON_VERSION, "bookworm")


@pytest.fixture(scope="session")
def sklearn_venv(tmp_path_factory: pytest.TempPathFactory, index_access: None) -> Path:
    """One venv of the examples' pinned scikit-learn stack, shared by the scenarios that only
    need it (the same environment digest, so the image layers are shared too)."""
    return make_venv(tmp_path_factory.mktemp("venvs") / "sklearn", *REQUIREMENTS)


def _sklearn_files() -> dict[str, str]:
    project = EXAMPLES / "sklearn-train" / "project"
    return {name: (project / name).read_text() for name in ("train.py", ".gitignore")}


@pytest.fixture(scope="module")
def sklearn_clone(tmp_path_factory: pytest.TempPathFactory, sklearn_venv: Path) -> tuple[Path, str]:
    """The scikit-learn example captured and cloned afresh (shared by the run and verify tests)."""
    where = tmp_path_factory.mktemp("sklearn")
    repo = new_repo(where / "project", _sklearn_files())
    env = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    sh(repo, str(sklearn_venv / "bin" / "python"), "train.py", env={**os.environ, **env})
    data = capture(
        repo,
        sklearn_venv,
        "--name",
        "baseline",
        "--cmd",
        "python train.py",
        "--metrics",
        "metrics.json",
        "--output",
        "model.pkl",
        env=env,
    )
    return publish_and_clone(repo, where), data["id"]


# --------------------------------------------------------------------------- scenarios


@pytest.mark.docker
@pytest.mark.network
def test_sklearn_script_reproduces_in_a_rebuilt_image(sklearn_clone, base_image):
    clone, exp_id = sklearn_clone
    remove_images(exp_id)
    assert not (clone / "metrics.json").exists() and not (clone / "model.pkl").exists()
    status, report, stderr = run_json(clone, "baseline", "--backend", "docker")
    assert status == 0, report["differences"]
    assert report["verdict"] == "reproduced" and report["experiment"] == exp_id
    assert report["backend"] == "docker"
    assert {m["key"]: m["status"] for m in report["metrics"]} == {
        "accuracy": "same",
        "f1_macro": "same",
        "n_train": "same",
    }
    assert [(o["path"], o["status"]) for o in report["outputs"]] == [("model.pkl", "same")]
    assert [p["name"] for p in report["phases"]] == [
        "code",
        "data",
        "environment",
        "command",
        "comparison",
    ]
    # Progress named every phase; the report is saved; nothing is left behind.
    for phase in (
        "reprobox: phase 1/5 code",
        "reprobox: phase 3/5 environment",
        "reprobox: phase 4/5 command",
        "reprobox: phase 5/5 comparison",
    ):
        assert phase in stderr
    saved = json.loads(Path(report["report_path"]).read_text())
    assert saved["verdict"] == "reproduced"
    assert Path(report["report_path"]).parent == clone / ".reprobox" / "local" / "runs"
    assert worktrees(clone) == 1
    # Nothing in the tree changed: the image tag, the report and the caches are local state.
    assert sh(clone, "git", "status", "--porcelain", "--ignored=no").stdout.strip() == ""
    # The second run reuses the image it built.
    status, again, _ = run_json(clone, "baseline", "--backend", "docker")
    assert status == 0 and "already built" in again["environment"]


@pytest.mark.docker
@pytest.mark.network
def test_verify_passes_on_a_rebuilt_image(sklearn_clone, base_image):
    clone, exp_id = sklearn_clone
    remove_images(exp_id)
    done = reprobox(clone, "verify", exp_id, "--backend", "docker", "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["identical"] is True and report["differences"] == []
    assert report["packages_checked"] >= 5
    assert report["interpreter"] == f"cpython {PYTHON_VERSION}"


@pytest.mark.network
def test_sklearn_script_reproduces_in_a_venv(sklearn_clone, tmp_path: Path):
    clone, exp_id = sklearn_clone
    done = reprobox(
        clone,
        "run",
        exp_id,
        "--backend",
        "venv",
        "--json",
        check=False,
        extra_env={"REPROBOX_VENV_DIR": str(tmp_path / "venvs")},
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["differences"]
    assert report["backend"] == "venv" and "built" in report["environment"]
    done = reprobox(
        clone,
        "verify",
        exp_id,
        "--backend",
        "venv",
        check=False,
        extra_env={"REPROBOX_VENV_DIR": str(tmp_path / "venvs")},
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("IDENTICAL")
    assert "reused" in done.stdout


@pytest.mark.docker
@pytest.mark.network
@pytest.mark.dvc
def test_dvc_pipeline_whose_data_is_only_in_the_remote(
    tmp_path: Path, sklearn_venv: Path, base_image: str, dvc_cli: str
):
    project = EXAMPLES / "dvc-pipeline" / "project"
    files = {p.name: p.read_text() for p in project.iterdir() if p.is_file()}
    repo = new_repo(tmp_path / "project", files)
    venv_env = {
        **os.environ,
        "VIRTUAL_ENV": str(sklearn_venv),
        "PATH": f"{sklearn_venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    remote = tmp_path / "dvc-remote"
    sh(repo, dvc_cli, "init", "-q")
    sh(repo, dvc_cli, "remote", "add", "-d", "storage", str(remote))
    sh(repo, "python", "generate_data.py", env=venv_env)
    sh(repo, dvc_cli, "add", "-q", "data/raw.csv", env=venv_env)
    commit(repo, "pipeline")
    sh(repo, dvc_cli, "repro", env=venv_env)
    sh(repo, dvc_cli, "push", "-q", env=venv_env)
    commit(repo, "results")
    data = capture(
        repo,
        sklearn_venv,
        "--name",
        "pipeline",
        env={"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"},
    )
    clone = publish_and_clone(repo, tmp_path)
    # The data is only in the remote: not in the clone, no DVC cache there.
    assert not (clone / "data" / "raw.csv").exists()
    assert not (clone / ".dvc" / "cache").exists()
    remove_images(data["id"])

    # The clone's .dvc/config names the remote; the user trusts it on the command line.
    status, report, stderr = run_json(
        clone, "pipeline", "--backend", "docker", "--dvc-remote", str(remote)
    )
    assert status == 0, report["differences"]
    assert report["command_kind"] == "dvc"
    assert "Running stage 'prepare'" in stderr and "Running stage 'train'" in stderr
    assert {m["key"] for m in report["metrics"]} == {"accuracy", "roc_auc"}
    assert {o["path"]: o["status"] for o in report["dvc_outputs"]} == {
        "data/prepared": "same",
        "data/raw.csv": "same",
        "model.pkl": "same",
    }
    data_phase = next(p for p in report["phases"] if p["name"] == "data")
    assert "downloaded" in data_phase["detail"]
    # The user's tree was not touched; a second run downloads nothing.
    assert not (clone / "data" / "raw.csv").exists()
    status, again, _ = run_json(
        clone, "pipeline", "--backend", "docker", "--dvc-remote", str(remote)
    )
    assert status == 0
    data_phase = next(p for p in again["phases"] if p["name"] == "data")
    assert "nothing to download" in data_phase["detail"]


@pytest.mark.docker
@pytest.mark.network
def test_capture_from_a_dirty_tree_reruns_the_uncommitted_change(
    tmp_path: Path, sklearn_venv: Path, base_image: str
):
    repo = new_repo(tmp_path / "project", _sklearn_files())
    # The uncommitted change: a smaller forest (other metrics than the committed code gives).
    train = repo / "train.py"
    train.write_text(train.read_text().replace("n_estimators=50", "n_estimators=7"))
    env = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    sh(repo, str(sklearn_venv / "bin" / "python"), "train.py", env={**os.environ, **env})
    recorded = json.loads((repo / "metrics.json").read_text())
    data = capture(
        repo,
        sklearn_venv,
        "--name",
        "dirty",
        "--cmd",
        "python train.py",
        "--metrics",
        "metrics.json",
        env=env,
    )
    exp = json.loads(reprobox(repo, "show", data["id"], "--json").stdout)["experiment"]
    assert exp["git"]["dirty"] is True and exp["git"]["patch"] == "patch.diff"
    sh(repo, "git", "checkout", "--", "train.py")  # the change exists only in the capture now
    clone = publish_and_clone(repo, tmp_path)
    assert "n_estimators=50" in (clone / "train.py").read_text()
    remove_images(data["id"])

    status, report, _ = run_json(clone, "dirty", "--backend", "docker")
    assert status == 0, report["differences"]
    observed = {m["key"]: m["observed"] for m in report["metrics"]}
    assert observed["accuracy"] == recorded["accuracy"]


@pytest.mark.docker
@pytest.mark.network
def test_package_installed_editable_from_the_repo(tmp_path: Path, base_image: str):
    files = {
        "mylib/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = '
            '"setuptools.build_meta"\n\n[project]\nname = "mylib"\nversion = "0.3.0"\n'
        ),
        "mylib/src/mylib/__init__.py": (
            "def weighted_total(values):\n"
            "    return sum(i * v for i, v in enumerate(values, start=1))\n"
        ),
        "train.py": (
            "import json\nimport mylib\n"
            "total = mylib.weighted_total([0.5, 1.25, 2.0])\n"
            "json.dump({'total': total}, open('metrics.json', 'w'))\n"
        ),
        ".gitignore": "metrics.json\n",
    }
    repo = new_repo(tmp_path / "project", files)
    venv = make_venv(tmp_path / "venv", "pyyaml==6.0.3", editable=repo / "mylib")
    sh(repo, str(venv / "bin" / "python"), "train.py")
    data = capture(
        repo, venv, "--name", "editable", "--cmd", "python train.py", "--metrics", "metrics.json"
    )
    env_json = json.loads(reprobox(repo, "show", data["id"], "--json").stdout)["environment"]
    mylib = next(p for p in env_json["packages"] if p["name"] == "mylib")
    assert mylib["source"] == {
        "kind": "directory",
        "path": "mylib",
        "editable": True,
        "in_repo": True,
    }
    clone = publish_and_clone(repo, tmp_path)
    remove_images(data["id"])

    status, report, _ = run_json(clone, "editable", "--backend", "docker")
    assert status == 0, report["differences"]
    assert report["metrics"][0]["observed"] == 9.0  # 1*0.5 + 2*1.25 + 3*2.0
    # The package is rebuilt from the repository, editable, at the same path: verify finds the
    # interpreter and every package (name, version, source) identical.
    done = reprobox(clone, "verify", "editable", "--backend", "docker", "--json", check=False)
    report = json.loads(done.stdout)
    assert [d for d in report["differences"] if d["kind"] != "system-package"] == []


@pytest.mark.docker
@pytest.mark.network
def test_random_metric_exits_1_and_names_the_metric(
    tmp_path: Path, sklearn_venv: Path, base_image: str
):
    files = {
        "train.py": (
            "import json, os, random\n"
            "rng = random.Random(os.urandom(16))\n"
            "json.dump({'loss': rng.random(), 'epochs': 3}, open('metrics.json', 'w'))\n"
        ),
        ".gitignore": "metrics.json\n",
    }
    repo = new_repo(tmp_path / "project", files)
    sh(repo, str(sklearn_venv / "bin" / "python"), "train.py")
    data = capture(
        repo,
        sklearn_venv,
        "--name",
        "noisy",
        "--cmd",
        "python train.py",
        "--metrics",
        "metrics.json",
    )
    clone = publish_and_clone(repo, tmp_path)
    remove_images(data["id"])

    done = reprobox(clone, "run", "noisy", "--backend", "docker", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("DIFFERS")
    assert "metric loss in metrics.json: recorded" in done.stdout
    assert "epochs" not in "\n".join(x for x in done.stdout.splitlines() if x.startswith("  - "))
    runs = list((clone / ".reprobox" / "local" / "runs").glob(f"{data['id']}-*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["verdict"] == "differs"


@pytest.mark.docker
@pytest.mark.network
def test_network_none_is_hermetic(sklearn_clone, base_image, tmp_path: Path):
    """`--network none`: the same experiment still reproduces (it needs no network)."""
    clone, exp_id = sklearn_clone
    status, report, _ = run_json(clone, exp_id, "--backend", "docker", "--network", "none")
    assert status == 0 and report["network"] == "none"


@pytest.mark.docker
def test_files_the_container_writes_belong_to_the_invoking_user(
    tmp_path: Path, base_image, monkeypatch
):
    """As another uid than root (the tests run as root here), so the check can fail."""
    from reprobox.backends import Prepared
    from reprobox.backends import docker as docker_mod
    from reprobox.engine import get_engine

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    checkout.chmod(0o777)
    # A user with uid 65534 and gid 65533: the container runs as them, nothing is lent.
    monkeypatch.setattr(docker_mod, "container_uid_gid", lambda: (65534, 65533))
    monkeypatch.setattr(docker_mod, "hand_over", lambda checkout, uid, gid: None)
    backend = docker_mod.DockerBackend(get_engine())
    prepared = Prepared("docker", base_image, "", True, "python")
    script = "id -u > made.txt; echo $HOME >> made.txt; ls / | tr '\\n' ' ' >> made.txt"
    done = backend.execute(
        prepared, ["/bin/sh", "-c", script], checkout=checkout, env={}, capture=True
    )
    assert done.returncode == 0, done.stdout
    made = checkout / "made.txt"
    assert (made.stat().st_uid, made.stat().st_gid) == (65534, 65533)
    uid, home, top = made.read_text().splitlines()
    assert (uid, home) == ("65534", "/tmp")
    assert "workspace" in top.split()
    # Nothing else of the host is mounted: no docker socket, no host home.
    script = 'test ! -e /var/run/docker.sock && test ! -e /root/.ssh && test -z "$SSH_AUTH_SOCK"'
    done = backend.execute(
        prepared, ["/bin/sh", "-c", script], checkout=checkout, env={}, capture=True
    )
    assert done.returncode == 0


@pytest.fixture(scope="session")
def reprobox_wheel_links(tmp_path_factory: pytest.TempPathFactory) -> str:
    """reprobox as a wheel in a find-links folder, as if published: installable, lockable."""
    links = tmp_path_factory.mktemp("links")
    sh(ROOT, sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(links), str(ROOT))
    current = os.environ.get("PIP_FIND_LINKS", "")
    return " ".join(p for p in (current, str(links)) if p)


@pytest.mark.docker
@pytest.mark.network
def test_script_that_records_itself_replays_its_inline_metrics(
    tmp_path: Path, base_image, reprobox_wheel_links: str
):
    """`reprobox.capture(metrics=...)` from the training script: on the rerun the same call, in
    the container, reports the values instead of capturing (REPROBOX_RUN_METRICS)."""
    files = {
        "train.py": (
            "import random\nimport reprobox\n"
            "rng = random.Random(42)\n"
            "acc = sum(rng.random() for _ in range(100)) / 100\n"
            "exp = reprobox.capture(name='selfrec', metrics={'accuracy': acc, "
            "'nested': {'loss': 1 - acc}})\n"
            "print('replay' if exp.replay else 'captured', exp.id)\n"
        ),
        ".gitignore": ".venv/\n",
    }
    repo = new_repo(tmp_path / "project", files)
    links_env = {**os.environ, "PIP_FIND_LINKS": reprobox_wheel_links}
    venv = tmp_path / "venv"
    sh(repo, find_python(), "-m", "venv", str(venv))
    sh(
        repo,
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "reprobox==0.1.0",
        env=links_env,
    )
    first = sh(repo, str(venv / "bin" / "python"), "train.py", env=links_env)
    exp_id = first.stdout.split()[-1]
    assert first.stdout.startswith("captured")
    commit(repo, "capture", ".reprobox")
    clone = publish_and_clone(repo, tmp_path)
    remove_images(exp_id)

    done = reprobox(
        clone,
        "run",
        exp_id,
        "--backend",
        "docker",
        "--json",
        check=False,
        extra_env={"PIP_FIND_LINKS": reprobox_wheel_links},
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["differences"]
    assert {(m["file"], m["key"], m["status"]) for m in report["metrics"]} == {
        ("<inline>", "accuracy", "same"),
        ("<inline>", "nested.loss", "same"),
    }
    assert f"replay {exp_id}" in done.stderr  # the script's own output: it did not capture again
    # ... and no new experiment appeared anywhere.
    assert sorted(p.name for p in (clone / ".reprobox" / "experiments").iterdir()) == [exp_id]
