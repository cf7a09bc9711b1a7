"""Benchmark: container builds of one experiment: ``reprobox build`` against two hand-written
Dockerfiles that install the same lock (the experiment's ``requirements.lock``, hashes included):

* ``hand-uv-bc`` (the fair peer, like with like): uv with a BuildKit cache mount for its cache,
  ``--no-deps --require-hashes`` from the lock, ``--compile-bytecode`` (reprobox's images carry
  bytecode: the rerun runs as a user that cannot write it, see "first run");
* ``hand-uv``: the same without ``--compile-bytecode`` (uv's default): less work, smaller image,
  and every run of the container compiles what it imports;
* ``hand-pip``: plain pip, ``--no-cache-dir --no-deps --require-hashes`` (pip's defaults
  otherwise, bytecode included); fewer repetitions (minutes each), not in the change cases.

Every build is the real command line (``reprobox build``, ``docker build``), same base image,
same BuildKit client; the hand-written ones download inside the build (the host's CA as a build
secret), reprobox's host fetches into its wheelhouse and builds offline.

Cases:

* cold: ``--no-cache`` for everyone, and empty caches: a fresh uv cache-mount id for hand-uv,
  a fresh wheelhouse and ``XDG_CACHE_HOME`` (context folder, index cache) for reprobox;
* one-package change, pure Python (tqdm) and compiled (numpy): each repetition moves the package
  to a version no earlier repetition used (so no layer of it is cached), re-captures (untimed)
  and times the rebuild with the layer cache; the hand-written ones get the new experiment's
  lock. Each is reported against the same contestant's own cold build;
* code-only change end to end: commit, ``reprobox capture --build`` (capture, lock and build);
* image size (like with like: against hand-uv-bc; hand-uv's, without bytecode, for reference);
* first run of a container, with and without precompiled bytecode: ``docker run`` as an
  unprivileged user (as ``reprobox run`` confines it) importing the stack, hand-uv's image
  against hand-uv-bc's (the same files, with and without bytecode), and reprobox's.

Each row's note gives the load average (1 min) at the start and end of its case: the machine is
shared, and the ratios come from interleaved runs so that load hits every side alike.

Targets: cold <= 0.7x the fair uv Dockerfile; compiled-package change <= 0.3x its own cold;
code-only <= 3 s; image <= 0.95x the fair uv image.

    python benchmarks/bench_build.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
from harness import (
    GIT,
    QUICK_REPS,
    BenchError,
    Contestant,
    Rep,
    Row,
    clean_env,  # noqa: E402
    Stats,
    cold_reprobox_env,
    measure,
    need,
    run_once,
    say,
    sh,
    stats,
    table,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)
#: One version per repetition, never the installed one: no repetition finds its layer cached.
CHANGES = {
    "tqdm": ["4.70.0", "4.69.1", "4.69.0", "4.68.4", "4.68.3", "4.68.2", "4.68.1", "4.68.0"],
    "numpy": ["2.4.5", "2.4.4", "2.4.3", "2.4.2", "2.4.1", "2.4.0", "2.3.5", "2.3.4"],
}
BUILD_REPS = 7

HAND_UV = """\
FROM {base}
ENV BENCH_RUN={run}
RUN --mount=type=secret,id=ca --mount=type=bind,source=.uvbin,target=/uvbin \\
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \\
    --mount=type=bind,source=.wheels,target=/tmp/wheels \\
    --mount=type=cache,target=/root/.cache/uv,id={cache} \\
    SSL_CERT_FILE=/run/secrets/ca BENCH_SESSION={session} /uvbin/uv pip install --system \\
    --find-links /tmp/wheels \\
    --link-mode copy{compile} --no-deps --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY pyproject.toml train.py ./
COPY src ./src
RUN --mount=type=secret,id=ca --mount=type=bind,source=.uvbin,target=/uvbin \\
    --mount=type=cache,target=/root/.cache/uv,id={cache} \\
    SSL_CERT_FILE=/run/secrets/ca /uvbin/uv pip install --system --link-mode copy --no-deps -e .
"""

HAND_PIP = """\
FROM {base}
ENV BENCH_RUN={run}
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=ca --mount=type=bind,source=.wheels,target=/tmp/wheels \\
    PIP_CERT=/run/secrets/ca pip install --no-cache-dir --find-links /tmp/wheels \\
    --no-deps --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY pyproject.toml train.py ./
