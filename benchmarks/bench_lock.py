"""Benchmark: hashed lock of a ~100-package pinned set — reprobox vs pip-compile vs uv.

The set is the environment of a real data-science virtualenv (114 distributions: jupyterlab,
pandas, scikit-learn, matplotlib, seaborn, scipy, statsmodels, requests, pyarrow, tqdm and their
dependencies, Python 3.11 on linux x86_64), recorded by reprobox's probe into
``benchmarks/data/datascience-environment.json``; ``datascience-requirements.txt`` holds the same
pins for the peers.

Each contestant runs as its own process (import and start-up count) with a fresh, empty cache
directory (cold), against the same package sources: the host pip's configuration, which all
three are given (reprobox and pip-compile read it; uv gets it through ``UV_*`` variables and
``--index-strategy unsafe-best-match``, which makes it look at every index the way pip does):

* ``reprobox``: ``lock_environment`` on the recorded environment (no resolution: the lock is
  the captured set);
* ``pip-compile --generate-hashes`` on the pins (resolves them, then hashes every file);
* ``uv pip compile --generate-hashes`` on the pins.

reprobox is given its bytecode first (``compileall``, as ``pip install`` does for an installed
copy; ``--no-compile`` skips that): its dependencies and pip-compile's already have theirs, uv is
native code, and a source checkout under ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile
every reprobox module on every run (~25 ms here), a cost no installed copy pays.

Contestants are interleaved per repetition so that machine and network noise hit all alike. It
prints median times and the ratios; the issue's targets are reprobox <= 0.1x pip-compile and
<= 1x uv. A warm reprobox run (second lock, same cache) is shown for information.

Usage::

    python benchmarks/bench_lock.py [--reps 3] [--pip-compile-reps 1] [--skip-pip-compile]
                                    [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
ENV_FILE = DATA / "datascience-environment.json"
PINS_FILE = DATA / "datascience-requirements.txt"

_REPROBOX_RUNNER = """
import json, sys
from pathlib import Path
from reprobox.model import Environment
from reprobox.lock import lock_environment
env = Environment.from_dict(json.loads(Path(sys.argv[1]).read_text()))
result = lock_environment(env, repo_root=Path(sys.argv[3]), cache_dir=Path(sys.argv[2]))
Path(sys.argv[3], "requirements.lock").write_text(result.requirements_lock)
print(len(result.packages), result.requests)
"""


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def tool(name: str) -> str | None:
    """The tool's real executable: the one installed beside this interpreter first, because a
    version manager's shim on PATH (pyenv's is a bash script) would add ~70 ms to its time."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def run_reprobox(work: Path, cache: Path) -> float:
    return timed([sys.executable, "-c", _REPROBOX_RUNNER, str(ENV_FILE), str(cache), str(work)])


def run_pip_compile(work: Path, cache: Path) -> float:
    exe = tool("pip-compile")
    if exe is None:
        sys.exit("pip-compile is not installed: pip install pip-tools (or pass --skip-pip-compile)")
    return timed([exe, "--generate-hashes", "--quiet", "--no-header", "--no-annotate",
                  "--cache-dir", str(cache), "-o", str(work / "pip-compile.txt"),
                  str(PINS_FILE)], cwd=work)


def run_uv(work: Path, cache: Path) -> float:
    from reprobox.lock import read_index_config
    from reprobox.lock.crossplatform import uv_args, uv_environ

    exe = tool("uv")
    if exe is None:
        sys.exit("uv is not installed: pip install uv")
    config = read_index_config()
    env = uv_environ(config)
    return timed([exe, "pip", "compile", "--generate-hashes", "--quiet", "--no-header",
                  "--no-annotate", "--index-strategy", "unsafe-best-match",
                  "--python", sys.executable, "--cache-dir", str(cache), *uv_args(config),
                  "-o", str(work / "uv.txt"), str(PINS_FILE)], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="cold runs of reprobox and uv")
    parser.add_argument("--pip-compile-reps", type=int, default=1,
                        help="cold runs of pip-compile (slow: about a minute each)")
    parser.add_argument("--skip-pip-compile", action="store_true")
    parser.add_argument("--no-compile", action="store_true",
                        help="do not write reprobox's bytecode first (a source checkout's cost)")
    args = parser.parse_args()
    if not args.no_compile:
        import compileall

        compileall.compile_dir(str(ROOT / "reprobox"), quiet=1)

    sys.path.insert(0, str(ROOT))
    times: dict[str, list[float]] = {"reprobox": [], "reprobox warm": [], "uv": [],
                                     "pip-compile": []}
    with tempfile.TemporaryDirectory(prefix="reprobox-bench-lock-") as tmp:
        base = Path(tmp)
        for rep in range(args.reps):
            for name, fn in (("reprobox", run_reprobox), ("uv", run_uv)):
                work = base / f"{name}-{rep}"
                work.mkdir()
                cache = work / "cache"  # fresh and empty: a cold run
                times[name].append(fn(work, cache))
                if name == "reprobox":
                    times["reprobox warm"].append(fn(work, cache))
            if not args.skip_pip_compile and rep < args.pip_compile_reps:
                work = base / f"pip-compile-{rep}"
                work.mkdir()
                times["pip-compile"].append(run_pip_compile(work, work / "cache"))
            print(f"rep {rep + 1}: " + ", ".join(
                f"{k} {v[-1]:.2f}s" for k, v in times.items() if len(v) > rep), flush=True)
        locked = (base / "reprobox-0" / "requirements.lock").read_text()
        pins = sum(1 for line in locked.splitlines() if "==" in line and not line.startswith("#"))

    med = {k: statistics.median(v) for k, v in times.items() if v}
    print()
    print(f"lock of {pins} pinned packages, cold caches, median of "
          f"{args.reps} (pip-compile: {len(times['pip-compile'])})")
    for name, value in med.items():
        print(f"  {name:<14} {value:7.2f} s")
    print()
    r = med["reprobox"]
    if "pip-compile" in med:
        ratio = r / med["pip-compile"]
        print(f"  reprobox / pip-compile = {ratio:.3f}x  (target <= 0.1x: "
              f"{'met' if ratio <= 0.1 else 'NOT met'})")
    ratio = r / med["uv"]
    print(f"  reprobox / uv          = {ratio:.2f}x  (target <= 1x: "
          f"{'met' if ratio <= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
