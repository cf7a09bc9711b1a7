"""Benchmark: environment capture against ``pip freeze`` on a ~100-distribution venv.

The issue's target is that ``reprobox capture --no-lock`` takes at most half the time of
``pip freeze`` on the same environment, although it records much more (wheel tags, PEP 610
sources, the native libraries every extension module loads and the OS packages owning them).

The venv is built once from the real index and cached under ``$REPROBOX_BENCH_DIR`` (default
``~/.cache/reprobox-bench``). Each run then times, interleaved so that machine noise hits every
contestant alike:

* ``pip freeze`` with the venv's own pip (the peer);
* the capture's environment path: probe in the target interpreter, parse, OS-package ownership,
  run from a fresh process exactly like the CLI would (``cold``: no ELF cache; ``warm``: second
  capture with the cache the CLI keeps);
* ``reprobox capture --no-lock`` end to end in a throwaway git repository, when that command
  exists and works here (otherwise a note says why it was skipped).

It prints medians and the ratios against ``pip freeze``. Usage::

    python benchmarks/bench_capture.py [--reps 7] [--build-only]
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

#: A real data-science stack; with its dependencies it installs a little over 100 distributions.
REQUIREMENTS = [
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
    "statsmodels",
    "jupyterlab",
    "ipywidgets",
    "requests",
    "pyyaml",
    "tqdm",
]

ROOT = Path(__file__).resolve().parent.parent


def bench_dir() -> Path:
    return Path(os.environ.get("REPROBOX_BENCH_DIR") or Path.home() / ".cache" / "reprobox-bench")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_venv() -> Path:
    """Create (once) the benchmark venv; a marker records what it was built from."""
    venv = bench_dir() / "capture-venv"
    marker = venv / ".reprobox-bench.json"
    wanted = {"requirements": REQUIREMENTS, "python": sys.version.split()[0]}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return venv
        except ValueError:
            pass
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the benchmark venv in {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True
    )
    marker.write_text(json.dumps(wanted))
    return venv


#: The environment half of a capture, run in a fresh process like the CLI would run it.
ENV_CAPTURE = """
import sys
from pathlib import Path
from reprobox.capture import python as py, system
target = py.find_target_python(sys.argv[1])
cache = Path(sys.argv[2]) if len(sys.argv) > 2 else None
result = py.parse_probe(py.run_probe(target, cache_dir=cache and cache / "probe"), Path.cwd())
by_path = result.libraries_by_path()
packages, unowned = system.owning_packages(sorted(by_path), by_path,
                                           cache_dir=cache and cache / "system")
system.os_info(result.os_raw)
print(len(result.packages), len(packages), len(unowned))
"""


def timed(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({out.returncode}): {out.stderr[-800:]}")
    return elapsed, out.stdout


def throwaway_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "train.py"], ["commit", "-q", "-m", "x"]):
        if args[0] == "add":
            (repo / "train.py").write_text("print('hi')\n")
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def reprobox_cli() -> list[str] | None:
    """The console script as installed (venv or pipx), not a version manager's shim: a pyenv
    shim is a bash script that costs ~70 ms before Python even starts, which no user of an
    installed tool pays and ``pip freeze`` (run from the venv's bin/) does not pay either."""
    beside = Path(sys.executable).parent / "reprobox"
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("reprobox")
    return [exe] if exe else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    venv = build_venv()
    if args.build_only:
        print(venv)
        return 0
    vpy = venv_python(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    with tempfile.TemporaryDirectory(prefix="reprobox-bench-") as tmp:
        base = Path(tmp)
        warm_cache = base / "warm-cache"
        _, line = timed([sys.executable, "-c", ENV_CAPTURE, str(vpy), str(warm_cache)], env=env)
        dists, sys_pkgs, unowned = (int(x) for x in line.split())
        freeze_lines = timed([str(venv / "bin" / "pip"), "freeze"], env=env)[1].splitlines()
        contestants: dict[str, list[str]] = {
            "pip freeze": [str(venv / "bin" / "pip"), "freeze"],
            "env capture, cold": [sys.executable, "-c", ENV_CAPTURE, str(vpy)],
            "env capture, warm": [sys.executable, "-c", ENV_CAPTURE, str(vpy), str(warm_cache)],
        }
        note = None
        cli = reprobox_cli()
        repo = throwaway_repo(base)
        cli_env = {**env, "XDG_CACHE_HOME": str(base / "xdg-cache")}
        if cli is None:
            note = "`reprobox` is not on PATH: end-to-end capture skipped"
        else:
            cmd = [*cli, "capture", "--no-lock", "--python", str(vpy), "--cmd", "python train.py"]
            try:
                timed(cmd, cwd=repo, env=cli_env)  # first capture fills the cache
                contestants["reprobox capture --no-lock"] = cmd
            except RuntimeError as exc:
                note = f"`reprobox capture --no-lock` does not work here yet, skipped: {exc}"
        times: dict[str, list[float]] = {k: [] for k in contestants}
        for _ in range(args.reps):
            for label, cmd in contestants.items():
                cwd = repo if label.startswith("reprobox") else None
                times[label].append(timed(cmd, cwd=cwd, env=cli_env)[0])
    freeze = statistics.median(times["pip freeze"])
    print(f"venv: {venv}")
    print(f"distributions: {dists} (pip freeze lines: {len(freeze_lines)}); OS packages: "
          f"{sys_pkgs}; unowned libraries: {unowned}; reps: {args.reps}")
    print(f"{'contestant':32} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"{label:32} {med:9.3f} {min(values):7.3f} {med / freeze:6.2f}")
    if note:
        print("note:", note)
    print("target: reprobox capture --no-lock <= 0.50 x pip freeze")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
