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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .captured import Captured
from .progress import Progress
from .store import Store, StoredExperiment, find_root, open_store, write_atomic
from .workspace.replay import RUN_EXPERIMENT_ENV, RUN_METRICS_ENV

ExpRef = Union[str, StoredExperiment]


def _stored(store: Store, ref: ExpRef) -> StoredExperiment:
    if isinstance(ref, StoredExperiment):
        return ref
    stored = store.get(ref)
    from .validate import validate_experiment

    validate_experiment(stored.experiment, stored.environment, folder=stored.path)
    return stored


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
        from .model import flatten_metrics

        write_atomic(Path(replay_path), json.dumps(flatten_metrics(dict(metrics or {})),
                                                   sort_keys=True, indent=2) + "\n")
        exp_id = os.environ.get(RUN_EXPERIMENT_ENV, "")
        return Captured(id=exp_id, name=name or "", path=None, environment_digest="", replay=True)

    from .pipeline import capture_experiment

    here = Path(cwd) if cwd else Path.cwd()
    root = find_root(here)
    called_from_script = python is None and cmd is None and _script_command() is not None
    outcome = capture_experiment(
        root,
        name=name,
        command=cmd if cmd is not None else (_script_command() if called_from_script else None),
        metrics_files=metrics_files,
        outputs=outputs,
        inline_metrics=metrics,
        python=python if python is not None else (sys.executable if called_from_script else None),
        lock=lock,
        cwd=here,
        progress=progress,
    )
    stored = outcome.record
    if build:
        from .build import build_experiment

        build_experiment(Store(root), stored, progress=progress)
        stored = Store(root).load(stored.id)  # now with its (local) image tag
    exp = stored.experiment
    return Captured(
        id=exp.id,
        name=exp.name,
        path=stored.path,
        environment_digest=exp.environment_digest,
        warnings=outcome.warnings,
        locked=outcome.locked,
        stored=stored,
    )


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
    result: Any  # the LockResult

    @property
    def resealed(self) -> bool:
        return self.id != self.previous_id

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.result.warnings)

    @property
    def changed_versions(self) -> tuple[Any, ...]:
        return tuple(getattr(self.result, "changed_versions", ()))

    @property
    def files(self) -> dict[str, str]:
        return dict(self.result.files)


def lock(ref: ExpRef = "latest", *, platform: Optional[str] = None,
         progress: Optional[Progress] = None, store: Optional[Store] = None) -> Locked:
    """(Re)write requirements.lock, pylock.toml and the Dockerfile of an experiment, re-sealing
    it; returns :class:`Locked` (the new id, and the LockResult)."""
    from .pipeline import lock_experiment

    store = store or open_store()
    stored = _stored(store, ref)
    sealed, result = lock_experiment(store, stored, platform=platform, progress=progress)
    return Locked(id=sealed.id, previous_id=stored.id, stored=sealed, result=result)


def build(ref: ExpRef = "latest", *, tag: Optional[str] = None, base_image: Optional[str] = None,
          network: Optional[str] = None, dry_run: bool = False, no_cache: bool = False,
          progress: Optional[Progress] = None, store: Optional[Store] = None) -> Any:
    """Build the container image of an experiment; returns the BuildResult."""
    from .build import build_experiment

    store = store or open_store()
    stored = _stored(store, ref)
    if stored.environment.conda is not None:
        from .build.condaimage import build_conda_experiment

        return build_conda_experiment(store, stored, tag=tag, base_image=base_image,
                                      progress=progress, dry_run=dry_run)
    return build_experiment(store, stored, tag=tag, base_image=base_image, network=network,
                            progress=progress, dry_run=dry_run, no_cache=no_cache)


def run(ref: ExpRef = "latest", *, backend: str = "auto", rtol: float = 0.0, atol: float = 0.0,
        keep: bool = False, network: Optional[str] = None, progress: Optional[Progress] = None,
        store: Optional[Store] = None, limits: Any = None,
        dvc_remote: Optional[str] = None, ignore_outputs: tuple[str, ...] = (),
        strict: bool = False) -> Any:
    """Reproduce an experiment; returns the RunRecord (``.reproduced``)."""
    from .run import run_experiment

    store = store or open_store()
    stored = _stored(store, ref)
    return run_experiment(store, stored, backend=backend, rtol=rtol, atol=atol, keep=keep,
                          network=network, progress=progress, limits=limits,
                          dvc_remote=dvc_remote, ignore_outputs=tuple(ignore_outputs),
                          strict=strict)


def verify(ref: ExpRef = "latest", *, backend: str = "auto", progress: Optional[Progress] = None,
           store: Optional[Store] = None, limits: Any = None, strict: bool = False) -> Any:
    """Rebuild the environment, fingerprint it from inside, compare; returns the VerifyReport."""
    from .verify import verify_experiment

    store = store or open_store()
    stored = _stored(store, ref)
    return verify_experiment(store, stored, backend=backend, progress=progress, limits=limits,
                             strict=strict)


def diff(a: ExpRef, b: Optional[ExpRef] = None, *, python: Optional[str] = None,
         store: Optional[Store] = None) -> Any:
    """Environment diff between two experiments; ``b=None``: against the current environment."""
    from .diff import diff_environments

    store = store or open_store()
    left = _stored(store, a)
    if b is not None:
        right = _stored(store, b)
        return diff_environments(left.environment, right.environment,
                                 exp_a=left.experiment, exp_b=right.experiment)
    current = current_environment(store.root, python=python)
    return diff_environments(left.environment, current, exp_a=left.experiment, exp_b=None)


def current_environment(root: Path, *, python: Optional[str] = None) -> Any:
    """Fingerprint the active environment without recording anything (for ``diff A``)."""
    from .capture.environment import fingerprint_environment

    env, _warnings = fingerprint_environment(root, python=python)
    return env


def fan_out(refs: Sequence[str] = (), *, all_experiments: bool = False, on: str = "local",
            jobs: Optional[int] = None, dry_run: bool = False, run_args: Sequence[str] = (),
            timeout: Optional[float] = None, repo: Optional[str] = None,
            namespace: str = "default", gpus: Optional[str] = None,
            partition: Optional[str] = None, time_limit: Optional[str] = None,
            progress: Optional[Progress] = None, store: Optional[Store] = None) -> Any:
    """Reproduce several experiments (``on`` local, slurm or kubernetes) and gather them.

    Returns the :class:`~reprobox.fanout.Summary` (``.ok`` when all reproduced), or with
    ``dry_run`` the text that would be submitted (the sbatch script, or the Jobs as YAML)."""
    from .fanout.run import fan_out as _fan_out

    return _fan_out(store or open_store(), refs, all_experiments=all_experiments, on=on,
                    jobs=jobs, dry_run=dry_run, run_args=run_args, timeout=timeout, repo=repo,
                    namespace=namespace, gpus=gpus, partition=partition,
                    time_limit=time_limit, progress=progress)


__all__ = ["capture", "lock", "build", "run", "verify", "diff", "fan_out", "Captured", "Locked",
           "current_environment",
           "find_root"]
