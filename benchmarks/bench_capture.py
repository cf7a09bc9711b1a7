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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    venv = build_venv()
    if args.build_only:
        print(venv)
        return 0
    raise SystemExit("timing part not written yet")


if __name__ == "__main__":
    raise SystemExit(main())
