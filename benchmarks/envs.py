"""The two benchmark environments, built once under ``$REPROBOX_BENCH_DIR`` (a marker file says
what each was built from, so a change of inputs rebuilds it):

* ``datascience``: the pinned ~110-package stack of ``data/datascience-requirements.txt``;
* ``torch``: the same stack plus torch (the CPU wheel from the local wheel folder that pip's own
  configuration names: nothing is hard-coded) and a deep-learning stack around it, 250+
  distributions, with torch's bundled native libraries.

Each environment also has a throwaway git project (``train.py`` importing the stack) so
``reprobox capture`` can run in it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from harness import DATA, GIT, BenchError, bench_dir, say, sh

DS_PINS = DATA / "datascience-requirements.txt"
#: Around torch: enough of a real deep-learning stack to pass 250 distributions.
TORCH_EXTRA = [
    "torch",
    "transformers",
    "datasets",
    "lightning",
    "torchmetrics",
    "tensorboard",
    "accelerate",
    "optuna",
    "wandb",
    "sentence-transformers",
    "spacy",
    "langchain",
    "onnx",
    "sympy",
    "networkx",
    "gitpython",
    "rich",
    "typer",
    "fastapi",
    "uvicorn",
    "streamlit",
    "dash",
    "ray",
    "dask",
    "polars",
    "xarray",
    "openai",
    "bokeh",
]


def pip_config() -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        conf[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return conf


def local_torch_wheel() -> Optional[Path]:
    """The torch CPU wheel in a local folder pip's configuration names (``find-links``)."""
    for folder in pip_config().get("find-links", "").split():
        path = Path(folder.replace("file://", ""))
        if path.is_dir():
            wheels = sorted(path.glob("torch-*+cpu-*.whl")) or sorted(path.glob("torch-*.whl"))
            if wheels:
                return wheels[-1]
    return None


def _project(root: Path, imports: List[str]) -> None:
    (root / "src" / "proj").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "proj"\nversion = "0.1.0"\n'
    )
    (root / "src" / "proj" / "__init__.py").write_text("SEED = 0\n")
    (root / "train.py").write_text(
        "import json\n" + "".join(f"import {m}\n" for m in imports) + "import proj\n"
        "json.dump({'score': proj.SEED + 1}, open('metrics.json', 'w'))\n"
    )
    (root / ".gitignore").write_text(".venv/\nmetrics.json\n.bench.json\nhand/\n")
    (root / ".dockerignore").write_text(".venv\n.git\n.reprobox\nhand\n")


def build(name: str) -> tuple[Path, Path]:
    """(project, venv) of the named environment, built once."""
    project = bench_dir() / f"env-{name}"
    venv = project / ".venv"
    marker = project / ".bench.json"
    extra = TORCH_EXTRA if name == "torch" else []
    wheel = local_torch_wheel() if name == "torch" else None
    if name == "torch" and wheel is None:
        raise BenchError(
            "no torch wheel in the local wheel folders pip's configuration names "
            "(`pip config list`: find-links)"
        )
    wanted = {
        "pins": DS_PINS.read_text(),
        "extra": extra,
        "wheel": wheel and wheel.name,
        "python": platform.python_version(),
    }
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return project, venv
    say(f"building the {name} environment in {project} (once) ...")
    sh(["rm", "-rf", project])
    project.mkdir(parents=True)
    _project(project, ["numpy", "pandas", "sklearn"] + (["torch"] if name == "torch" else []))
    sh([sys.executable, "-m", "venv", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    sh([*pip, "-r", DS_PINS])
    if extra:
        # torch from the local CPU wheel; the rest resolved around the pinned stack
        # by version through pip's configured sources (the wheel folder is one), not as a file
        # path: a path would be recorded as a direct URL to a file of this machine
        torch_version = wheel.name.split("-")[1]
        sh([*pip, f"torch=={torch_version}", *[p for p in extra if p != "torch"], "-c", DS_PINS])
    sh([*pip, "--no-deps", "-e", project])
    sh(["git", "init", "-q", "-b", "main"], cwd=project)
    sh([*GIT, "add", "-A"], cwd=project)
    sh([*GIT, "commit", "-qm", "benchmark project"], cwd=project)
    marker.write_text(json.dumps(wanted))
    return project, venv


def checkout(name: str, purpose: str) -> tuple[Path, Path]:
    """A project and venv of its own for one benchmark: a clone of the environment's project and
    a venv holding the same pins (installed with uv from pip's sources, its editable package
    pointing into the clone), so benchmarks running side by side never touch each other's
    ``.reprobox`` or packages."""
    project, venv = build(name)
    clone = bench_dir() / f"{name}-{purpose}"
    marker = clone / ".bench.json"
    pins = sh([venv / "bin" / "python", "-m", "pip", "freeze", "--exclude-editable"]).stdout
    own = clone / ".venv"
    if marker.is_file() and marker.read_text() == pins and (own / "bin" / "python").exists():
        shutil.rmtree(clone / ".reprobox", ignore_errors=True)
        return clone, own
    sh(["rm", "-rf", clone])
    sh(["git", "clone", "-q", project, clone])
    sh(["git", "remote", "remove", "origin"], cwd=clone)  # a local path: not a remote URL
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from reprobox.lock import read_index_config
    from reprobox.lock.crossplatform import uv_args, uv_environ

    config = read_index_config()
    env = {**os.environ, **uv_environ(config)}
    env.pop("VIRTUAL_ENV", None)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    (clone / "pins.txt").write_text(pins)
    sh([uv, "venv", "-q", "--seed", "--python", venv / "bin" / "python", own], env=env)
    sh(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            own / "bin" / "python",
            "--no-deps",
            "--index-strategy",
            "unsafe-best-match",
            *uv_args(config),
            "-r",
            clone / "pins.txt",
        ],
        env=env,
    )
    sh(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            own / "bin" / "python",
            "--no-deps",
            "--index-strategy",
            "unsafe-best-match",
            *uv_args(config),
            "-e",
            clone,
        ],
        env=env,
    )
    (clone / "pins.txt").unlink()
    marker.write_text(pins)
    return clone, own


def count(venv: Path) -> int:
    out = sh([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"]).stdout
    return len([line for line in out.splitlines() if line.strip()])


if __name__ == "__main__":
    for n in sys.argv[1:] or ["datascience", "torch"]:
        p, v = build(n)
        print(n, p, count(v))
