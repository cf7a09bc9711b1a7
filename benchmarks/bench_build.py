"""Benchmark: container builds of one experiment, reprobox against hand-written Dockerfiles.

The same experiment (a ~100-distribution data-science venv plus the project's own editable
package) is built, in one run, three ways:

* ``hand-pip``: the Dockerfile people write by hand: ``COPY requirements.txt``, ``RUN pip install
  -r requirements.txt`` (the venv's ``pip freeze``), then the code, ``pip install -e .``;
* ``hand-uv``: the same with uv (its defaults: no bytecode compilation) and a BuildKit cache
  mount for uv's cache (a strong peer);
* ``reprobox``: ``reprobox build`` of the captured experiment (a fresh process each time, so the
  times are end to end: interpreter start, imports, context assembly, the build).

For each: a cold build (no layer cache, installer caches empty), a rebuild after a code-only
change (a commit to the project's package), and a rebuild after a one-package change (``tqdm``
moved to another version in the venv and re-captured; ``requirements.txt`` edited for the
hand-written ones). All builds use the same base image, ``python:X.Y.Z-slim-<codename>``
(``reprobox base`` makes it when no registry is reachable) and the same BuildKit client, and the
hand-written ones get pip's CA bundle as a build secret like reprobox's do. Every run has its
own id in the Dockerfiles and cache-mount names, so no run reuses another run's layers.

Targets (from the issue): reprobox cold <= 0.5 x hand-pip cold; one-package change <= 0.2 x
hand-pip cold; code-only rebuild <= 3 s end to end; image no larger than hand-pip's.

Usage::

    python benchmarks/bench_build.py [--keep]

The venv and project live under ``$REPROBOX_BENCH_DIR`` (default ``~/.cache/reprobox-bench``);
the venv is built once from the real index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: A real data-science stack; with its dependencies a little over 100 distributions.
REQUIREMENTS = [
    "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn", "statsmodels",
    "jupyterlab", "ipywidgets", "requests", "pyyaml", "tqdm",
]
#: The package moved for the one-package change, and the version it moves to.
CHANGED_PACKAGE = ("tqdm", "4.66.1")

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]

HAND_PIP = """\
FROM {base}
ENV BENCH_RUN={run}
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install -r requirements.txt
COPY pyproject.toml train.py ./
COPY src ./src
RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install --no-deps -e .
"""

HAND_UV = """\
FROM {base}
ENV BENCH_RUN={run}
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=secret,id=ca --mount=type=bind,source=.uvbin,target=/uvbin \\
    --mount=type=cache,target=/root/.cache/uv,id={cache} \\
    SSL_CERT_FILE=/run/secrets/ca /uvbin/uv pip install --system --link-mode copy \\
    -r requirements.txt
COPY pyproject.toml train.py ./
COPY src ./src
RUN --mount=type=secret,id=ca --mount=type=bind,source=.uvbin,target=/uvbin \\
    --mount=type=cache,target=/root/.cache/uv,id={cache} \\
    SSL_CERT_FILE=/run/secrets/ca /uvbin/uv pip install --system --link-mode copy --no-deps -e .
