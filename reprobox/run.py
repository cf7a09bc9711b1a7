"""``reprobox run``: check out the exact code and data, rebuild the environment, rerun, compare.

Plan, then apply. :func:`plan_run` is pure: from the recorded experiment it decides what the
rerun does (which commit and patch, whether data is pulled, which command with which variables,
which files to clear beforehand and compare afterwards). :func:`run_experiment` applies the plan in
five timed phases, each reported through ``progress``:

1. **code** - the recorded commit in a git worktree of its own (the user's working tree is never
   touched), with the recorded patch applied;
2. **data** - DVC data pulled into the checkout from a remote the user trusts (the checkout's
   own ``.dvc/config`` remote only when it equals one of the user's, or ``--dvc-remote``), through
   a DVC cache kept under ``.reprobox/local/cache/dvc`` and shared by all runs (the second run
   downloads nothing; data present only in the user's own DVC cache does not count: it must be in
   the remote). A pipeline pulls only its inputs (the data of its ``.dvc`` files): what its stages
   write, ``dvc repro --force`` recomputes;
3. **environment** - the backend (docker image, or cached virtualenv) made ready;
4. **command** - the recorded command recomputed: a DVC pipeline with ``dvc repro --force`` (the
   host's DVC orchestrates, every stage command runs inside the environment), a shell command
   with ``sh -c``; with the recorded replayable variables and nothing else that changes numbers;
5. **comparison** - metrics against the recorded values, declared outputs by sha256, DVC outputs
   by DVC's hash; every difference named: the files inside a differing folder, the first value
   that differs in a CSV/JSON output (compared with the tolerance when a recorded copy is found on
   this machine by its hash); ``--ignore-output`` leaves outputs out of the verdict.

The checkout is untrusted input (a pull request may have written it): a symbolic link leading out
of it (committed, or made by the command) stops the run before the host reads through it, and
reprobox writes only into ``.reprobox-run``, a folder it creates itself.

The result is a :class:`RunRecord`, saved under ``.reprobox/local/runs/<id>-<UTC time>.json``. The
checkout is always removed (also on Ctrl-C and errors) unless ``keep`` is set.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .outcome import (
    DIFFERS,
    MISSING,
    SAME,
    TABULAR_SUFFIXES,
    FileDiff,
    MetricCheck,
    OutputCheck,
    Tolerance,
    apply_ignores,
    compare_data,
    compare_manifests,
    compare_exit_status,
    compare_metrics,
    compare_outputs,
    differences,
    settle,
)
from . import backends, payload, proc
from .backends import make_run_dir, refuse_outward_symlinks, write_new_file
from .backends.docker import (
    CONTAINER_GIT_DIR,
    dvc_repro_env,
    image_substitutions,
    run_git_folder,
)
from .build import unverified_notes
from .errors import ReproboxError, UsageError
from .model import (
    INLINE_METRICS,
    RUN_SCHEMA,
    Environment,
    Experiment,
    OutputFile,
    pretty_json,
)
from .model import grammar as validate
from .model.envvars import check_replayable
from .outcome import MAX_DATA_BYTES
from .progress import Progress
from .store import Store, StoredExperiment
from .workspace import dvc, git
from .workspace.metrics import hash_output, read_metrics
from .workspace.replay import RUN_EXPERIMENT_ENV, RUN_METRICS_ENV

REPRODUCED = "reproduced"
REPRODUCED_WITH_SUBSTITUTIONS = "reproduced with substitutions"
DIFFERS_VERDICT = "differs"
#: The run report's schema version: 2 names each output hash by its algorithm
#: (``recorded_md5`` for DVC outputs, ``recorded_sha256`` for declared ones).
RUN_SCHEMA_VERSION = 2

PHASES = ("code", "data", "environment", "command", "comparison")


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RunPlan:
    """What a rerun of one experiment does, decided from the record alone."""

    experiment_id: str
    commit: str
    patch: Optional[str]  # file name in the experiment folder
    pull_data: bool
    command_kind: str  # shell | dvc
    command: Optional[str]
    cwd: str
    env: Mapping[str, str]  # recorded replayable variables, validated
    metrics_files: tuple[str, ...]  # repo-relative, INLINE excluded
    inline_metrics: bool
    outputs: tuple[OutputFile, ...]
    #: Files removed from the checkout before the command, so stale committed copies never pass
    #: for results (a DVC pipeline removes its outputs itself).
    clear_before: tuple[str, ...]
    #: The capture's reprobox cannot be in the rebuilt environment: use the replay stand-in.
    replay_shim: bool
    notes: tuple[str, ...] = ()


def _reprobox_unreproducible(environment: Environment) -> bool:
    pkg = environment.package("reprobox")
    if pkg is None:
        return False
    src = pkg.source
    if src.kind == "directory":
        return not src.in_repo
    return src.kind == "archive" and (src.url or "").startswith("file:")


def plan_run(experiment: Experiment, environment: Environment) -> RunPlan:
    """Decide the rerun of ``experiment``; refuse what cannot be rerun, with the fix."""
    exp = experiment
    if exp.command_kind == "none" or (exp.command_kind == "shell" and not exp.command):
        raise UsageError(
            f"experiment {exp.id} recorded no command, so there is nothing to rerun",
            "capture it again with the command that produced its results "
            '(`reprobox capture --cmd "python train.py"`); `reprobox verify` checks the '
            "environment alone",
        )
    if exp.command_kind not in ("shell", "dvc"):
        raise UsageError(f"experiment {exp.id} has an unknown command kind {exp.command_kind!r}")
    if exp.command_kind == "shell":
        validate.command(exp.command, "command")
    cwd = validate.relpath("cwd", exp.cwd)
    env = check_replayable(dict(exp.env))
    metrics_files = tuple(sorted(m for m in exp.metrics if m != INLINE_METRICS))
    for m in metrics_files:
        validate.relpath(f"metrics file {m!r}", m, allow_dot=False)
    outputs = tuple(sorted(exp.outputs, key=lambda o: o.path))
    for o in outputs:
        validate.relpath("output", o.path, allow_dot=False)
    clear: tuple[str, ...] = ()
    if exp.command_kind == "shell":
        clear = tuple(sorted(set(metrics_files) | {o.path for o in outputs}))
    notes: list[str] = []
    if exp.git.untracked:
        shown = ", ".join(exp.git.untracked[:5]) + (" ..." if len(exp.git.untracked) > 5 else "")
        notes.append(
            f"{len(exp.git.untracked)} untracked file(s) at capture time are not part of the "
            f"recorded code and are absent from the rerun: {shown}"
        )
    return RunPlan(
        experiment_id=exp.id,
        commit=validate.vcs_commit(exp.git.commit, "git.commit"),
        patch=exp.git.patch,
        pull_data=exp.dvc is not None or exp.command_kind == "dvc",
        command_kind=exp.command_kind,
        command=exp.command,
        cwd=cwd,
        env=env,
        metrics_files=metrics_files,
        inline_metrics=INLINE_METRICS in exp.metrics,
        outputs=outputs,
        clear_before=clear,
        replay_shim=_reprobox_unreproducible(environment),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass(frozen=True)
class RunRecord:
    """The result of ``reprobox run``: verdict, every difference, and how the rerun was made."""

    experiment_id: str
    experiment_name: str
    started: str
    backend: str
    backend_reason: str
    environment: str
    command: Optional[str]
    command_kind: str
    exit_code: Optional[int]
    tolerance: Tolerance
    metrics: tuple[MetricCheck, ...] = ()
    outputs: tuple[OutputCheck, ...] = ()
    dvc_outputs: tuple[OutputCheck, ...] = ()
    differences: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    gpu_note: Optional[str] = None
    network: str = "default"
    phases: tuple[Phase, ...] = ()
    checkout: Optional[str] = None  # kept checkout (--keep)
    report_path: Optional[str] = None
    #: System packages the image could not have at their recorded version (one sentence each).
    substitutions: tuple[str, ...] = ()
    #: ``--strict``: a substitution makes the verdict fail.
    strict: bool = False

    @property
    def reproduced(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        """The exit status 0: reproduced, and with --strict without substitutions."""
        return self.reproduced and not (self.strict and self.substitutions)

    @property
    def verdict(self) -> str:
        if not self.reproduced:
            return DIFFERS_VERDICT
        return REPRODUCED_WITH_SUBSTITUTIONS if self.substitutions else REPRODUCED

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": f"{RUN_SCHEMA}/{RUN_SCHEMA_VERSION}",
            "experiment": self.experiment_id,
            "name": self.experiment_name,
            "started": self.started,
            "verdict": self.verdict,
            "reproduced": self.reproduced,
            "differences": list(self.differences),
            "substitutions": list(self.substitutions),
            "strict": self.strict,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "environment": self.environment,
            "command": self.command,
            "command_kind": self.command_kind,
            "exit_code": self.exit_code,
            "tolerance": {"rtol": self.tolerance.rtol, "atol": self.tolerance.atol},
            "metrics": [m.to_dict() for m in self.metrics],
            "outputs": [o.to_dict() for o in self.outputs],
            "dvc_outputs": [o.to_dict() for o in self.dvc_outputs],
            "notes": list(self.notes),
            "gpu_note": self.gpu_note,
            "network": self.network,
            "phases": [p.to_dict() for p in self.phases],
            "seconds": round(self.seconds, 3),
            "checkout": self.checkout,
            "report_path": self.report_path,
        }


# --------------------------------------------------------------------------- applying it


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


class _Clock:
    """Times the phases and tells the user where the run is."""

    def __init__(self, progress: Optional[Progress]) -> None:
        self.say = progress or (lambda _m: None)
        self.phases: list[Phase] = []
        self._t0 = 0.0
        self._name = ""

    def start(self, name: str, what: str) -> None:
        self._name, self._t0 = name, time.monotonic()
        # "reprobox: phase 2/5", apart from the image build's own "[build 3/9]" steps
        self.say(f"reprobox: phase {PHASES.index(name) + 1}/{len(PHASES)} {name}: {what}")

    def done(self, detail: str = "") -> None:
        seconds = time.monotonic() - self._t0
        self.phases.append(Phase(self._name, seconds, detail))
        self.say(f"      {self._name} done in {seconds:.1f} s" + (f": {detail}" if detail else ""))


def checkout_code(store: Store, stored: StoredExperiment, dest: Path) -> tuple[Path, str]:
    """The recorded commit at ``dest`` (a worktree of the user's repository) plus the patch.

    Returns the checkout's resolved path and a one-line description for the progress report.
    """
    exp = stored.experiment
    path = git.make_worktree(store.root, exp.git.commit, dest)
    detail = f"commit {exp.git.commit[:12]}"
    if exp.git.patch:
        git.apply_patch(path, stored.file(exp.git.patch))
        detail += " + uncommitted patch"
    # The checkout is untrusted: no link out of it, and reprobox's run folder is its own.
    refuse_outward_symlinks(path, "as checked out")
    make_run_dir(path)
    return path, detail


def pull_data(
    store: Store,
    checkout: Path,
    dvc_remote: Optional[str] = None,
    pipeline: bool = False,
    progress: Optional[Progress] = None,
) -> str:
    """DVC outputs from a *trusted* remote into the checkout, through the shared run cache.

    The checkout is untrusted: its DVC files are checked first (no link under ``.dvc/``, no
    path outside the checkout), and its ``.dvc/config`` remote is used with the user's
    credentials only when it equals one of the user's own remotes (DVC's global/system
    configuration, the user's untracked ``.dvc/config.local``) or ``dvc_remote`` is given
    (``--dvc-remote``); see :mod:`reprobox.workspace.dvc`. The checkout's DVC configuration is
    then reprobox's own: that remote and the shared cache. After the pull the local file is cut
    down to the cache setting: the checkout is mounted into the container, and credentials must
    not be readable there.
    """
    if not os.path.islink(checkout / ".dvc") and not dvc.is_dvc_project(checkout):
        return "no DVC project in the checkout: nothing to pull"
    templated = dvc.check_untrusted_project(checkout)
    # A pipeline consumes the data of its .dvc files; what its stages write, `dvc repro --force`
    # recomputes, so it is not pulled (an output never pushed cannot block the rerun).
    targets = dvc.data_files(checkout) if pipeline else None
    if dvc_remote and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", dvc_remote):
        dvc_remote = os.path.abspath(os.path.expanduser(dvc_remote))
    remote = dvc.choose_trusted_remote(checkout, store.root, dvc_remote)
    cache = store.local_dir("cache", "dvc").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    dvc.write_trusted_config(checkout, remote, cache, dvc.user_local_config(store.root))
    try:
        if templated:
            with tempfile.TemporaryDirectory(prefix="reprobox-dvc-") as home:
                dvc.check_resolved_paths(checkout, dvc_repro_env(Path(home)))
        if targets is not None and not targets:
            # The trusted configuration is written all the same: `dvc repro` reads it next.
            return "the pipeline consumes no DVC-tracked data (no .dvc file): nothing to pull"
        if progress is not None:
            files, size = dvc.expected_size(checkout, targets)
            progress(
                f"      pulling {files} DVC-tracked output(s)"
                + (f", {size / 1048576:.1f} MiB" if size else "")
                + f" (the shared cache {cache} holds what earlier runs pulled)"
            )
        result = dvc.pull(checkout, cache_dir=cache, targets=targets)
    finally:
        dvc.drop_local(checkout, cache)
    fetched = getattr(result, "fetched", None)
    how = f"{fetched} file(s) downloaded" if fetched else "nothing to download"
    where = "--dvc-remote" if remote.source == "--dvc-remote" else f"{remote.name!r}"
    what = (
        f"the pipeline's {len(targets)} input(s) ({', '.join(targets[:3])}"
        f"{' ...' if len(targets) > 3 else ''})"
        if targets is not None
        else ""
    )
    return (
        f"pulled {what + ' ' if what else ''}from the DVC remote {where}: {how} "
        f"(shared cache {cache})"
    )


def _clear(checkout: Path, paths: tuple[str, ...]) -> None:
    for rel in paths:
        target = validate.path_inside(checkout, rel, "output")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _install_shim(checkout: Path) -> Path:
    src = payload.script("replay_shim")
    shim = make_run_dir(checkout) / "shim"
    os.mkdir(shim)
    os.mkdir(shim / "reprobox")
    write_new_file(shim / "reprobox" / "__init__.py", src.read_bytes())
    return shim


def _read_observed_metrics(
    checkout: Path, plan: RunPlan, inline_path: Path
) -> tuple[dict[str, Optional[dict[str, Any]]], dict[str, str]]:
    """Flattened values of each recorded metrics file as the rerun left them."""
    observed: dict[str, Optional[dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    for mfile in plan.metrics_files:
        path = validate.path_inside(checkout, mfile, f"metrics file {mfile!r}")
        if not path.is_file():
            observed[mfile] = None
            continue
        try:
            observed[mfile] = dict(read_metrics(path))
        except ReproboxError as exc:
            observed[mfile] = None
            reasons[mfile] = f"{mfile} could not be read after the rerun: {exc.message}"
    if plan.inline_metrics:
        if not inline_path.exists() and not inline_path.is_symlink():
            observed[INLINE_METRICS] = None
            reasons[INLINE_METRICS] = (
                "the rerun never called reprobox.capture(metrics=...) (did the command fail "
                "before reaching it?)"
            )
        else:
            try:  # written by the rerun: size and nesting bounded like any metrics file
                observed[INLINE_METRICS] = dict(
                    read_metrics(
                        validate.path_inside(
                            checkout, inline_path.relative_to(checkout).as_posix(), "inline metrics"
                        )
                    )
                )
            except ReproboxError as exc:
                observed[INLINE_METRICS] = None
                reasons[INLINE_METRICS] = (
                    f"the values reported by the rerun are unreadable: {exc.message}"
                )
    return observed, reasons


def _observed_outputs(checkout: Path, plan: RunPlan) -> dict[str, Optional[OutputFile]]:
    out: dict[str, Optional[OutputFile]] = {}
    for o in plan.outputs:
        path = validate.path_inside(checkout, o.path, "output")
        out[o.path] = hash_output(checkout, o.path) if path.exists() else None
    return out


def compare_dvc_outputs(
    experiment: Experiment, checkout: Path, skip: tuple[str, ...]
) -> tuple[OutputCheck, ...]:
    """Recorded DVC output hashes against the ``dvc.lock`` the forced rerun wrote.

    Metrics files are skipped (their values are compared, with the tolerance).
    """
    if experiment.dvc is None or not experiment.dvc.outputs:
        return ()
    info = dvc.dvc_info(checkout, use_git=False)  # the command could have rewritten .git
    now = {o.path: o for o in (info.outputs if info is not None else ())}
    checks = []
    for want in sorted(experiment.dvc.outputs, key=lambda o: o.path):
        if want.path in skip:
            continue
        got = now.get(want.path)
        if got is None:
            checks.append(
                OutputCheck(want.path, want.hash, None, MISSING, algorithm=want.hash_name)
            )
            continue
        status = "same" if got.hash == want.hash else "differs"
        checks.append(OutputCheck(want.path, want.hash, got.hash, status, algorithm=want.hash_name))
    return tuple(checks)


# --------------------------------------------------------------------------- output details
#
# When an output's bytes differ, the recorded version is looked for on this machine by its hash
# (content-addressed, so whatever is found is exactly what was recorded): the user's own working
# tree (a declared output still as captured), the shared run cache, the user's DVC cache and a
# DVC remote that is a local folder. Found, a folder's difference is named file by file and a
# CSV/JSON output is compared by its values (with --rtol/--atol). Not found, the difference stays
# as it is: the hashes differ.

#: Files of one output folder that are listed; past it, a folder is compared by its hash only.
MAX_FOLDER_FILES = 100_000


def _read_capped(path: Path) -> Optional[bytes]:
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as fh:
            raw = fh.read(MAX_DATA_BYTES + 1)
    except OSError:
        return None
    return raw if len(raw) <= MAX_DATA_BYTES else None


def _file_digest(path: Path, algorithm: str) -> Optional[str]:
    try:
        if path.is_symlink() or not path.is_file():
            return None
        h = hashlib.new(algorithm)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _folder_digests(folder: Path, algorithm: str) -> Optional[dict[str, str]]:
    """``relpath -> hash`` of every regular file under ``folder`` (no link followed)."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for name in filenames:
            if len(out) >= MAX_FOLDER_FILES:
                return None
            path = Path(dirpath) / name
            digest = _file_digest(path, algorithm)
            if digest is not None:
                out[path.relative_to(folder).as_posix()] = digest
    return out


def _tabular(name: str) -> bool:
    return name.lower().endswith(TABULAR_SUFFIXES)


def _data_verdict(
    name: str, recorded: Optional[bytes], observed: Optional[bytes], tolerance: Tolerance
) -> tuple[str, str]:
    """(status, detail) of a differing CSV/JSON file once both versions are at hand."""
    if recorded is None or observed is None or not _tabular(name):
        return DIFFERS, ""
    status, detail = compare_data(name, recorded, observed, tolerance)
    if status == SAME:  # equal values, other bytes: still a difference when exact
        return DIFFERS, "same values, different formatting"
    return status, detail


class _Recorded:
    """Finds recorded versions of outputs on this machine by their hash."""

    def __init__(self, store: Store, checkout: Path) -> None:
        self.user_root = Path(store.root)
        folders = [
            store.local_dir("cache", "dvc"),
            self.user_root / ".dvc" / "cache",
            Path(checkout) / ".dvc" / "cache",
        ]
        try:
            remote = dvc._local_remote_folder(self.user_root)
        except (OSError, ReproboxError):
            remote = None
        if remote is not None:
            folders.append(remote[1])
        self.dvc_folders = [f for f in folders if f.is_dir()]

    def dvc_object(self, md5: str) -> Optional[Path]:
        for folder in self.dvc_folders:
            found = dvc.object_path(folder, md5)
            if found is not None:
                return found
        return None

    def dvc_manifest(self, md5: str) -> Optional[dict[str, str]]:
        found = self.dvc_object(md5)
        return dvc.read_dir_manifest(found) if found is not None else None

    def user_copy(self, rel: str) -> Path:
        return self.user_root / rel


def _refine_declared(
    check: OutputCheck, checkout: Path, found: _Recorded, tolerance: Tolerance
) -> OutputCheck:
    if check.status != DIFFERS:
        return check
    mine = found.user_copy(check.path)
    observed = Path(checkout) / check.path
    try:
        still = hash_output(found.user_root, check.path).sha256 == check.recorded_hash
    except (ReproboxError, OSError, ValueError):
        still = False
    if not still:
        return check
    if mine.is_dir():
        before = _folder_digests(mine, "sha256")
        after = _folder_digests(observed, "sha256")
        if before is None or after is None:
            return check
        files = list(compare_manifests(before, after))
        for i, f in enumerate(files):
            if f.status == DIFFERS and _tabular(f.path):
                st, detail = _data_verdict(
                    f.path, _read_capped(mine / f.path), _read_capped(observed / f.path), tolerance
                )
                files[i] = FileDiff(f.path, st, detail)
        return replace(check, files=tuple(files))
    status, detail = _data_verdict(
        check.path, _read_capped(mine), _read_capped(observed), tolerance
    )
    return replace(check, status=status, detail=detail)


def _refine_dvc(
    check: OutputCheck, checkout: Path, found: _Recorded, tolerance: Tolerance
) -> OutputCheck:
    if check.status != DIFFERS or check.algorithm != "md5":
        return check
    observed = Path(checkout) / check.path
    if check.recorded_hash.endswith(".dir"):
        before = found.dvc_manifest(check.recorded_hash)
        after = found.dvc_manifest(check.observed_hash) if check.observed_hash else None
        if after is None:
            after = _folder_digests(observed, "md5")
        if before is None or after is None:
            return replace(
                check,
                detail="the recorded file list is not on this machine "
                "(not in the DVC cache or a local remote): files not named",
            )
        files = list(compare_manifests(before, after))
        for i, f in enumerate(files):
            if f.status == DIFFERS and _tabular(f.path):
                obj = found.dvc_object(before[f.path])
                st, detail = _data_verdict(
                    f.path,
                    _read_capped(obj) if obj else None,
                    _read_capped(observed / f.path),
                    tolerance,
                )
                files[i] = FileDiff(f.path, st, detail)
        return replace(check, files=tuple(files))
    obj = found.dvc_object(check.recorded_hash)
    status, detail = _data_verdict(
        check.path, _read_capped(obj) if obj else None, _read_capped(observed), tolerance
    )
    return replace(check, status=status, detail=detail)


def refine_output_checks(
    store: Store,
    checkout: Path,
    declared: tuple[OutputCheck, ...],
    dvc_checks: tuple[OutputCheck, ...],
    tolerance: Tolerance,
    ignore: tuple[str, ...],
) -> tuple[tuple[OutputCheck, ...], tuple[OutputCheck, ...]]:
    """Name the files of a differing folder, compare CSV/JSON outputs by value, apply ignores."""
    found = _Recorded(store, checkout)
    declared = tuple(_refine_declared(c, checkout, found, tolerance) for c in declared)
    dvc_checks = tuple(_refine_dvc(c, checkout, found, tolerance) for c in dvc_checks)
    declared, dvc_checks = apply_ignores(declared, ignore), apply_ignores(dvc_checks, ignore)
    return tuple(settle(c) for c in declared), tuple(settle(c) for c in dvc_checks)


def report_file(store: Store, exp_id: str, when: _dt.datetime) -> Path:
    """``.reprobox/local/runs/<id>-<UTC time>.json`` (a counter keeps two runs in a second apart);
    local state, git-ignored, reached through no symbolic link."""
    return store.run_report_path(exp_id, when)


def run_experiment(
    store: Store,
    ref_or_stored: Union[str, StoredExperiment],
    *,
    backend: str = "auto",
    rtol: float = 0.0,
    atol: float = 0.0,
    keep: bool = False,
    network: Optional[str] = None,
    progress: Optional[Progress] = None,
    limits: Any = None,
    dvc_remote: Optional[str] = None,
    ignore_outputs: tuple[str, ...] = (),
    strict: bool = False,
) -> RunRecord:
    """Reproduce an experiment and return the record (``.reproduced``); see the module doc."""
    tolerance = Tolerance(rtol=rtol, atol=atol)
    ignore = tuple(
        validate.relpath("--ignore-output", p, allow_dot=False).strip("/") for p in ignore_outputs
    )
    if network is not None:
        _check_network(network)
    stored = (
        ref_or_stored if isinstance(ref_or_stored, StoredExperiment) else store.get(ref_or_stored)
    )
    exp = stored.experiment  # validated once, by the store
    store.local_dir("runs")  # a linked .reprobox/local is refused before anything runs
    plan = plan_run(exp, stored.environment)
    clock = _Clock(progress)
    started = _utc_now()
    # a conda environment steers `auto` to the conda backend
    extra = {"environment": stored.environment} if stored.environment.conda is not None else {}
    chosen, reason = backends.choose_backend(backend, limits=limits, **extra)
    clock.say(f"reproducing {exp.id} ({exp.name}) with the {chosen.name} backend ({reason})")

    scratch = Path(tempfile.mkdtemp(prefix=f"reprobox-run-{exp.id}-"))
    checkout = scratch / "checkout"
    worktree_made = False
    prepared = None
    try:
        # 1. code
        clock.start("code", f"checking out {exp.git.commit[:12]} apart from your working tree")
        worktree_made = True
        checkout, detail = checkout_code(store, stored, checkout)
        if chosen.name == "docker":
            # The worktree's .git names a host path: the container gets a repository of the
            # recorded commit alone, read-only (backends/docker.py mounts it).

            git.make_run_repository(
                store.root, exp.git.commit, run_git_folder(checkout), CONTAINER_GIT_DIR
            )
            detail += "; git at the recorded commit inside the container"
        clock.done(detail)

        # 2. data
        clock.start("data", "pulling DVC data from the remote" if plan.pull_data else "no DVC data")
        detail = (
            pull_data(
                store, checkout, dvc_remote, pipeline=plan.command_kind == "dvc", progress=clock.say
            )
            if plan.pull_data
            else "none recorded"
        )
        clock.done(detail)

        # 3. environment
        clock.start("environment", f"preparing the {chosen.name} environment")
        prepared = chosen.prepare(store, stored, checkout, network=network, progress=clock.say)
        gpu = chosen.gpu_plan(stored.environment)
        substitutions = (
            environment_substitutions(chosen, prepared)
            if stored.environment.system_packages
            else ()
        )
        clock.done(
            prepared.description
            + (f"; {len(substitutions)} system package(s) substituted" if substitutions else "")
        )

        # 4. command
        run_dir = make_run_dir(checkout)
        _exclude_from_git(checkout)
        inline_path = run_dir / "metrics.json"
        env = dict(plan.env)
        env[RUN_METRICS_ENV] = chosen.path_in_env(checkout, inline_path)
        env[RUN_EXPERIMENT_ENV] = exp.id
        notes = list(plan.notes) + list(prepared.notes) + unverified_notes(prepared)
        if network is not None and chosen.name in ("venv", "conda"):
            notes.append(
                f"--network {network} has no effect with the venv backend: the command "
                "ran with this machine's network (use --backend docker to restrict it)"
            )
        if plan.replay_shim:
            shim = _install_shim(checkout)
            env["PYTHONPATH"] = chosen.path_in_env(checkout, shim)
            notes.append(
                "the capture's reprobox came from a folder outside the repository, so the "
                "rebuilt environment does not have it; a stand-in `reprobox` module that only "
                "reports the metrics given to reprobox.capture was put on PYTHONPATH"
            )
        _clear(checkout, plan.clear_before)
        if plan.command_kind == "dvc":
            clock.start("command", "rerunning the DVC pipeline (dvc repro --force)")
            exit_code = _run_dvc(
                chosen, prepared, checkout, plan, env, scratch, network, gpu.use_gpus
            )
        else:
            clock.start("command", f"$ {plan.command}")
            done = chosen.execute(
                prepared,
                ["/bin/sh", "-c", plan.command or ""],
                checkout=checkout,
                cwd=plan.cwd,
                env=env,
                network=network,
                gpus=gpu.use_gpus,
            )
            exit_code = done.returncode
        # Nothing of the checkout is read on the host while a link leads out of it.
        refuse_outward_symlinks(checkout, "after the command ran")
        clock.done(f"exit status {exit_code}")

        # 5. comparison
        clock.start("comparison", "metrics and outputs against the recorded values")
        observed, reasons = _read_observed_metrics(checkout, plan, inline_path)
        metric_checks = compare_metrics(exp.metrics, observed, tolerance, unavailable=reasons)
        output_checks = compare_outputs(plan.outputs, _observed_outputs(checkout, plan))
        dvc_checks: tuple[OutputCheck, ...] = ()
        if plan.command_kind == "dvc" and exit_code == 0:
            dvc_checks = compare_dvc_outputs(exp, checkout, plan.metrics_files)
        output_checks, dvc_checks = refine_output_checks(
            store, checkout, output_checks, dvc_checks, tolerance, ignore
        )
        diffs = list(differences(metric_checks, (*output_checks, *dvc_checks)))
        status_diff = compare_exit_status(exp.run.exit_status if exp.run else None, exit_code)
        if status_diff:
            diffs.insert(0, status_diff)
        if not exp.metrics and not exp.outputs and not dvc_checks:
            notes.append(
                "the capture recorded no metrics and no outputs: only the command's "
                "exit status was checked"
            )
        clock.done(f"{len(diffs)} difference(s)")

        record = RunRecord(
            experiment_id=exp.id,
            experiment_name=exp.name,
            started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            backend=chosen.name,
            backend_reason=reason,
            environment=prepared.description,
            command=plan.command,
            command_kind=plan.command_kind,
            exit_code=exit_code,
            tolerance=tolerance,
            metrics=metric_checks,
            outputs=output_checks,
            dvc_outputs=dvc_checks,
            differences=tuple(diffs),
            notes=tuple(notes),
            gpu_note=gpu.note,
            network=(network or "default (the engine's bridge)")
            if chosen.name not in ("venv", "conda")
            else f"host ({chosen.name} backend)",
            phases=tuple(clock.phases),
            checkout=str(checkout) if keep else None,
            substitutions=substitutions,
            strict=strict,
        )
        path = report_file(store, exp.id, started)
        record = replace(record, report_path=str(path))
        store.write_run_report(path, pretty_json(record.to_dict()))
        return record
    finally:
        if prepared is not None:
            chosen.release(prepared)
        if keep and worktree_made:
            clock.say(f"checkout kept at {checkout}")
        else:
            _cleanup(store, checkout if worktree_made else None, scratch)


def environment_substitutions(chosen: Any, prepared: Any) -> tuple[str, ...]:
    """The system packages the image could not have exactly, as the build wrote them into it."""
    if getattr(prepared, "backend", None) != "docker" or getattr(prepared, "conda_prefix", None):
        return ()

    return tuple(s.describe() for s in image_substitutions(chosen.engine, prepared.handle))


def _exclude_from_git(checkout: Path) -> None:
    """Keep reprobox's run folder out of ``git status`` inside the checkout."""
    write_new_file(make_run_dir(checkout) / ".gitignore", b"*\n")


def _run_dvc(
    chosen: Any,
    prepared: Any,
    checkout: Path,
    plan: RunPlan,
    env: dict[str, str],
    scratch: Path,
    network: Optional[str],
    gpus: bool,
) -> int:
    """``dvc repro --force`` by the host's DVC, each stage command inside the environment."""
    host_env = chosen.dvc_host_env(
        prepared, checkout=checkout, env=env, scratch=scratch, network=network, gpus=gpus
    )
    host_env["DVC_NO_ANALYTICS"] = "1"
    workdir = checkout / plan.cwd
    argv = dvc.repro_forced(workdir, host_env)
    done = proc.run(
        ["/bin/sh", "-c", 'exec "$@" 1>&2', "sh", *argv],
        cwd=workdir,
        env=host_env,
        check=False,
        timeout=None,
        capture=False,
    )
    return done.returncode


def _cleanup(store: Store, checkout: Optional[Path], scratch: Path) -> None:
    """Remove the worktree (and git's record of it) and the scratch folder, whatever happened."""
    if checkout is not None:
        try:
            git.remove_worktree(store.root, checkout)
        except (ReproboxError, OSError):
            pass
    shutil.rmtree(scratch, ignore_errors=True)


def _check_network(network: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", network) or network.startswith(
        "container:"
    ):
        raise UsageError(
            f"--network {network!r} is not a network name",
            "use `--network none` for a run without network, or a network listed by "
            "`docker network ls`",
        )
