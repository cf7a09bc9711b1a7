"""The library face of reprobox: the same operations as the CLI, returning result objects.

A training script can record itself when it finishes::

    import reprobox
    exp = reprobox.capture(name="baseline", metrics={"accuracy": acc})

When that script is itself being reproduced by ``reprobox run``, the call does not capture again:
``REPROBOX_RUN_METRICS`` names a file in the checkout, and the inline metrics are written there for
the run to compare with the recorded ones.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from .captured import Captured
from .model import flatten_metrics
from .progress import Progress
from .store import Store, StoredExperiment, find_root, open_store, write_atomic
from .workspace.replay import RUN_EXPERIMENT_ENV, RUN_METRICS_ENV

# The stages are imported by the function that runs each (`# lazy:`): all of them together cost
# ~180 ms to import, which every command, `--help` included, would pay at start.
if TYPE_CHECKING:  # the result types of the stages
    from .backends import ContainerLimits
    from .build import BuildResult
    from .build.condaimage import CondaImage
    from .diff import EnvDiff
    from .doctor import Check
    from .fanout import Summary
    from .lock.result import LockResult, VersionChange
    from .model import Environment
    from .registry import Publication
    from .run import RunRecord
    from .verify import VerifyReport

Warn = Callable[[str], None]
ExpRef = Union[str, StoredExperiment]


# --------------------------------------------------------------------------- results
# What each operation returns; reprobox.render turns every one of them into text or JSON.


@dataclass(frozen=True)
class ExperimentRow:
    """One line of ``reprobox ls``."""

    id: str
    name: str
    created: str
    python: str
    packages: int
    command: str
    image: str
    commit: str  # 10 characters, +dirty when the tree was dirty


@dataclass(frozen=True)
class Listing:
    """What ``ls`` returns: the usable experiments, oldest first, and the folders skipped (why)."""

    experiments: tuple[ExperimentRow, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shown:
    """What ``show`` returns: one experiment and the names of the files of its folder."""

    stored: StoredExperiment
    files: tuple[str, ...]


@dataclass(frozen=True)
class Locked:
    """What ``reprobox.lock`` returns: the lock, and the record sealed with it.

    The id seals every file of an experiment, so writing lock files gives the record a new id
    (``id``; ``previous_id`` is gone from the store and named by the new record's ``supersedes``)
    unless the files were already there with that content.
    """

    id: str
    previous_id: str
    stored: StoredExperiment
    result: LockResult

    @property
    def resealed(self) -> bool:
        return self.id != self.previous_id

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.result.warnings)

    @property
    def changed_versions(self) -> tuple[VersionChange, ...]:
        return tuple(self.result.changed_versions)

    @property
    def platform(self) -> Optional[str]:
        return self.result.platform

    @property
    def files(self) -> dict[str, str]:
        return dict(self.result.files)


@dataclass(frozen=True)
class BaseImage:
    """What ``base`` returns: the tag of the base image built."""

    tag: str
    python: str
    codename: str


@dataclass(frozen=True)
class FanOutPlan:
    """What a fan-out ``--dry-run`` returns: what would be submitted (commands, an sbatch
    script, Job manifests as YAML)."""

    on: str
    text: str


@dataclass(frozen=True)
class Pushed:
    """What ``push`` returns: the published image and the record that names it."""

    experiment: str
    publication: Publication
    record: Path  # images.json of the experiment


@dataclass(frozen=True)
class PrComment:
    """What ``pr`` returns: the markdown of the pull-request comment."""

    experiment: str
    base: Optional[str]
    markdown: str


@dataclass(frozen=True)
class Diagnosis:
    """What ``doctor`` returns: one check per thing this machine may or may not do."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


# --------------------------------------------------------------------------- operations


def _stored(store: Store, ref: ExpRef) -> StoredExperiment:
    if isinstance(ref, StoredExperiment):
        return ref
    return store.get(ref)  # parsed, sealed and validated by the store


def _script_command() -> Optional[str]:
    """``python train.py --lr 0.1`` for the script that is running, relative to the cwd."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0 in ("-c", "-m") or not Path(argv0).is_file():
        return None
    script = os.path.relpath(argv0) if os.path.isabs(argv0) else argv0
    return shlex.join(["python", script, *sys.argv[1:]])


def capture(
    name: Optional[str] = None,
    *,
    metrics: Optional[Mapping[str, Any]] = None,
    metrics_files: Sequence[str] = (),
    outputs: Sequence[str] = (),
    cmd: Optional[str] = None,
    python: Optional[str] = None,
    lock: bool = True,
    build: bool = False,
    cwd: Optional[Union[str, Path]] = None,
    progress: Optional[Progress] = None,
) -> Captured:
    """Record the current experiment. From a script, the interpreter defaults to the running one
    and the command to the script's own command line."""
    replay_path = os.environ.get(RUN_METRICS_ENV)
    if replay_path:
        # Reproduction: report the values, do not record a new experiment.
        write_atomic(
            Path(replay_path),
            json.dumps(flatten_metrics(dict(metrics or {})), sort_keys=True, indent=2) + "\n",
        )
        exp_id = os.environ.get(RUN_EXPERIMENT_ENV, "")
        return Captured(id=exp_id, name=name or "", path=None, environment_digest="", replay=True)

    called_from_script = python is None and cmd is None and _script_command() is not None
    return record(
        name=name,
        command=cmd if cmd is not None else (_script_command() if called_from_script else None),
        metrics_files=metrics_files,
        outputs=outputs,
        inline_metrics=metrics,
        python=python if python is not None else (sys.executable if called_from_script else None),
        lock=lock,
        build=build,
        cwd=cwd,
        progress=progress,
    )


def record(
    argv: Optional[Sequence[str]] = None,
    *,
    name: Optional[str] = None,
    command: Optional[str] = None,
    metrics_files: Sequence[str] = (),
    outputs: Sequence[str] = (),
    inline_metrics: Optional[Mapping[str, Any]] = None,
    python: Optional[str] = None,
    lock: bool = True,
    build: bool = False,
    allow_secret_in_patch: bool = False,
    system_packages: Sequence[str] = (),
    exit_status: Optional[int] = None,
    command_stdout_to_stderr: bool = False,
    cwd: Optional[Union[str, Path]] = None,
    progress: Optional[Progress] = None,
    warn: Optional[Warn] = None,
) -> Captured:
    """Capture as ``reprobox capture`` does (``argv`` None) or ``reprobox record -- ARGV`` (run
    the command first, then capture what it really used): no defaults taken from the calling
    script. The capture's warnings go to ``warn`` as soon as it is stored, before a ``build``
    (and are in the result)."""
    from .pipeline import capture_experiment  # lazy: ~125 ms (capture, lock), capture/record only

    here = Path(cwd) if cwd else Path.cwd()
    root = find_root(here)
    outcome = capture_experiment(
        root,
        name=name,
        command=command,
        metrics_files=metrics_files,
        outputs=outputs,
        inline_metrics=inline_metrics,
        python=python,
        lock=lock,
        cwd=here,
        progress=progress,
        allow_secret_in_patch=allow_secret_in_patch,
        system_packages=system_packages,
        exit_status=exit_status,
        record_argv=None if argv is None else list(argv),
        command_stdout_to_stderr=command_stdout_to_stderr,
    )
    if warn is not None:
        for w in outcome.warnings:
            warn(w)
    if not build:
        return outcome
    store = Store(root)
    stored = store.load(outcome.record.id)  # read back: the store validates what it hands out
    image = _build(store, stored, progress=progress).tag
    return replace(outcome, stored=store.load(stored.id), image=image)  # now with its image tag


def ls(*, store: Optional[Store] = None) -> Listing:
    """The recorded experiments, oldest first; a folder that cannot be used is named in
    ``skipped`` (with why), never breaking the list."""
    store = store or open_store()
    good, skipped = store.scan(report=False)
    rows = tuple(
        ExperimentRow(
            id=s.experiment.id,
            name=s.experiment.name,
            created=s.experiment.created,
            python=s.environment.interpreter.version,
            packages=len(s.environment.packages),
            command=s.experiment.command or "",
            image=s.image or "",
            commit=s.experiment.git.commit[:10] + ("+dirty" if s.experiment.git.dirty else ""),
        )
        for s in good
    )
    return Listing(experiments=rows, skipped=tuple(str(bad) for bad in skipped))


def show(
    ref: ExpRef = "latest", *, store: Optional[Store] = None, warn: Optional[Warn] = None
) -> Shown:
    """One experiment, checked, with the names of the files of its folder."""
    store = store or open_store(warn=warn)
    stored = _stored(store, ref)
    files = tuple(sorted(p.name for p in stored.path.iterdir() if not p.name.startswith(".")))
    return Shown(stored=stored, files=files)


def lock(
    ref: ExpRef = "latest",
    *,
    platform: Optional[str] = None,
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
) -> Locked:
    """(Re)write requirements.lock, pylock.toml and the Dockerfile of an experiment, re-sealing
    it; returns :class:`Locked` (the new id, and the LockResult)."""
    from .pipeline import lock_experiment  # lazy: ~125 ms (capture, lock), only lock

    store = store or open_store()
    stored = _stored(store, ref)
    sealed, result = lock_experiment(store, stored, platform=platform, progress=progress)
    return Locked(id=sealed.id, previous_id=stored.id, stored=sealed, result=result)


def build(
    ref: ExpRef = "latest",
    *,
    tag: Optional[str] = None,
    base_image: Optional[str] = None,
    network: Optional[str] = None,
    dry_run: bool = False,
    no_cache: bool = False,
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
) -> Union[BuildResult, CondaImage]:
    """Build the container image of an experiment; returns the BuildResult (a CondaImage for a
    conda capture)."""
    store = store or open_store()
    return _build(
        store,
        _stored(store, ref),
        tag=tag,
        base_image=base_image,
        network=network,
        dry_run=dry_run,
        no_cache=no_cache,
        progress=progress,
    )


def _build(
    store: Store,
    stored: StoredExperiment,
    *,
    tag: Optional[str] = None,
    base_image: Optional[str] = None,
    network: Optional[str] = None,
    dry_run: bool = False,
    no_cache: bool = False,
    progress: Optional[Progress] = None,
) -> Union[BuildResult, CondaImage]:
    from .build import build_experiment  # lazy: ~85 ms, only build and record --build

    if stored.environment.conda is not None:
        from .build.condaimage import build_conda_experiment  # lazy: ~25 ms more than build

        return build_conda_experiment(
            store, stored, tag=tag, base_image=base_image, progress=progress, dry_run=dry_run
        )
    return build_experiment(
        store,
        stored,
        tag=tag,
        base_image=base_image,
        network=network,
        progress=progress,
        dry_run=dry_run,
        no_cache=no_cache,
    )


def base(
    python: str, codename: str = "bookworm", *, progress: Optional[Progress] = None
) -> BaseImage:
    """Build a ``python:<python>-slim-<codename>`` base image with no registry access."""
    from .base import build_base  # lazy: ~25 ms, only `reprobox base`

    tag = build_base(python, codename, progress=progress)
    return BaseImage(tag=tag, python=python, codename=codename)


def run(
    ref: ExpRef = "latest",
    *,
    backend: str = "auto",
    rtol: float = 0.0,
    atol: float = 0.0,
    keep: bool = False,
    network: Optional[str] = None,
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
    limits: Optional[ContainerLimits] = None,
    dvc_remote: Optional[str] = None,
    ignore_outputs: tuple[str, ...] = (),
    strict: bool = False,
) -> RunRecord:
    """Reproduce an experiment; returns the RunRecord (``.reproduced``)."""
    from .run import run_experiment  # lazy: ~140 ms (backends, build, registry), only run

    store = store or open_store()
    stored = _stored(store, ref)
    return run_experiment(
        store,
        stored,
        backend=backend,
        rtol=rtol,
        atol=atol,
        keep=keep,
        network=network,
        progress=progress,
        limits=limits,
        dvc_remote=dvc_remote,
        ignore_outputs=tuple(ignore_outputs),
        strict=strict,
    )


def verify(
    ref: ExpRef = "latest",
    *,
    backend: str = "auto",
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
    limits: Optional[ContainerLimits] = None,
    strict: bool = False,
) -> VerifyReport:
    """Rebuild the environment, fingerprint it from inside, compare; returns the VerifyReport."""
    from .verify import verify_experiment  # lazy: ~150 ms (backends, diff), only verify

    store = store or open_store()
    stored = _stored(store, ref)
    return verify_experiment(
        store, stored, backend=backend, progress=progress, limits=limits, strict=strict
    )


def push(
    ref: ExpRef = "latest",
    *,
    registry: Optional[str] = None,
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
    warn: Optional[Warn] = None,
) -> Pushed:
    """Push the experiment's image (built first when needed) and record it in images.json."""
    from . import registry as reg  # lazy: ~120 ms (build, engine), only push

    store = store or open_store(warn=warn)
    stored = store.get(ref) if isinstance(ref, str) else ref
    publication = reg.push(store, stored, registry, progress=progress)
    return Pushed(
        experiment=stored.id, publication=publication, record=stored.path / reg.IMAGES_FILE
    )


def diff(
    a: ExpRef,
    b: Optional[ExpRef] = None,
    *,
    python: Optional[str] = None,
    store: Optional[Store] = None,
) -> EnvDiff:
    """Environment diff between two experiments; ``b=None``: against the current environment."""
    from .diff import diff_environments  # lazy: ~10 ms, only diff

    store = store or open_store()
    left = _stored(store, a)
    if b is not None:
        right = _stored(store, b)
        return diff_environments(
            left.environment, right.environment, exp_a=left.experiment, exp_b=right.experiment
        )
    current = current_environment(store.root, python=python)
    return diff_environments(left.environment, current, exp_a=left.experiment, exp_b=None)


def current_environment(root: Path, *, python: Optional[str] = None) -> Environment:
    """Fingerprint the active environment without recording anything (for ``diff A``)."""
    from .capture.environment import fingerprint_environment  # lazy: ~28 ms, only `diff A`

    env, _warnings = fingerprint_environment(root, python=python)
    return env


def pr(
    ref: ExpRef = "latest", base: Optional[ExpRef] = None, *, store: Optional[Store] = None
) -> PrComment:
    """The markdown of a pull-request comment: the environment of ``ref`` and, with ``base``,
    what changed against it."""
    from .pr import pr_markdown  # lazy: ~13 ms, only pr

    store = store or open_store()
    stored = _stored(store, ref)
    against = _stored(store, base) if base else None
    return PrComment(
        experiment=stored.id,
        base=against.id if against is not None else None,
        markdown=pr_markdown(stored, against, repo_root=store.root),
    )


def doctor() -> Diagnosis:
    """What this machine can do: engine, BuildKit, git, DVC, GPUs, index reachability."""
    from .doctor import diagnose  # lazy: ~60 ms (engine, capture, lock), only doctor

    return Diagnosis(checks=tuple(diagnose()))


def fan_out(
    refs: Sequence[str] = (),
    *,
    all_experiments: bool = False,
    on: str = "local",
    jobs: Optional[int] = None,
    dry_run: bool = False,
    run_args: Sequence[str] = (),
    timeout: Optional[float] = None,
    repo: Optional[str] = None,
    namespace: str = "default",
    gpus: Optional[str] = None,
    partition: Optional[str] = None,
    time_limit: Optional[str] = None,
    progress: Optional[Progress] = None,
    store: Optional[Store] = None,
) -> Union[Summary, FanOutPlan]:
    """Reproduce several experiments (``on`` local, slurm or kubernetes) and gather them.

    Returns the :class:`~reprobox.fanout.Summary` (``.ok`` when all reproduced), or with
    ``dry_run`` the :class:`FanOutPlan`: the text that would be submitted (the commands, the
    sbatch script, or the Jobs as YAML)."""
    from .fanout.run import fan_out as _fan_out  # lazy: ~150 ms (run, all targets), fan-out only

    result = _fan_out(
        store or open_store(),
        refs,
        all_experiments=all_experiments,
        on=on,
        jobs=jobs,
        dry_run=dry_run,
        run_args=run_args,
        timeout=timeout,
        repo=repo,
        namespace=namespace,
        gpus=gpus,
        partition=partition,
        time_limit=time_limit,
        progress=progress,
    )
    if isinstance(result, str):
        return FanOutPlan(on=on, text=result)
    return result


__all__ = [
    "capture",
    "record",
    "ls",
    "show",
    "lock",
    "build",
    "base",
    "run",
    "verify",
    "push",
    "diff",
    "pr",
    "doctor",
    "fan_out",
    "current_environment",
    "find_root",
    "Captured",
    "ExperimentRow",
    "Listing",
    "Shown",
    "Locked",
    "BaseImage",
    "FanOutPlan",
    "Pushed",
    "PrComment",
    "Diagnosis",
]
