"""Benchmark: ``reprobox run`` against running the same command directly, image already built.

The overhead of a reproduction is everything ``reprobox run`` adds around the command itself:
starting the CLI, loading and validating the experiment, the git worktree, checking the image,
starting the container through the engine API, reading and comparing the results, writing the
report, removing the worktree. The target is at most 1 s of overhead.

Setup (once, cached under ``$REPROBOX_BENCH_DIR/run``, default ``~/.cache/reprobox-bench/run``):
a git repository with a small numpy script that writes metrics.json, a virtualenv for it, a
``reprobox capture`` and ``reprobox build``. Then, interleaved so that machine noise hits both
alike, each repetition times:

* ``docker run --rm`` of the experiment's image with the repository mounted, as the same user,
  running the same command (the peer: what a user would type by hand);
* ``reprobox run EXP --backend docker`` (checkout, image check, container, comparison, report);

Through the harness: 7 interleaved repetitions (2 with ``--quick``), medians with min and max.

    python benchmarks/bench_run.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    DEFAULT_REPS,
    QUICK_REPS,
    BenchError,
    Contestant,
    Rep,
    Row,  # noqa: E402
    clean_env,
    measure,
    need,
    run_once,
    table,
)

TARGET_OVERHEAD_S = 1.0
ROOT = Path(__file__).resolve().parent.parent
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)

TRAIN = """\
import json
import numpy as np

rng = np.random.default_rng(0)
a = rng.normal(size=(300, 300))
metrics = {"trace": float(np.trace(a @ a.T)), "mean": float(a.mean())}
json.dump(metrics, open("metrics.json", "w"), indent=2, sort_keys=True)
"""


def bench_dir() -> Path:
    base = os.environ.get("REPROBOX_BENCH_DIR") or str(Path.home() / ".cache" / "reprobox-bench")
    return Path(base) / "run"


def reprobox_cli() -> str:
    here = Path(sys.executable).parent / "reprobox"
    return str(here) if here.exists() else (shutil.which("reprobox") or "reprobox")


def sh(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_run: {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def setup(base: Path) -> tuple[Path, Path, str, str]:
    """The repository, its venv, the experiment id and its image tag (built once)."""
    repo, venv = base / "repo", base / "venv"
    state = base / "state.json"
    if state.is_file():
        data = json.loads(state.read_text())
        if (repo / ".git").is_dir() and (venv / "bin" / "python").exists():
            inspect = subprocess.run(
                [DOCKER, "image", "inspect", data["image"]], capture_output=True, check=False
            )
            if inspect.returncode == 0:
                return repo, venv, data["id"], data["image"]
    print(f"setting up the benchmark in {base} (once) ...", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
    repo.mkdir(parents=True)
    sh([sys.executable, "-m", "venv", str(venv)], base)
    sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "numpy"], base)
    (repo / "train.py").write_text(TRAIN)
    (repo / ".gitignore").write_text("metrics.json\n")
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["git", "-c", "user.email=b@example.org", "-c", "user.name=bench", "add", "."], repo)
    sh(
        [
            "git",
            "-c",
            "user.email=b@example.org",
            "-c",
            "user.name=bench",
            "commit",
            "-q",
            "-m",
            "bench",
        ],
        repo,
    )
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    sh([str(venv / "bin" / "python"), "train.py"], repo, env)
    cap = json.loads(
        sh(
            [
                reprobox_cli(),
                "capture",
                "--json",
                "--cmd",
                "python train.py",
                "--metrics",
                "metrics.json",
            ],
            repo,
            env,
        ).stdout
    )
    exp_id = cap["id"]
    build = sh([reprobox_cli(), "build", exp_id], repo)
    image = build.stdout.strip().splitlines()[-1]
    state.write_text(json.dumps({"id": exp_id, "image": image}))
    return repo, venv, exp_id, image


def run(quick: bool = False) -> List[Row]:
    if subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode != 0:
        raise BenchError("the Docker daemon does not answer")
    reps = QUICK_REPS if quick else DEFAULT_REPS
    repo, venv, exp_id, image = setup(bench_dir())
    user = f"{os.getuid()}:{os.getgid()}"
    direct = [
        DOCKER,
        "run",
        "--rm",
        "-v",
        f"{repo}:/workspace",
        "-w",
        "/workspace",
        "--user",
        user,
        "-e",
        "HOME=/tmp",
        image,
        "/bin/sh",
        "-c",
        "python train.py",
    ]
    cs = [
        Contestant("docker run (direct)", direct),
        Contestant(
            "reprobox run",
            [need("reprobox"), "run", exp_id, "--backend", "docker", "--json"],
            cwd=repo,
            env=clean_env(),
        ),
    ]
    for c in cs:  # warm-up: image and caches hot, nothing timed
        run_once(c, Rep(-1, repo))
    res = measure(cs, reps, label="run")
    # runs leave reports behind; they are the benchmark's own, not the user's
    shutil.rmtree(repo / ".reprobox" / "local" / "runs", ignore_errors=True)
    return [
        Row(
            "run",
            "numpy script",
            "image built",
            "reprobox run --backend docker",
            res["reprobox run"],
            "docker run of the same command",
            res["docker run (direct)"],
            unit="overhead",
            target=TARGET_OVERHEAD_S,
        )
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(table(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
