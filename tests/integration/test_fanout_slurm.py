"""``reprobox run --all --on slurm`` on a real single-node Slurm (scripts/start-slurm.sh), from a
fresh clone, with the real Docker daemon and the real package index.

Three experiments: one reproduces, one differs (a random metric), one fails to build (its lock
names a version the index does not have; re-sealed with tests/hostile.py). Then the faults: a
node without any engine (the tasks' PATH has no docker, podman or apptainer) and a task cancelled
by the scheduler (scancel) while its container runs; each is one line in the summary, and the
other experiment of the same array is unaffected.

The experiments that build are published first (`reprobox push` to the local registry of
scripts/start-registry.sh, images.json committed): the tasks pull their images by digest. The
registry faults: a record naming a registry that is down, and one naming another experiment's
image (labels that do not match): each run builds instead and says why in its summary line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.hostile import reseal

from ..factories import (
    DOCKER,
    capture,
    commit,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    reprobox_exe,
    sh,
)
from .test_run_e2e import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.network]


@pytest.fixture(autouse=True)
def _this_machine_trusts_the_local_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry the tests push to is one this machine trusts (the host's configuration)."""
    monkeypatch.setenv("REPROBOX_REGISTRIES", "127.0.0.1:5000")


STEADY = "import json\njson.dump({'acc': 0.5, 'epochs': 3}, open('metrics.json', 'w'))\n"
NOISY = (
    "import json, os, random\nrng = random.Random(os.urandom(16))\n"
    "json.dump({'loss': rng.random()}, open('noisy.json', 'w'))\n"
)
#: Sleeps only when rerun (reprobox sets REPROBOX_EXPERIMENT), long enough to be cancelled.
SLEEPY = (
    "import json, os, time\njson.dump({'n': 1}, open('sleepy.json', 'w'))\n"
    "time.sleep(600 if os.environ.get('REPROBOX_EXPERIMENT') else 0)\n"
)


@pytest.fixture(scope="module")
def slurm() -> None:
    script = ROOT / "scripts" / "start-slurm.sh"
    ok = os.geteuid() == 0 or bool(shutil.which("sbatch"))
    require(ok, "root to start Slurm (scripts/start-slurm.sh)")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    require(done.returncode == 0, f"a single-node Slurm ({done.stderr.strip()[-300:]})")


REGISTRY = "127.0.0.1:5000/fanout-tests"
_MADE: set[str] = set()  # the experiments whose images the module builds or pulls


@pytest.fixture(scope="module")
def registry() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-registry.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    require(done.returncode == 0, f"a local registry ({done.stderr.strip()[-300:]})")


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    slurm: None,
    registry: None,
    index_access: None,
    docker_daemon: None,
) -> tuple[Path, dict[str, str]]:
    where = tmp_path_factory.mktemp("fanout")
    venv = make_venv(where / "venv", "six==1.16.0")
    repo = new_repo(
        where / "project",
        {
            "steady.py": STEADY,
            "noisy.py": NOISY,
            "sleepy.py": SLEEPY,
            ".gitignore": "metrics.json\nnoisy.json\nsleepy.json\n",
        },
    )
    py = str(venv / "bin" / "python")
    ids: dict[str, str] = {}
    for name, script, metrics in (
        ("steady", "steady.py", "metrics.json"),
        ("noisy", "noisy.py", "noisy.json"),
        ("broken", "steady.py", "metrics.json"),
        ("sleepy", "sleepy.py", "sleepy.json"),
    ):
        sh(repo, py, script)
        ids[name] = capture(
            repo, venv, "--name", name, "--cmd", f"python {script}", "--metrics", metrics
        )["id"]
    folder = repo / ".reprobox" / "experiments" / ids["broken"]
    lock = folder / "requirements.lock"
    lock.write_text(lock.read_text().replace("six==1.16.0", "six==99.0.0"))
    pylock = folder / "pylock.toml"
    pylock.write_text(pylock.read_text().replace('version = "1.16.0"', 'version = "99.0.0"'))

    def bump(env: dict) -> None:
        for p in env["packages"]:
            if p["name"] == "six":
                p["version"] = "99.0.0"

    ids["broken"] = reseal(folder, environment=bump)
    _MADE.update(ids.values())
    commit(repo, "a capture whose lock names a version the index does not have")
    for name in ("steady", "noisy", "sleepy"):
        reprobox(repo, "push", ids[name], "--registry", REGISTRY)
    commit(repo, "publish the images")
    return publish_and_clone(repo, where), ids


