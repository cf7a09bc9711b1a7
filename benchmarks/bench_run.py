"""Benchmark: ``reprobox run`` against running the same command directly, image already built.

The overhead of a reproduction is everything ``reprobox run`` adds around the command itself:
starting the CLI, loading and validating the experiment, the git worktree, checking the image,
starting the container through the engine API, reading and comparing the results, writing the
report, removing the worktree. The target is at most 3 s of overhead.

Setup (once, cached under ``$REPROBOX_BENCH_DIR/run``, default ``~/.cache/reprobox-bench/run``):
a git repository with a small numpy script that writes metrics.json, a virtualenv for it, a
``reprobox capture`` and ``reprobox build``. Then, interleaved so that machine noise hits both
alike, each repetition times:

* ``docker run --rm`` of the experiment's image with the repository mounted, as the same user,
  running the same command (the peer: what a user would type by hand);
* ``reprobox run EXP --backend docker`` (checkout, image check, container, comparison, report);
* with ``--venv`` also ``reprobox run EXP --backend venv`` against the venv's ``python train.py``.

It prints medians, the overhead (median difference) and the ratio. Usage::

    python benchmarks/bench_run.py [--reps 7] [--venv] [--check]

``--check`` exits 1 when the docker overhead exceeds the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_OVERHEAD_S = 3.0
ROOT = Path(__file__).resolve().parent.parent
DOCKER = ("/usr/bin/docker" if Path("/usr/bin/docker").exists()
          else (shutil.which("docker") or "docker"))

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
            inspect = subprocess.run([DOCKER, "image", "inspect", data["image"]],
                                     capture_output=True, check=False)
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
    sh(["git", "-c", "user.email=b@example.org", "-c", "user.name=bench", "commit", "-q", "-m",
        "bench"], repo)
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    sh([str(venv / "bin" / "python"), "train.py"], repo, env)
    cap = json.loads(sh([reprobox_cli(), "capture", "--json", "--cmd", "python train.py",
                         "--metrics", "metrics.json"], repo, env).stdout)
    exp_id = cap["id"]
    build = sh([reprobox_cli(), "build", exp_id], repo)
    image = build.stdout.strip().splitlines()[-1]
    state.write_text(json.dumps({"id": exp_id, "image": image}))
    return repo, venv, exp_id, image


def timed(argv: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0,):
        raise SystemExit(f"bench_run: {' '.join(argv)} exited {done.returncode}:\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--venv", action="store_true", help="also time the venv backend")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when the docker overhead exceeds {TARGET_OVERHEAD_S} s")
    args = parser.parse_args(argv)
    if subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode != 0:
        print("bench_run: the Docker daemon does not answer", file=sys.stderr)
        return 2
    base = bench_dir()
    repo, venv, exp_id, image = setup(base)
    cli = reprobox_cli()
    user = f"{os.getuid()}:{os.getgid()}"
    direct = [DOCKER, "run", "--rm", "-v", f"{repo}:/workspace", "-w", "/workspace",
              "--user", user, "-e", "HOME=/tmp", image, "/bin/sh", "-c", "python train.py"]
    contestants: dict[str, list[str]] = {
        "docker run (direct)": direct,
        "reprobox run --backend docker": [cli, "run", exp_id, "--backend", "docker", "--json"],
    }
    venv_env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    if args.venv:
        contestants["python train.py (venv, direct)"] = [str(venv / "bin" / "python"), "train.py"]
        contestants["reprobox run --backend venv"] = [cli, "run", exp_id, "--backend", "venv",
                                                      "--json"]
    # Warm-up: the image and the venv exist, caches are hot, nothing is timed.
    for label, cmd in contestants.items():
        timed(cmd, repo, venv_env if "venv, direct" in label else None)
    times: dict[str, list[float]] = {label: [] for label in contestants}
    for _ in range(args.reps):
        for label, cmd in contestants.items():
            times[label].append(timed(cmd, repo, venv_env if "venv, direct" in label else None))

    med = {label: statistics.median(v) for label, v in times.items()}
    print(f"experiment {exp_id}, image {image}, {args.reps} repetitions, interleaved")
    print(f"{'contestant':34} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, values in times.items():
        print(f"{label:34} {med[label]:9.3f} {min(values):7.3f} {max(values):7.3f}")
    overhead = med["reprobox run --backend docker"] - med["docker run (direct)"]
    ratio = med["reprobox run --backend docker"] / med["docker run (direct)"]
    print(f"docker: overhead {overhead:.3f} s, ratio {ratio:.2f} "
          f"(target: overhead <= {TARGET_OVERHEAD_S:.1f} s)")
    if args.venv:
        v_over = med["reprobox run --backend venv"] - med["python train.py (venv, direct)"]
        print(f"venv: overhead {v_over:.3f} s, ratio "
              f"{med['reprobox run --backend venv'] / med['python train.py (venv, direct)']:.2f}")
    # Runs leave reports behind; they are the benchmark's own, not the user's.
    shutil.rmtree(repo / ".reprobox" / "runs", ignore_errors=True)
    if args.check and overhead > TARGET_OVERHEAD_S:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