COPY src ./src
RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install --no-cache-dir --no-deps -e .
"""


def local_wheels(lock: Path) -> List[Path]:
    """The wheels of ``lock``'s pins found in the local folders pip's configuration names
    (``find-links``), as pip would find them: name and version from the file name."""
    pins = set()
    for line in lock.read_text().splitlines():
        name, sep, rest = line.partition("==")
        if sep and not line.startswith(("#", "-")):
            pins.add((re.sub(r"[-_.]+", "-", name.strip()).lower(), rest.split()[0]))
    found = []
    for folder in envs.pip_config().get("find-links", "").split():
        path = Path(folder.replace("file://", ""))
        if not path.is_dir():
            continue
        for wheel in sorted(path.glob("*.whl")):
            parts = wheel.name.split("-")
            if len(parts) >= 5 and (re.sub(r"[_.]+", "-", parts[0]).lower(), parts[1]) in pins:
                found.append(wheel)
    return found


def docker_build_env() -> Dict[str, str]:
    return clean_env(DOCKER_BUILDKIT="1")


def default_tags(project: Path) -> set:  # type: ignore[type-arg]
    """The tags `reprobox capture --build` gave (reprobox/<repository>:<id>)."""
    out = subprocess.run(
        [
            DOCKER,
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference=reprobox/{project.name.lower()}*",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line for line in out.split() if line and "<none>" not in line}


def untag(tag: str, *, prune_cache: bool = False) -> Callable[[Rep], None]:
    """An untimed ``prepare``: remove the image a repetition is about to rebuild, by its tag, so
    that the repetitions leave no untagged image behind (about 1 GB each). With ``prune_cache``
    (the cold builds, which use no cache anyway) also every build-cache record not in use: each
    cold build of the torch set leaves ~5 GB of them, more than this machine's disk holds over
    7 repetitions of 4 contestants. A machine running the benchmark gives its build cache up."""

    def run(_rep: Rep) -> None:
        subprocess.run([DOCKER, "image", "rm", tag], capture_output=True, check=False)
        if prune_cache:
            subprocess.run([DOCKER, "builder", "prune", "-f"], capture_output=True, check=False)

    return run


def image_size(tag: str) -> int:
    return int(sh([DOCKER, "image", "inspect", "--format", "{{.Size}}", tag]).stdout.strip())


def capture(project: Path, venv: Path, *, build: bool = False) -> str:
    argv = [
        need("reprobox"),
        "capture",
        "--json",
        "--python",
        venv / "bin" / "python",
        "--cmd",
        "python train.py",
    ]
    out = sh(argv + (["--build"] if build else []), cwd=project, env=clean_env()).stdout
    return json.loads(out)["id"]


def ca_bundle() -> str:
    sys.path.insert(0, str(ROOT))
    from reprobox.lock import read_index_config

    return read_index_config().cert or "/dev/null"


class Setup:
    """The project, its captured experiment, the hand-written contexts and the tags."""

    def __init__(self, name: str, run: str) -> None:
        # a clone of its own: other benchmarks running beside it never touch its .reprobox
        self.project, self.venv = envs.checkout(name, "build")
        self.run = run
        self.ca = ca_bundle()
        shutil.rmtree(self.project / ".reprobox", ignore_errors=True)
        self.exp = capture(self.project, self.venv)
        self.base = self.dry_base()
        self.hand = self.project / "hand"
        shutil.rmtree(self.hand, ignore_errors=True)
        for kind in ("uv", "pip"):
            ctx = self.hand / kind
            (ctx / ".uvbin").mkdir(parents=True)
            shutil.copy2(self.project / "pyproject.toml", ctx)
            shutil.copy2(self.project / "train.py", ctx)
            shutil.copytree(self.project / "src", ctx / "src")
            sys.path.insert(0, str(ROOT))
            from reprobox.lock.uv import find_uv

            uv = find_uv()
            if uv is None:
                raise BenchError("uv is a dependency of reprobox; reinstall it")
            shutil.copy2(uv, ctx / ".uvbin" / "uv")
            # the locked files only this machine's wheel folders hold (torch's CPU wheel):
            # reprobox's host fetch finds them through pip's configuration, the hand-written
            # builds through --find-links on a copy in their context
            (ctx / ".wheels").mkdir()
            for wheel in local_wheels(self.lock_of(self.exp)):
                shutil.copy2(wheel, ctx / ".wheels" / wheel.name)
        self.write_lock(self.exp)
        self.tags = {
            k: f"reprobox-bench-{k}:{run}"
            for k in ("reprobox", "hand-uv", "hand-uv-bc", "hand-pip")
        }

    def dry_base(self) -> str:
        text = sh([need("reprobox"), "build", self.exp, "--dry-run"], cwd=self.project).stdout
        return next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))

    def lock_of(self, exp: str) -> Path:
        return self.project / ".reprobox" / "experiments" / exp / "requirements.lock"

    def write_lock(self, exp: str) -> None:
        lines = [
            line
            for line in self.lock_of(exp).read_text().splitlines()
            if not line.startswith("-e ") and "file://" not in line
        ]
        for kind in ("uv", "pip"):
            (self.hand / kind / "requirements.lock").write_text("\n".join(lines) + "\n")

    def hand_contestant(self, kind: str, *, cold: bool, reps: Optional[int] = None) -> Contestant:
        ctx = self.hand / kind.split("-")[1]

        def argv(rep: Rep) -> List[str]:
            run = uuid.uuid4().hex[:10] if cold else self.run
            cache = f"bench-{kind}-{run}" if cold else f"bench-{kind}-{self.run}"
            compile_flag = " --compile-bytecode" if kind == "hand-uv-bc" else ""
            text = (HAND_PIP if kind == "hand-pip" else HAND_UV).format(
                base=self.base, run=run, cache=cache, compile=compile_flag, session=self.run
            )
            dockerfile = rep.tmp / "Dockerfile"
            dockerfile.write_text(text)
            return [
                DOCKER,
                "build",
                "--progress=plain",
                "-f",
                str(dockerfile),
                "-t",
                self.tags[kind],
                "--secret",
                f"id=ca,src={self.ca}",
                *(["--no-cache"] if cold else []),
                str(ctx),
            ]

        return Contestant(
            kind,
            argv,
            env=docker_build_env(),
            reps=reps,
            prepare=untag(self.tags[kind], prune_cache=cold),
        )

    def reprobox_cold(self) -> Contestant:
        return Contestant(
            "reprobox",
            lambda rep: [
                need("reprobox"),
                "build",
                self.exp,
                "--no-cache",
                "--tag",
                self.tags["reprobox"],
            ],
            env=cold_reprobox_env,
            cwd=self.project,
            prepare=untag(self.tags["reprobox"], prune_cache=True),
        )


def prune_cache_mounts(session: str) -> None:
    """Remove the uv cache mounts of this session's hand-written builds (each cold repetition
    made one of its own, ~0.7 GB each): found by the ``BENCH_SESSION`` marker of their command,
    removed by their build-cache record id, nothing else."""
    for rec in _build_cache():
        if rec.get("CacheType") == "exec.cachemount" and f"BENCH_SESSION={session}" in rec.get(
            "Description", ""
        ):
            subprocess.run(
                [DOCKER, "builder", "prune", "-f", "--filter", f"id={rec['ID']}"],
                capture_output=True,
                check=False,
            )


def _created(rec: Dict[str, str]) -> Optional[datetime]:
    """A build-cache record's ``CreatedAt`` (``2026-11-30 19:34:57.306310357 +0000 UTC``)."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? \+0000", rec.get("CreatedAt", ""))
    if not m:
        return None
    micro = int((m.group(2) or "0")[:6].ljust(6, "0"))
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
        microsecond=micro, tzinfo=timezone.utc
    )