@pytest.fixture(scope="module", autouse=True)
def _remove_the_images():
    """Every image of this module's experiments, removed by name at the end (tags and digest
    references; never by image id)."""
    yield
    for exp_id in sorted(_MADE):
        drop_images(exp_id)


def drop_images(exp_id: str) -> None:
    """No image of the experiment here (removed by tag and digest reference, never by id)."""
    for _ in range(3):
        names = subprocess.run(
            [
                DOCKER,
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
                "--filter",
                f"label=reprobox.experiment={exp_id}",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        names = sorted({n for n in names if "<none>" not in n})
        if not names:
            return
        for name in names:
            subprocess.run([DOCKER, "rmi", name], capture_output=True)


def fan_out(clone: Path, *args: str, env: dict | None = None) -> tuple[int, dict, str]:
    done = reprobox(
        clone,
        "run",
        *args,
        "--on",
        "slurm",
        "--json",
        "--timeout",
        "900",
        check=False,
        extra_env=env,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def by_name(summary: dict) -> dict[str, dict]:
    return {e["name"]: e for e in summary["experiments"]}


def test_three_experiments_one_array_reproduced_differs_failed(project):
    clone, ids = project
    status, summary, _ = fan_out(clone, ids["steady"], ids["noisy"], ids["broken"])
    assert status == 1 and summary["on"] == "slurm" and not summary["ok"]
    assert summary["counts"] == {"reproduced": 1, "differs": 1, "failed": 1}
    e = by_name(summary)
    assert e["steady"]["status"] == "reproduced"
    assert e["noisy"]["status"] == "differs" and e["noisy"]["differing_metrics"] == [
        "noisy.json:loss"
    ]
    assert e["broken"]["status"] == "failed" and "99.0.0" in e["broken"]["reason"]
    for name in ("steady", "noisy"):  # pulled from the registry, not built on the node
        assert "pulled by digest" in e[name]["report"]["environment"], e[name]["report"]
        assert REGISTRY in e[name]["report"]["environment"]
    job = summary["details"]["job"]
    assert {x["where"].split()[1].split("_")[0] for x in summary["experiments"]} == {job}
    saved = Path(summary["path"])
    assert saved.parent == clone / ".reprobox" / "local" / "fanout"
    assert json.loads(saved.read_text())["counts"] == summary["counts"]
    # the table: one line per experiment, then the counts
    done = reprobox(clone, "run", ids["steady"], ids["noisy"], "--on", "slurm", check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert re.match(rf"{ids['steady']}\s+steady\s+REPRODUCED\s", lines[0])
    assert re.match(rf"{ids['noisy']}\s+noisy\s+DIFFERS\s.*noisy\.json:loss", lines[1])
    assert "2 experiment(s) on slurm: 1 reproduced, 1 differ, 0 failed" in lines[2]
    assert sh(clone, "git", "status", "--porcelain").stdout == ""
    ok = reprobox(clone, "run", ids["steady"], "--on", "slurm", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_node_without_any_engine_is_one_line(project, tmp_path: Path):
    clone, ids = project
    bare = tmp_path / "bin"  # what a node without docker, podman or apptainer has on PATH
    bare.mkdir()
    for tool in (
        "bash",
        "sh",
        "git",
        "hostname",
        "mktemp",
        "rm",
        "tail",
        "grep",
        "mv",
        "cat",
        "printf",
        "sbatch",
        "squeue",
        "scontrol",
        "scancel",
        "dirname",
    ):
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    status, summary, _ = fan_out(clone, ids["steady"], env={"PATH": str(bare)})
    assert status == 1
    (only,) = summary["experiments"]
    assert only["status"] == "failed"
    assert re.fullmatch(
        r"no container engine on node \S+: neither docker, podman nor "
        r"apptainer is on PATH .*",
        only["reason"],
    )


def test_a_task_cancelled_by_the_scheduler_leaves_the_others_alone(project):
    clone, ids = project
    proc = subprocess.Popen(
        [
            reprobox_exe(),
            "run",
            ids["sleepy"],
            ids["steady"],
            "--on",
            "slurm",
            "--json",
            "--timeout",
            "900",
        ],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job, deadline = "", time.monotonic() + 600
        while time.monotonic() < deadline:  # the sleeper's container is running
            results = sorted((clone / ".reprobox" / "local" / "fanout").glob("slurm-*"))
            running = subprocess.run(
                [DOCKER, "ps", "-q", "--filter", f"label=reprobox.experiment={ids['sleepy']}"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if results and running:
                out = subprocess.run(
                    ["squeue", "-h", "-r", "-o", "%i %j"], capture_output=True, text=True
                ).stdout
                job = next(
                    (
                        ln.split()[0].split("_")[0]
                        for ln in out.splitlines()
                        if "reprobox-fanout" in ln
                    ),
                    "",
                )
                if job:
                    break
            time.sleep(1)
        assert job, "the sleeper never started"
        subprocess.run(["scancel", f"{job}_0"], check=True)
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout + stderr
    e = by_name(json.loads(stdout))
    assert e["sleepy"]["status"] == "failed"
    assert e["sleepy"]["reason"] == f"cancelled by the scheduler (scancel) in task {job}_0"
    assert e["steady"]["status"] == "reproduced"
    for _ in range(60):  # SIGTERM reached the run: its container is gone
        left = subprocess.run(
            [DOCKER, "ps", "-aq", "--filter", f"label=reprobox.experiment={ids['sleepy']}"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not left:
            break
        time.sleep(1)
    assert left == ""


def test_registry_down_and_foreign_labels_are_one_line_each(project, tmp_path: Path):
    """In a clone of its own: steady's record names a registry nothing listens on, noisy's
    names steady's image (its labels are steady's). Both build instead, say so, and keep their
    own verdicts."""
    from reprobox.registry import Publication, PublicationRecord
    from reprobox.store import Store

    first, ids = project
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(first.parent / "origin.git"), str(clone))
    store = Store(clone)
    steady, noisy = store.get(ids["steady"]), store.get(ids["noisy"])
    steady_pub = json.loads((steady.path / "images.json").read_text())["images"][-1]
    when = "2026-11-30T18:00:00Z"
    down = Publication("127.0.0.1:5059/gone/steady", "x", steady_pub["digest"], when)
    (steady.path / "images.json").write_text(
        json.dumps(PublicationRecord(steady.id, steady.environment.digest, (down,)).to_dict())
    )
    foreign = Publication(steady_pub["repository"], "x", steady_pub["digest"], when)
    (noisy.path / "images.json").write_text(
        json.dumps(PublicationRecord(noisy.id, noisy.environment.digest, (foreign,)).to_dict())
    )
    commit(clone, "records pointing at a registry that is down and at another image")
    drop_images(ids["steady"])  # the node must pull: no image of either here
    drop_images(ids["noisy"])

    status, summary, _ = fan_out(clone, ids["steady"], ids["noisy"])
    assert status == 1
    e = by_name(summary)
    assert e["steady"]["status"] == "reproduced" and e["noisy"]["status"] == "differs"
    (note,) = e["steady"]["notes"]
    assert note.startswith("published image not used, built instead: 127.0.0.1:5059/gone/")
    (note,) = e["noisy"]["notes"]
    assert "refused: its label reprobox.experiment is " + repr(ids["steady"]) in note
    drop_images(ids["steady"])
    done = reprobox(clone, "run", ids["steady"], "--on", "slurm", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(
        rf"{ids['steady']}\s+steady\s+REPRODUCED\s.*\(published image not used, "
        r"built instead: 127\.0\.0\.1:5059/gone/",
        done.stdout.splitlines()[0],
    )


def test_the_same_three_here_with_on_local(project):
    """`--on local`: the same verdicts, each a normal `reprobox run` in its own process."""
    clone, ids = project
    done = reprobox(
        clone,
        "run",
        ids["steady"],
        ids["noisy"],
        ids["broken"],
        "--on",
        "local",
        "--jobs",
        "3",
        "--json",
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["on"] == "local" and summary["details"]["jobs"] == 3
    e = by_name(summary)
    assert e["steady"]["status"] == "reproduced"
    assert e["noisy"]["status"] == "differs"
    assert e["noisy"]["differing_metrics"] == ["noisy.json:loss"]
    assert e["broken"]["status"] == "failed" and "99.0.0" in e["broken"]["reason"]
    runs = clone / ".reprobox" / "local" / "runs"
    assert len(list(runs.glob(f"{ids['steady']}-*.json"))) >= 1
    assert sh(clone, "git", "worktree", "list", "--porcelain").stdout.count("worktree ") == 1
