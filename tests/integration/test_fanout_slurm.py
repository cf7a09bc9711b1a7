"""``reprobox run --all --on slurm`` on a real single-node Slurm (scripts/start-slurm.sh), from a
fresh clone, with the real Docker daemon and the real package index.

Three experiments: one reproduces, one differs (a random metric), one fails to build (its lock
names a version the index does not have; re-sealed with tests/hostile.py). Then the faults: a
node without any engine (the tasks' PATH has no docker, podman or apptainer) and a task cancelled
by the scheduler (scancel) while its container runs; each is one line in the summary, and the
other experiment of the same array is unaffected.

The images are built on the node (no publication record yet in these captures).
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

from .test_run_e2e import (
    DOCKER,
    ROOT,
    capture,
    commit,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    reprobox_exe,
    sh,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.network]

STEADY = "import json\njson.dump({'acc': 0.5, 'epochs': 3}, open('metrics.json', 'w'))\n"
NOISY = ("import json, os, random\nrng = random.Random(os.urandom(16))\n"
         "json.dump({'loss': rng.random()}, open('noisy.json', 'w'))\n")
#: Sleeps only when rerun (reprobox sets REPROBOX_EXPERIMENT), long enough to be cancelled.
SLEEPY = ("import json, os, time\njson.dump({'n': 1}, open('sleepy.json', 'w'))\n"
          "time.sleep(600 if os.environ.get('REPROBOX_EXPERIMENT') else 0)\n")


@pytest.fixture(scope="module")
def slurm() -> None:
    script = ROOT / "scripts" / "start-slurm.sh"
    ok = os.geteuid() == 0 or bool(shutil.which("sbatch"))
    require(ok, "root to start Slurm (scripts/start-slurm.sh)")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    require(done.returncode == 0, f"a single-node Slurm ({done.stderr.strip()[-300:]})")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, slurm: None, index_access: None
            ) -> tuple[Path, dict[str, str]]:
    where = tmp_path_factory.mktemp("fanout")
    venv = make_venv(where / "venv", "six==1.16.0")
    repo = new_repo(where / "project", {
        "steady.py": STEADY, "noisy.py": NOISY, "sleepy.py": SLEEPY,
        ".gitignore": "metrics.json\nnoisy.json\nsleepy.json\n"})
    py = str(venv / "bin" / "python")
    ids: dict[str, str] = {}
    for name, script, metrics in (("steady", "steady.py", "metrics.json"),
                                  ("noisy", "noisy.py", "noisy.json"),
                                  ("broken", "steady.py", "metrics.json"),
                                  ("sleepy", "sleepy.py", "sleepy.json")):
        sh(repo, py, script)
        ids[name] = capture(repo, venv, "--name", name, "--cmd", f"python {script}",
                            "--metrics", metrics)["id"]
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
    commit(repo, "a capture whose lock names a version the index does not have")
    return publish_and_clone(repo, where), ids


def fan_out(clone: Path, *args: str, env: dict | None = None) -> tuple[int, dict, str]:
    done = reprobox(clone, "run", *args, "--on", "slurm", "--json", "--timeout", "900",
                    check=False, extra_env=env)
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
        "noisy.json:loss"]
    assert e["broken"]["status"] == "failed" and "99.0.0" in e["broken"]["reason"]
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
    for tool in ("bash", "sh", "git", "hostname", "mktemp", "rm", "tail", "grep", "mv", "cat",
                 "printf", "sbatch", "squeue", "scontrol", "scancel", "dirname"):
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    status, summary, _ = fan_out(clone, ids["steady"], env={"PATH": str(bare)})
    assert status == 1
    (only,) = summary["experiments"]
    assert only["status"] == "failed"
    assert re.fullmatch(r"no container engine on node \S+: neither docker, podman nor "
                        r"apptainer is on PATH .*", only["reason"])


def test_a_task_cancelled_by_the_scheduler_leaves_the_others_alone(project):
    clone, ids = project
    proc = subprocess.Popen(
        [reprobox_exe(), "run", ids["sleepy"], ids["steady"], "--on", "slurm", "--json", "--timeout", "900"],
        cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job, deadline = "", time.monotonic() + 600
        while time.monotonic() < deadline:  # the sleeper's container is running
            results = sorted((clone / ".reprobox" / "local" / "fanout").glob("slurm-*"))
            running = subprocess.run(
                [DOCKER, "ps", "-q", "--filter", f"label=reprobox.experiment={ids['sleepy']}"],
                capture_output=True, text=True).stdout.strip()
            if results and running:
                out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j"],
                                     capture_output=True, text=True).stdout
                job = next((ln.split()[0].split("_")[0] for ln in out.splitlines()
                            if "reprobox-fanout" in ln), "")
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
            capture_output=True, text=True).stdout.strip()
        if not left:
            break
        time.sleep(1)
    assert left == ""