def _build_cache() -> List[Dict[str, str]]:
    """Docker's build-cache records (``docker system df -v``); none when it cannot say."""
    out = subprocess.run(
        [DOCKER, "system", "df", "-v", "--format", "{{json .BuildCache}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    try:
        return json.loads(out or "[]") or []
    except ValueError:
        return []


def _depth(rid: str, parent: Dict[str, str]) -> int:
    n = 0
    while rid in parent and n < 1000:
        rid, n = parent[rid], n + 1
    return n


def prune_created_after(since: datetime) -> int:
    """Remove the build-cache records created after ``since`` and not in use: a change case's
    earlier rounds made them and no later round can reuse them (each round moves to a version
    not built before), while the warm starting point, older, stays. Without this, 7 rounds of
    the torch set's changes would need ~60 GB. ``docker builder prune`` takes one id at a time
    and keeps a record that another one builds on, so children go first (and a second pass
    takes what a first could not). Returns how many records went."""
    gone = 0
    for _ in range(3):
        records = _build_cache()
        parent = {r.get("ID", ""): r.get("Parent", "") for r in records}

        ids = [
            r["ID"]
            for r in records
            if r.get("ID") and r.get("InUse") != "true" and (_created(r) or since) > since
        ]
        if not ids:
            break
        for rid in sorted(ids, key=lambda rid: _depth(rid, parent), reverse=True):
            done = subprocess.run(
                [DOCKER, "builder", "prune", "-f", "--filter", f"id={rid}"],
                capture_output=True,
                text=True,
                check=False,
            )
            gone += rid in done.stdout
    return gone


def change_case(s: Setup, package: str, reps: int) -> Dict[str, List[float]]:
    """Each repetition: move ``package`` to a new version, re-capture, rebuild all three (the
    records of the round before are removed first, untimed: see :func:`prune_created_after`)."""
    since = datetime.now(timezone.utc)
    pip = [s.venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps"]
    old = sh(
        [
            s.venv / "bin" / "python",
            "-c",
            f"import importlib.metadata as m; print(m.version({package!r}))",
        ]
    ).stdout.strip()
    state: Dict[str, str] = {}

    def move(rep: Rep) -> None:
        for tag in s.tags.values():
            untag(tag)(rep)
        if state.get("rep") == str(rep.index):
            return
        prune_created_after(since)
        version = CHANGES[package][rep.index]
        sh([*pip, f"{package}=={version}"])
        state["exp"] = capture(s.project, s.venv)
        state["rep"] = str(rep.index)
        s.write_lock(state["exp"])

    cs = []
    for kind in ("hand-uv", "hand-uv-bc"):
        c = s.hand_contestant(kind, cold=False)
        c.prepare = move
        cs.append(c)
    cs.append(
        Contestant(
            "reprobox",
            lambda rep: [need("reprobox"), "build", state["exp"], "--tag", s.tags["reprobox"]],
            env=clean_env(),
            cwd=s.project,
            prepare=move,
        )
    )
    try:
        # whichever contestant comes first in a round moves the package (once per round)
        res = measure(cs, reps, label=f"build {package} change")
    finally:
        sh([*pip, f"{package}=={old}"])
        s.write_lock(s.exp)
    return {k: v.values for k, v in res.items()}


def first_run(s: Setup, reps: int, stack: str) -> Dict[str, Stats]:
    """docker run importing the stack as an unprivileged user (it cannot write bytecode): the
    fair uv image without bytecode, the same with it, and reprobox's."""
    cmd = ["python", "-c", f"import {stack}"]
    cs = [
        Contestant(
            name,
            [
                DOCKER,
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "65534:65534",
                s.tags[kind],
                *cmd,
            ],
        )
        for name, kind in (
            ("no bytecode", "hand-uv"),
            ("precompiled", "hand-uv-bc"),
            ("reprobox", "reprobox"),
        )
    ]
    return measure(cs, reps, label="first run")


#: The cases, in the order they run: the later ones start from the cold builds.
CASES = ("cold", "first-run", "code", "tqdm", "numpy")


def run(
    quick: bool = False,
    env_names: tuple = ("datascience",),  # type: ignore[type-arg]
    reps: Optional[int] = None,
    cases: tuple = CASES,  # type: ignore[type-arg]
    cold_file: Optional[Path] = None,
    pip_reps: Optional[int] = None,
) -> List[Row]:
    reps = reps or (QUICK_REPS if quick else BUILD_REPS)
    rows: List[Row] = []
    for name in env_names:
        rows.extend(run_env(name, reps, cases, cold_file, pip_reps))
    return rows


def cold_from(path: Path, label: str) -> Dict[str, Stats]:
    """The cold builds of an earlier run (``--out`` JSON of this benchmark) for the environment
    ``label``: every contestant's medians, min, max and values, as measured then."""
    doc = json.loads(Path(path).read_text())
    cold: Dict[str, Stats] = {}
    for row in doc.get("rows", []):
        if row.get("benchmark") != "build" or row.get("case") != "cold":
            continue
        if row.get("environment") != label:
            continue
        cold["reprobox"] = Stats(**row["subject_stats"])
        cold[row["peer"].replace(" Dockerfile", "")] = Stats(**row["peer_stats"])
    if not {"reprobox", "hand-uv-bc", "hand-uv"} <= set(cold):
        raise BenchError(f"{path} has no cold builds of {label}")
    return cold


def run_env(
    name: str,
    reps: int,
    cases: tuple = CASES,  # type: ignore[type-arg]
    cold_file: Optional[Path] = None,
    pip_reps: Optional[int] = None,
) -> List[Row]:
    """The ``cases`` in turn (the cold builds always, or those of ``cold_file``, an earlier
    run's JSON: every other case is reported against them); a failing case is a row that says
    so, the others still run."""
    rows: List[Row] = []
    s = Setup(name, uuid.uuid4().hex[:8])
    label = f"{name} ({envs.count(s.venv)} dists)"
    note = f"{reps} reps (builds: minutes each on this machine)" if reps < 7 else ""
    pip_reps = reps if pip_reps is None else min(pip_reps, reps)
    images = set(s.tags.values())
    cold: Dict[str, Stats] = {}

    def case(title: str, fn: Callable[[], None]) -> None:
        first = len(rows)
        before = os.getloadavg()[0]
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the table says which case failed and why
            say(f"build case {title!r} FAILED: {exc}")
            rows.append(
                Row("build", label, title, "FAILED", None, note=str(exc).splitlines()[0][:200])
            )
        load = f"load {before:.1f}->{os.getloadavg()[0]:.1f}"
        for row in rows[first:]:
            row.note = f"{row.note}; {load}" if row.note else load

    def cold_case() -> None:
        cold.update(
            measure(
                [
                    s.reprobox_cold(),
                    s.hand_contestant("hand-uv-bc", cold=True),
                    s.hand_contestant("hand-uv", cold=True),
                ]
                + ([s.hand_contestant("hand-pip", cold=True, reps=pip_reps)] if pip_reps else []),
                reps,
                label=f"build {name} cold",
            )
        )
        sizes = {k: image_size(t) for k, t in s.tags.items() if k != "hand-pip" or pip_reps}
        like = {
            "hand-uv-bc": "like with like: both with bytecode",
            "hand-uv": "peer without bytecode (less work, every run compiles)",
            "hand-pip": "pip: with bytecode, no cache",
        }
        peers = ("hand-uv-bc", "hand-uv", "hand-pip") if pip_reps else ("hand-uv-bc", "hand-uv")
        for peer, target in (("hand-uv-bc", 0.7), ("hand-uv", 0.7), ("hand-pip", None)):
            if peer not in peers:
                continue
            rows.append(
                Row(
                    "build",
                    label,
                    "cold",
                    "reprobox build",
                    cold["reprobox"],
                    f"{peer} Dockerfile",
                    cold[peer],
                    target=target,
                    note="; ".join(x for x in (like[peer], note) if x),
                )
            )
        for peer, target in (("hand-uv-bc", 0.95), ("hand-uv", None), ("hand-pip", None)):
            if peer not in peers:
                continue
            rows.append(
                Row(
                    "build",
                    label,
                    "image size",
                    "reprobox",
                    stats([sizes["reprobox"]]),
                    f"{peer} image",
                    stats([sizes[peer]]),
                    unit="bytes",
                    target=target,
                    note=like[peer] if peer != "hand-pip" else "pip: with bytecode",
                )
            )

    def first_run_case() -> None:
        stack = "numpy, pandas, scipy, sklearn, matplotlib.pyplot" + (
            ", torch" if name == "torch" else ""
        )
        fr = first_run(s, max(reps, 7), stack)
        plain, compiled = image_size(s.tags["hand-uv"]), image_size(s.tags["hand-uv-bc"])
        rows.append(
            Row(
                "first run",
                label,
                f"container importing {stack}",
                "precompiled bytecode (hand-uv-bc)",
                fr["precompiled"],
                "no bytecode (hand-uv)",
                fr["no bytecode"],
                note=f"image {compiled / 1e6:.0f} MB vs {plain / 1e6:.0f} MB",
            )
        )
        rows.append(
            Row(
                "first run",
                label,
                f"container importing {stack}",
                "reprobox image",
                fr["reprobox"],
                "no bytecode (hand-uv)",
                fr["no bytecode"],
            )
        )

    def warmup() -> None:
        # the warm starting point of the change cases: every contestant built once with its
        # layer and installer caches (untimed)
        for c in (
            s.hand_contestant("hand-uv", cold=False),
            s.hand_contestant("hand-uv-bc", cold=False),
            Contestant(
                "reprobox",
                [need("reprobox"), "build", s.exp, "--tag", s.tags["reprobox"]],
                env=clean_env(),
                cwd=s.project,
            ),
        ):
            folder = s.hand / f"warm-{c.name}"
            folder.mkdir()
            run_once(c, Rep(-1, folder))

    counter = {"n": 0}

    def commit(rep: Rep) -> None:
        counter["n"] += 1
        (s.project / "src" / "proj" / "__init__.py").write_text(
            f"SEED = {counter['n']}  # {s.run}\n"
        )
        sh([*GIT, "commit", "-qam", f"code change {counter['n']}"], cwd=s.project)

    def code_case() -> None:
        # code-only change, end to end: commit (untimed), capture with its lock, build
        code = measure(
            [
                Contestant(
                    "reprobox capture --build",
                    [
                        need("reprobox"),
                        "capture",
                        "--build",
                        "--python",
                        s.venv / "bin" / "python",
                        "--cmd",
                        "python train.py",
                    ],
                    env=clean_env(),
                    cwd=s.project,
                    prepare=commit,
                )
            ],
            max(reps, 7),
            label="code-only change",
        )
        rows.append(
            Row(
                "build",
                label,
                "code-only change, end to end (capture included)",
                "reprobox capture --build",
                code["reprobox capture --build"],
                unit="seconds",
                target=3.0,
            )
        )

    def change(package: str, kind: str, target: Optional[float]) -> Callable[[], None]:
        def fn() -> None:
            times = change_case(s, package, reps)
            for who in ("reprobox", "hand-uv-bc", "hand-uv"):
                rows.append(
                    Row(
                        "build",
                        label,
                        f"{kind} change ({package}) vs own cold",
                        who,
                        stats(times[who]),
                        f"{who} cold",
                        cold.get(who),
                        target=target if who == "reprobox" else None,
                        note=note,
                    )
                )

        return fn

    try:
        if cold_file is not None:
            cold.update(cold_from(cold_file, label))
            note = "; ".join(x for x in (note, f"own cold: {cold_file.name}") if x)
        else:
            case("cold", cold_case)
        if cold:
            if "first-run" in cases and cold_file is None:
                case("first run", first_run_case)
            if {"code", "tqdm", "numpy"} & set(cases):
                case("warm-up", warmup)
            if "code" in cases:
                case("code-only change", code_case)
            if "tqdm" in cases:
                case("pure-Python change", change("tqdm", "pure Python", None))
            if "numpy" in cases:
                case("compiled change", change("numpy", "compiled", 0.3))
    finally:
        images |= default_tags(s.project)
        subprocess.run(
            [DOCKER, "image", "rm", "-f", *sorted(images)], capture_output=True, check=False
        )
        prune_cache_mounts(s.run)
        shutil.rmtree(s.hand, ignore_errors=True)
        sh(["git", "reset", "-q", "--hard", "HEAD"], cwd=s.project)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--env", action="append", choices=["datascience", "torch"])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (cold always runs)",
    )
    parser.add_argument(
        "--cold-from",
        type=Path,
        help="take the cold builds from an earlier run's --out JSON instead of building them "
        "again (the change cases then report against those; first-run needs a cold run)",
    )
    parser.add_argument(
        "--pip-reps",
        type=int,
        help="repetitions of the plain pip Dockerfile's cold build (minutes each on the torch "
        "set; no target of its own): at most --reps; 0 leaves it out",
    )
    args = parser.parse_args()
    cases = tuple(c for c in args.cases.split(",") if c)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}: pick from {', '.join(CASES)}")
    if args.pip_reps is not None and args.pip_reps < 0:
        parser.error(f"--pip-reps {args.pip_reps}: give 0 (leave hand-pip out) or more")
    rows = run(
        args.quick,
        tuple(args.env or ("datascience",)),
        args.reps,
        cases,
        args.cold_from,
        args.pip_reps,
    )
    print(table(rows))
    if args.out:
        write_json(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
