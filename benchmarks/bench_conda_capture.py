"""Benchmark: capturing a 300-package conda environment (target: at most 0.5 s).

A local ``file://`` channel is built once (tests/fixtures/conda/channel.py: a ``python`` package
made from this machine's CPython build, plus 300 small noarch packages ``benchpkg-000`` ...), an
environment with all of them is created with py-rattler, and both are cached under
``$REPROBOX_BENCH_DIR/conda`` (default ``~/.cache/reprobox-bench/conda``). Then, interleaved so
that machine noise hits every contestant alike, each run times:

* ``reprobox capture --no-lock`` end to end in a throwaway git repository (the probe in the
  environment's interpreter, its 301 conda-meta records, the split between conda and pip
  packages, library attribution, the store write);
* ``reprobox capture`` with the lock (conda-lock.yml + @EXPLICIT; the environment has no pip
  packages, so no index is asked);
* peers, each in a fresh process: py-rattler reading every record of the prefix
  (``PrefixRecord.from_path``, what pixi and rattler-based tools do) and ``pip freeze`` of the
  environment through the host's pip (``pip --python ENV freeze``).

It prints medians, minima and ratios against the py-rattler read. Usage::

    python benchmarks/bench_conda_capture.py [--reps 7] [--packages 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 0.5

_RATTLER_READ = """
import glob, os, sys
from rattler import PrefixRecord
n = 0
for path in glob.glob(os.path.join(sys.argv[1], "conda-meta", "*.json")):
    PrefixRecord.from_path(path)
    n += 1
print(n)
sys.stdout.flush()
os._exit(0)
"""


def bench_dir() -> Path:
    base = os.environ.get("REPROBOX_BENCH_DIR") or Path.home() / ".cache" / "reprobox-bench"
    return Path(base) / "conda"


def build(packages: int) -> Path:
    """The channel and the environment, made once and kept."""
    from tests.fixtures.conda.channel import build_channel, create_env

    root = bench_dir() / f"n{packages}"
    prefix = root / "env"
    if (prefix / "conda-meta").is_dir() and (prefix / "bin" / "python").exists():
        return prefix
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"building the channel and a {packages + 1}-package environment in {root} (once) ...",
        file=sys.stderr,
    )
    channel = build_channel(root / "channel", bench_packages=packages)
    specs = ["python"] + [f"benchpkg-{i:03d}" for i in range(packages)]
    create_env(channel, prefix, specs, root / "rattler-cache")
    return prefix


def throwaway_repo(base: Path) -> Path:
    repo = Path(tempfile.mkdtemp(prefix="repo-", dir=base))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.com",
    }
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=env)
    (repo / "train.py").write_text("print('hi')\n")
    subprocess.run(["git", "add", "train.py"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True, env=env)
    return repo


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--packages", type=int, default=300)
    args = parser.parse_args(argv)

    prefix = build(args.packages)
    reprobox = str(Path(sys.executable).parent / "reprobox")
    work = Path(tempfile.mkdtemp(prefix="reprobox-bench-conda-"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(CONDA_PREFIX=str(prefix), XDG_CACHE_HOME=str(work / "cache"))
    contestants = {
        "reprobox capture --no-lock": lambda repo: [
            reprobox,
            "capture",
            "--no-lock",
            "--cmd",
            "python train.py",
            "--json",
        ],
        "reprobox capture (conda lock)": lambda repo: [
            reprobox,
            "capture",
            "--cmd",
            "python train.py",
            "--json",
        ],
        "py-rattler: read every record": lambda repo: [
            sys.executable,
            "-c",
            _RATTLER_READ,
            str(prefix),
        ],
        "pip --python ENV freeze": lambda repo: [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(prefix / "bin" / "python"),
            "freeze",
            "--disable-pip-version-check",
        ],
    }
    times: dict[str, list[float]] = {k: [] for k in contestants}
    try:
        # one warm-up each (imports into the page cache, the probe's ELF cache)
        repo = throwaway_repo(work)
        out: dict[str, str] = {}
        for label, make in contestants.items():
            _t, out[label] = timed(make(repo), repo, env)
        captured = json.loads(out["reprobox capture --no-lock"])
        for _ in range(args.reps):
            for label, make in contestants.items():
                repo = throwaway_repo(work)  # a fresh store: every capture writes its record
                elapsed, _out = timed(make(repo), repo, env)
                times[label].append(elapsed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    records = len(list((prefix / "conda-meta").glob("*.json")))
    peer = statistics.median(times["py-rattler: read every record"])
    print(
        f"environment: {prefix} ({records} conda packages; reprobox recorded "
        f"{captured.get('packages')} pip packages)"
    )
    print(f"{'contestant':32} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"{label:32} {med:9.3f} {min(values):7.3f} {med / peer:6.2f}")
    med = statistics.median(times["reprobox capture --no-lock"])
    verdict = "met" if med <= TARGET_S else "NOT met"
    print(
        f"target: reprobox capture --no-lock of a {args.packages}-package conda environment "
        f"<= {TARGET_S} s: {verdict} ({med:.3f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