"""


def bench_dir() -> Path:
    return Path(os.environ.get("REPROBOX_BENCH_DIR") or Path.home() / ".cache" / "reprobox-bench")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: list, **kw) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kw)


# --------------------------------------------------------------------------- setup


def make_project() -> tuple[Path, Path]:
    """The project (git repo with an editable package) and its venv, built once."""
    project = bench_dir() / "build-project"
    venv = project / ".venv"
    marker = project / ".bench.json"
    wanted = {"requirements": REQUIREMENTS, "python": platform.python_version()}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return project, venv
    if project.exists():
        shutil.rmtree(project)
    (project / "src" / "dsproj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dsproj"\nversion = "0.1.0"\n'
    )
    (project / "src" / "dsproj" / "__init__.py").write_text("SEED = 0\n")
    (project / "train.py").write_text(
        "import json, numpy, dsproj\n"
        "json.dump({'score': float(numpy.float64(dsproj.SEED) + 1)}, open('metrics.json', 'w'))\n"
    )
    (project / ".gitignore").write_text(
        ".venv/\nmetrics.json\n.bench.json\nrequirements.txt\nDockerfile.bench\n.uvbin/\n")
    (project / ".dockerignore").write_text(".venv\n.git\n.reprobox\n")
    say(f"building the benchmark venv in {venv} (once; downloads ~100 distributions) ...")
    run([Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
         "-m", "venv", venv])
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", *REQUIREMENTS])
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "-e", project])
    run(["git", "init", "-q"], cwd=project)
    run([*GIT, "add", "-A"], cwd=project)
    run([*GIT, "commit", "-qm", "benchmark project"], cwd=project)
    marker.write_text(json.dumps(wanted))
    return project, venv


def venv_env(venv: Path) -> dict:  # type: ignore[type-arg]
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def capture(project: Path, venv: Path) -> str:
    out = run([sys.executable, "-m", "reprobox.cli", "capture", "--cmd", "python train.py",
               "--json"], cwd=project, env=venv_env(venv), capture_output=True)
    return json.loads(out.stdout)["id"]


def commit_code_change(project: Path, n: int) -> None:
    (project / "src" / "dsproj" / "__init__.py").write_text(f"SEED = {n}\n")
    run([*GIT, "commit", "-qam", f"code change {n}"], cwd=project)


def freeze(venv: Path) -> str:
    out = run([venv / "bin" / "python", "-m", "pip", "freeze", "--exclude-editable"],
              capture_output=True)
    return out.stdout


# --------------------------------------------------------------------------- timing


def docker_client() -> tuple[list[str], dict]:  # type: ignore[type-arg]
    from reprobox.build.engine import find_buildkit_client

    client = find_buildkit_client()
    if client is None:
        sys.exit("no BuildKit-capable docker client: the benchmark needs one")
    env = dict(os.environ)
    env.update(client.env)
    return list(client.argv), env


def hand_build(project: Path, dockerfile: str, tag: str, ca: str, *, no_cache: bool) -> float:
    argv, env = docker_client()
    (project / "Dockerfile.bench").write_text(dockerfile)
    cmd = [*argv, "--progress=plain", "-f", str(project / "Dockerfile.bench"), "-t", tag,
           "--secret", f"id=ca,src={ca}"]
    if no_cache:
        cmd.append("--no-cache")
    start = time.monotonic()
    done = subprocess.run([*cmd, str(project)], env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"hand-written build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def reprobox_build(project: Path, exp: str, tag: str, cache_id: str, *, no_cache: bool) -> float:
    """`reprobox build` in a fresh process (end to end), with the benchmark's cache id."""
    code = (
        "import sys; from reprobox.store import open_store; "
        "from reprobox.build import build_experiment; s = open_store(); "
        f"r = build_experiment(s, s.get({exp!r}), tag={tag!r}, cache_id={cache_id!r}, "
        f"no_cache={no_cache!r}); print(r.tag)"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, check=False)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"reprobox build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def image_size(tag: str) -> int:
    out = run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True)
    return int(out.stdout.strip())


def image_id(tag: str) -> str:
    out = run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True)
    return out.stdout.strip()


def remove_images(ids: set[str]) -> None:
    if ids:
        subprocess.run(["docker", "image", "rm", "-f", *sorted(ids)], capture_output=True,
                       check=False)


# --------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the benchmark images")
    args = parser.parse_args(argv)

    from reprobox.build import build_base, select_base_image
    from reprobox.lock import read_index_config
    from reprobox.store import Store

    project, venv = make_project()
    # Start from the committed state: the code-change and package-change steps mutate it.
    pkg, new_version = CHANGED_PACKAGE
    say("capturing the experiment ...")
    exp_a = capture(project, venv)
    stored = Store(project).get(exp_a)
    base, _why = select_base_image(stored.environment)
    codename = base.rsplit("-", 1)[-1]
    build_base(platform.python_version(), codename, progress=lambda m: say("  base: " + m))
    ca = read_index_config().cert
    if not ca:
        ca = "/dev/null"
    (project / "requirements.txt").write_text(freeze(venv))
    uvbin = project / ".uvbin"
    uvbin.mkdir(exist_ok=True)
    from reprobox.build.context import find_uv

    uv = find_uv()
    if uv is None:
        sys.exit("the hand-uv peer needs uv: pip install uv")
    shutil.copy2(uv, uvbin / "uv")

    run_id = uuid.uuid4().hex[:8]
    tags = {k: f"reprobox-bench/{k}:{run_id}" for k in ("hand-pip", "hand-uv", "reprobox")}
    results: dict[str, dict[str, float]] = {k: {} for k in tags}
    n_pkgs = len(stored.environment.packages)
    say(f"experiment {exp_a}: {n_pkgs} distributions, base {base}")

    # ---- cold builds (no layer cache; installer caches empty: a new cache id)
    say("cold builds ...")
    results["hand-pip"]["cold"] = hand_build(project, HAND_PIP.format(base=base, run=run_id),
                                             tags["hand-pip"], ca, no_cache=True)
    say(f"  hand-pip  {results['hand-pip']['cold']:.1f} s")
    hand_uv = HAND_UV.format(base=base, run=run_id, cache=f"bench-uv-{run_id}")
    results["hand-uv"]["cold"] = hand_build(project, hand_uv, tags["hand-uv"], ca, no_cache=True)
    say(f"  hand-uv   {results['hand-uv']['cold']:.1f} s")
    cache_id = f"bench-{run_id}"
    results["reprobox"]["cold"] = reprobox_build(project, exp_a, tags["reprobox"], cache_id,
                                                 no_cache=True)
    say(f"  reprobox  {results['reprobox']['cold']:.1f} s")
    sizes = {k: image_size(t) for k, t in tags.items()}
    built = {image_id(t) for t in tags.values()}

    # ---- code-only change: one commit to the project's package
    say("code-only change ...")
    commit_code_change(project, int(time.time()))
    exp_b = capture(project, venv)
    results["hand-pip"]["code"] = hand_build(project, HAND_PIP.format(base=base, run=run_id),
                                             tags["hand-pip"], ca, no_cache=False)
    results["hand-uv"]["code"] = hand_build(project, hand_uv, tags["hand-uv"], ca, no_cache=False)
    results["reprobox"]["code"] = reprobox_build(project, exp_b, tags["reprobox"], cache_id,
                                                 no_cache=False)
    for k in tags:
        say(f"  {k:9} {results[k]['code']:.1f} s")
    built |= {image_id(t) for t in tags.values()}

    # ---- one-package change
    say(f"one-package change ({pkg} -> {new_version}) ...")
    old = next(p.version for p in stored.environment.packages if p.name == pkg)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
         f"{pkg}=={new_version}"])
    try:
        exp_c = capture(project, venv)
        req = (project / "requirements.txt").read_text()
        (project / "requirements.txt").write_text(
            req.replace(f"{pkg}=={old}", f"{pkg}=={new_version}"))
        results["hand-pip"]["package"] = hand_build(project, HAND_PIP.format(base=base, run=run_id),
                                                    tags["hand-pip"], ca, no_cache=False)
        results["hand-uv"]["package"] = hand_build(project, hand_uv, tags["hand-uv"], ca,
                                                   no_cache=False)
        results["reprobox"]["package"] = reprobox_build(project, exp_c, tags["reprobox"],
                                                        cache_id, no_cache=False)
        for k in tags:
            say(f"  {k:9} {results[k]['package']:.1f} s")
        built |= {image_id(t) for t in tags.values()}
    finally:
        run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
             f"{pkg}=={old}"])
        (project / "requirements.txt").write_text(freeze(venv))

    if not args.keep:
        remove_images(built | set(tags.values()))

    hand_cold = results["hand-pip"]["cold"]
    rb = results["reprobox"]
    print(f"\nbuild benchmark: {n_pkgs} distributions, base {base}, "
          f"{platform.node()} ({os.cpu_count()} CPUs)")
    print(f"{'':10} {'cold':>8} {'code-only':>10} {'1-package':>10} {'image':>9}")
    for k in tags:
        r = results[k]
        print(f"{k:10} {r['cold']:7.1f}s {r['code']:9.1f}s {r['package']:9.1f}s "
              f"{sizes[k] / 1e6:7.0f}MB")
    print()
    checks = [
        ("cold / hand-pip cold", rb["cold"] / hand_cold, 0.5),
        ("one-package / hand-pip cold", rb["package"] / hand_cold, 0.2),
        ("code-only rebuild (s)", rb["code"], 3.0),
        ("image size / hand-pip", sizes["reprobox"] / sizes["hand-pip"], 1.0),
    ]
    for name, value, target in checks:
        verdict = "ok" if value <= target else "MISSED"
        print(f"{name:30} {value:7.2f}   target <= {target:<4}  {verdict}")
    print(f"vs hand-uv: cold {rb['cold'] / results['hand-uv']['cold']:.2f}x, one-package "
          f"{rb['package'] / results['hand-uv']['package']:.2f}x, code-only "
          f"{rb['code'] / results['hand-uv']['code']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
