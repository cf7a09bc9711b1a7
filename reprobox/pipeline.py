"""The stages composed: capture -> lock (-> build -> run -> verify, where asked for).

Each stage is a package that knows nothing of the later ones: :mod:`reprobox.capture`
fingerprints the environment (interpreter, packages, OS packages, hardware), and
:mod:`reprobox.workspace` reads the user's code, data and results (git and the uncommitted patch,
DVC, metrics files and outputs). :func:`capture_experiment` runs them, turns what they found into
the record (one redaction pass over every field), locks it best-effort (:mod:`reprobox.lock`),
renders the committed Dockerfile (:mod:`reprobox.build.render`) and stores it atomically.
:func:`lock_experiment` locks a stored experiment again and re-seals it.

    target python -> probe (in that interpreter) -> packages + native libs -> OS packages
    -> hardware -> git (+ patch) -> DVC -> metrics + outputs -> replayable env vars
    -> Environment + Experiment (ids, digests) -> lock (best effort) -> Dockerfile -> store (atomic)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

from . import __version__, layout
from .model import grammar as validate
from .model.check import validate_experiment
from .captured import Captured
from .errors import IndexUnavailable, LockError, ReproboxError, UsageError, ValidationError
from .model import (
    INLINE_METRICS,
    DvcInfo,
    Environment,
    Experiment,
    GitInfo,
    Package,
    RunUsage,
    flatten_metrics,
    sha256_hex,
)
from .progress import Progress
from .redact import Redactor
from .store import Store, StoredExperiment

if TYPE_CHECKING:
    from .lock.result import LockResult


def _now() -> str:
    """UTC, to the millisecond: ``latest`` and names pick the newest of captures made within
    one second (at whole seconds the tie went to the id, at random)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def default_name(command: Optional[str], command_kind: str) -> str:
    """A readable default: the script's stem (``python train.py`` -> ``train``), reduced to the
    characters a name may hold."""
    raw = _name_from_command(command, command_kind)
    cleaned = re.sub(r"[^A-Za-z0-9._+=@,-]+", "-", raw).strip("-._")[:100]
    return cleaned if cleaned and cleaned[0].isalnum() and cleaned != "latest" else "experiment"


def _name_from_command(command: Optional[str], command_kind: str) -> str:
    if command_kind == "dvc":
        return "dvc-pipeline"
    if not command:
        return "experiment"
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for i, word in enumerate(words):
        if word.endswith(".py"):
            return Path(word).stem or "experiment"
        if word == "-m" and i + 1 < len(words):
            return words[i + 1].split(".")[-1]
    launchers = ("python", "python3", "bash", "sh", "uv", "poetry", "pipenv", "env")
    for word in words:
        if "=" not in word and Path(word).name not in launchers and not word.startswith("-"):
            return Path(word).name
    return "experiment"


def _relative_cwd(root: Path, cwd: Path) -> str:
    try:
        rel = cwd.resolve().relative_to(root.resolve())
    except ValueError:
        raise UsageError(
            f"the working directory {cwd} is outside the repository {root}",
            "run reprobox from inside your project's repository",
        ) from None
    return rel.as_posix() or "."


def _shell_syntax_check(command: Optional[str]) -> Optional["subprocess.Popen[str]"]:
    """Start ``/bin/sh -n -c COMMAND`` (it reads the command, runs nothing) beside the capture's
    other work; :func:`_refuse_bad_shell_syntax` reads its verdict."""
    if command is None or not command.strip() or not os.path.exists("/bin/sh"):
        return None
    try:
        return subprocess.Popen(
            ["/bin/sh", "-n", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except (OSError, ValueError):
        return None  # no verdict here: the rerun reports what its shell says


def _refuse_bad_shell_syntax(check: Optional["subprocess.Popen[str]"]) -> None:
    """Refuse a command the rerun's ``/bin/sh -c`` could not parse (an unbalanced quote):
    recorded, it would only fail at the rerun."""
    if check is None:
        return
    try:
        _out, err = check.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        check.kill()
        check.communicate()
        return
    if check.returncode != 0:
        why = " ".join((err or "").split())[:300] or "a syntax error"
        raise UsageError(
            f"--cmd is not a command /bin/sh can read: {why}",
            "fix its quotes or brackets; the rerun runs it with /bin/sh -c",
        )


def _check_given_name(name: str) -> None:
    """A ``--name``: the record's grammar, and not one that commands would read as an id."""
    try:
        validate.experiment_name(name, "--name")
    except ValidationError as exc:
        raise UsageError(
            exc.message.replace("refusing ", "bad ", 1),
            "choose a name of letters, digits, spaces and . _ - + = @ , :",
        ) from None
    if re.fullmatch(r"[0-9a-f]+", name) and len(name) >= layout.MIN_PREFIX:
        # every command reads such a reference as an id prefix before it looks for names
        raise UsageError(
            f"--name {name!r} reads as the start of an experiment id",
            "choose a name with a letter past f, a capital, or punctuation (e.g. run-3b0a)",
        )


def _check_before_running(
    root: Path,
    cwd: Path,
    name: Optional[str],
    command: str,
    metrics_files: Sequence[str],
    outputs: Sequence[str],
) -> None:
    """What ``record`` would refuse once the command has run, refused before it runs: the
    name, the command's text, and where metrics and outputs go (whether they exist is the
    run's business)."""
    if name is not None:
        _check_given_name(name)
    validate.command(command, "command")
    for mfile in metrics_files:
        _repo_rel(root, cwd, mfile, "metrics file")
    for out in outputs:
        _repo_rel(root, cwd, out, "output")


def _repo_rel(root: Path, cwd: Path, user_path: str, what: str) -> str:
    """A user-given path (relative to the working directory) as a repo-relative POSIX path."""
    p = Path(user_path)
    full = (cwd / p) if not p.is_absolute() else p
    try:
        rel = full.resolve().relative_to(root.resolve())
    except ValueError:
        raise UsageError(
            f"{what} {user_path} is outside the repository {root}",
            f"give a {what} inside the repository so that a rerun can find it",
        ) from None
    text = rel.as_posix()
    top = text.split("/", 1)[0]
    if text == "." or top in (".git", layout.STORE_DIR):
        where = "the repository itself" if text == "." else f"inside {top}/"
        raise UsageError(
            f"{what} {user_path!r} is {where}, which no run writes",
            f"give the {what} the command writes, e.g. a file or folder below the repository",
        )
    return text


def capture_experiment(
    root: Path,
    *,
    name: Optional[str] = None,
    command: Optional[str] = None,
    metrics_files: Sequence[str] = (),
    outputs: Sequence[str] = (),
    inline_metrics: Optional[Mapping[str, Any]] = None,
    python: Optional[str] = None,
    lock: bool = True,
    cwd: Optional[Path] = None,
    environ: Optional[Mapping[str, str]] = None,
    progress: Optional[Progress] = None,
    allow_secret_in_patch: bool = False,
    system_packages: Sequence[str] = (),
    exit_status: Optional[int] = None,
    record_argv: Optional[Sequence[str]] = None,
    command_stdout_to_stderr: bool = False,
) -> Captured:
    """Record the experiment run in ``root`` (a git work tree) and store it under ``.reprobox/``.

    Everything written passes one redaction pass (:mod:`reprobox.redact`): a secret in the
    command, metrics, replayable variables, URLs or lock files is replaced by a marker with a
    warning naming the field; one in the uncommitted change (patch.diff) refuses the capture,
    unless ``allow_secret_in_patch``.

    With ``record_argv`` the command is run first, in the target environment, and what it
    really used is recorded (:mod:`reprobox.capture.record`); ``exit_status`` states the
    status of a run made before (``capture --exit-status``). ``system_packages`` adds OS
    packages by name (with ``[tool.reprobox] system-packages`` of pyproject.toml).
    """
    # The capture and workspace readers (~20 ms of imports) serve a capture only, and
    # `reprobox lock` imports this module too.
    from .capture import envvars, system  # lazy: as above
    from .capture import python as py  # lazy: as above
    from .capture import record as rec  # lazy: as above
    from .capture.environment import environment_from_probe  # lazy: as above
    from .workspace import dvc as dvc_mod  # lazy: as above
    from .workspace import git, metrics  # lazy: as above
    from .workspace.patch import PATCH_FILE, refuse_secrets_in_patch  # lazy: as above

    say = progress or (lambda _msg: None)
    environ = dict(os.environ if environ is None else environ)
    cwd = Path(cwd or Path.cwd())
    root = Path(root).resolve()
    store = Store(root)
    warnings: list[str] = []
    timings: dict[str, float] = {}
    red = Redactor(environ)
    shell_check = _shell_syntax_check(command)  # read after the probe, which takes longer

    def stage(label: str, t0: float) -> None:
        timings[label] = round(time.perf_counter() - t0, 3)

    # The probe runs in the target interpreter while git is read here.
    t0 = time.perf_counter()
    declared = rec.declared_system_packages(root, system_packages)
    rec.check_exit_status(exit_status)
    explicit_python = bool(python)
    target, repo_venv = py.resolve_target(root, cwd, python, environ)
    if repo_venv is not None:
        python = os.fspath(repo_venv)
        say(
            f"using the repository's virtualenv {rec.shown_path(repo_venv.parent.parent, root)} "
            f"(not activated): recording {repo_venv}"
        )
    execution = None
    command_from_argv = False
    recorded_git: Optional[git.GitCapture] = None
    if record_argv is not None:
        # Before the command runs (it may run for hours): what would refuse the record after
        # it is refused now, and the code is read as it runs (the command may change it).
        _check_before_running(
            root, cwd, name, command or shlex.join(record_argv), metrics_files, outputs
        )
        recorded_git = git.git_info(root, exclude=(".reprobox",))
        if recorded_git.patch:
            refuse_secrets_in_patch(
                recorded_git.patch, environ, allow=allow_secret_in_patch, warnings=warnings
            )
        say(f"running {shlex.join(record_argv)}")
        execution = rec.execute(
            record_argv,
            cwd=cwd,
            environ=environ,
            target=target if (python or repo_venv) else None,
            stdout_to_stderr=command_stdout_to_stderr,
        )
        say(
            f"the command exited with status {execution.exit_status} after "
            f"{execution.wall_seconds:.1f}s"
        )
        command_from_argv = command is None
        if command is None:
            command = shlex.join(record_argv)
        stage("command", t0)
        t0 = time.perf_counter()
    say(f"probing {target}")
    cache_dir = store.local_dir("cache")  # git-ignored local state, reached through no link
    probe_future = py.start_probe(target, cache_dir=cache_dir / "probe", environ=environ)
    try:
        gitcap = recorded_git or git.git_info(root, exclude=(".reprobox",))
    except BaseException:
        probe_future.cancel()
        raise
    warnings.extend(gitcap.warnings)
    stage("git", t0)
    if gitcap.patch and recorded_git is None:
        try:
            refuse_secrets_in_patch(
                gitcap.patch, environ, allow=allow_secret_in_patch, warnings=warnings
            )
        except BaseException:
            probe_future.cancel()
            raise

    t0 = time.perf_counter()
    # while the probe still runs, read what mapping its libraries to OS packages will need
    dpkg_lists = system.read_ahead(cache_dir / "system") if not probe_future.done() else None
    raw_probe = probe_future.result()
    if execution is not None:
        # the record describes the environment the command ran, whatever reprobox chose first
        checked = rec.check_interpreter(
            execution, raw_probe.get("interpreter") or {}, target, explicit_python, root
        )
        if checked.switch_to is not None:
            say(f"the command ran {checked.switch_to}, not {target}: probing it instead")
            try:
                raw_probe = py.run_probe(checked.switch_to, cache_dir / "probe", environ)
                target = checked.switch_to
            except ReproboxError as exc:  # the command has run: its record is not lost to it
                warnings.append(
                    f"the command ran {checked.switch_to}, which could not be probed "
                    f"({exc.message}): the record describes {target} instead"
                )
        warnings.extend(checked.warnings)
        probed = raw_probe
        portable = (
            rec.portable_command(
                execution.argv,
                cwd,
                root,
                target,
                lambda rel: git.is_tracked(root, rel),
                lambda path: rec.FileOwners(probed, root).installed_by(path),
            )
            if command_from_argv
            else None
        )
        if portable is not None:
            command = shlex.join(portable.argv)
            say(
                f"recording the command as `{command}`: {portable.why}, and a rerun's PATH "
                "starts with the rebuilt one"
            )
        else:
            path_warning = rec.program_path_warning(
                execution.argv, cwd, root, lambda rel: git.is_tracked(root, rel)
            )
            if path_warning:
                warnings.append(path_warning)
    # a record needs an installable version of each package in use (`diff` and a rerun's check
    # report a broken one as a difference instead)
    py.check_versions(raw_probe)
    summary = None
    if execution is not None:
        summary = rec.summarize(execution, raw_probe, root)
        warnings.extend(summary.warnings)
    env, env_warnings = environment_from_probe(
        raw_probe,
        root,
        cache_dir=cache_dir,
        run_libraries=summary.system_libraries if summary else None,
        dlopen_failed=summary.usage.dlopen_failed if summary else (),
        declared_system_packages=declared,
        dpkg_lists=dpkg_lists,
    )
    _changes, env_texts = py.installed_changes(raw_probe.get("distributions"))
    warnings.extend(env_warnings)
    # packages installed from a repository on this machine: their commit sealed into the capture
    sealed_packages, sealed_sources, seal_warnings = py.seal_local_vcs(env.packages)
    if sealed_sources:
        env = replace(env, packages=tuple(sealed_packages))
    warnings.extend(seal_warnings)
    # a package installed from a folder of the repository whose source changed since: the run
    # used the installed copy, a rerun builds the source
    warnings.extend(py.stale_local_sources(env.packages, raw_probe.get("distributions"), root))
    stage("environment", t0)
    run_usage = (
        summary.usage
        if summary
        else (
            RunUsage(exit_status=exit_status, source="declared")
            if exit_status is not None
            else None
        )
    )

    # Command, DVC, metrics, outputs.
    t0 = time.perf_counter()
    dvc: Optional[DvcInfo] = None
    if dvc_mod.is_dvc_project(root):
        dvc = dvc_mod.dvc_info(root)
        warnings.extend(dvc_mod.inputs_missing_from_remote(root))
    command_kind = "shell"
    if command is not None and not command.strip():
        raise UsageError(
            "--cmd is empty",
            'give the command that produced the results, e.g. --cmd "python train.py"',
        )
    if command is not None:
        _refuse_bad_shell_syntax(shell_check)
        command = red.text(command, "command", command=True)
    if dvc is not None and dvc.params:
        dvc = replace(dvc, params=red.tree(dict(dvc.params), "dvc.params"))
    if command is None and dvc is not None and dvc.stages:
        command_kind = "dvc"
        command = dvc_mod.DVC_PIPELINE_COMMAND
        if not metrics_files:
            metrics_files = [
                os.path.relpath(root / m, cwd) for m in dvc.metrics_files if (root / m).exists()
            ]
    elif command is None:
        command_kind = "none"
        if not inline_metrics:
            warnings.append(
                "no command recorded (--cmd): `reprobox run` will have nothing to rerun; "
                "`reprobox verify` still checks the environment"
            )
    rel_cwd = _relative_cwd(root, cwd)
    metrics_by_file: dict[str, dict[str, Any]] = {}
    for m_index, mfile in enumerate(metrics_files):
        rel = _repo_rel(root, cwd, mfile, "metrics file")
        if (root / rel).is_dir():
            raise UsageError(
                f"metrics file {mfile} is a folder",
                "give the file the run writes its scores to, e.g. --metrics metrics.json",
            )
        if not (root / rel).is_file():
            raise UsageError(
                f"metrics file {mfile} does not exist",
                "run the experiment first, or fix the --metrics path",
            )
        kind = red.holds_secret(rel)
        if kind:
            warnings.append(
                f"--metrics #{m_index + 1}: its path holds a secret ({kind}); it was "
                "left out of the record — rename it"
            )
            continue
        metrics_by_file[rel] = red.tree(metrics.read_metrics(root / rel), f"metrics[{rel}]")
    if inline_metrics:
        metrics_by_file[INLINE_METRICS] = red.tree(flatten_metrics(dict(inline_metrics)), "metrics")
    output_files = []
    for i, out in enumerate(outputs):
        rel = _repo_rel(root, cwd, out, "output")
        kind = red.holds_secret(rel)
        if kind:
            warnings.append(
                f"--output #{i + 1}: its path holds a secret ({kind}); it was left "
                "out of the record — rename it"
            )
            continue
        output_files.append(metrics.hash_output(root, rel))
    stage("data", t0)

    patch_bytes = gitcap.patch
    git_info = _redact_git(gitcap.info, red, warnings)
    if patch_bytes:
        git_info = replace(git_info, patch=PATCH_FILE, patch_sha256=sha256_hex(patch_bytes))
    env = _redact_environment(env, red)
    # post-install changes: small text ones are carried (re-applied by a rebuild)
    replay_files: dict[str, bytes] = {}
    if env.installed_changes:
        carried, replay_files, carry_warnings = py.carry_changes(
            env.installed_changes, env_texts, red
        )
        env = replace(env, installed_changes=carried)
        warnings.extend(carry_warnings)

    experiment = Experiment(
        name=name or default_name(command, command_kind),
        command=command,
        command_kind=command_kind,
        cwd=rel_cwd,
        git=git_info,
        dvc=dvc,
        metrics=metrics_by_file,
        outputs=tuple(output_files),
        env=_redact_env_vars(envvars.replayable_env(environ), red),
        environment_digest=env.digest,
        created=_now(),
        tool_version=__version__,
        run=run_usage,
    ).with_id()

    _check_before_storing(experiment, env, name_given=name is not None)

    files: dict[str, bytes | str] = {}
    if patch_bytes:
        files[PATCH_FILE] = patch_bytes
    files.update(sealed_sources)
    files.update(replay_files)

    # Lock: best effort. Capture after a long training run must never fail for want of a network.
    locked = False
    if lock:
        t0 = time.perf_counter()
        say("locking packages with hashes from the index")
        # lazy: reprobox.lock costs ~35 ms to import, which `capture --no-lock` never needs
        from .lock import lock_environment

        try:
            with _renderer_loading(env.conda is None):
                result = lock_environment(
                    env, repo_root=root, cache_dir=user_cache() / "index", progress=say
                )
            conda_files: dict[str, str] = {}
            if env.conda is not None:
                # lazy: the conda lock (~50 ms of imports) serves conda environments only
                from .lock.condalock import lock_conda

                say("locking conda packages by URL, md5 and sha256")
                conda_files = lock_conda(env, result.packages, progress=say)
            files.update(result.files)
            files.update(conda_files)
            warnings.extend(result.warnings)
            locked = True
        except IndexUnavailable as exc:
            warnings.append(
                f"the lock was skipped: {exc.message}. The environment is recorded; complete the "
                "lock later with `reprobox lock <id>` (the id printed last)"
            )
        except LockError as exc:
            warnings.append(f"the lock is incomplete: {exc}")
        except ReproboxError as exc:  # a conda channel that does not answer, or refuses
            warnings.append(
                f"the lock was skipped: {exc.message}. The environment is recorded; complete the "
                f"lock later with `reprobox lock {experiment.id}`"
            )
        stage("lock", t0)

    # The Dockerfile installs from the lock, so it is written with it (here or by `reprobox lock`).
    # A conda environment is recreated by the conda backend, not by this pip-only Dockerfile.
    if "requirements.lock" in files and env.conda is None:
        t0 = time.perf_counter()
        try:
            files["Dockerfile"] = render_store_dockerfile(experiment, env, root)
        except ReproboxError as exc:
            warnings.append(f"no Dockerfile was written: {exc.message}")
        stage("dockerfile", t0)

    for fname in sorted(files):  # lock files, Dockerfile (patch.diff was checked above)
        content = files[fname]
        if fname != PATCH_FILE and fname not in sealed_sources and fname not in replay_files:
            text = content if isinstance(content, str) else content.decode("utf-8", "replace")
            redacted = red.file_text(text, fname)
            if redacted != text:
                files[fname] = redacted
    warnings.extend(red.warnings())

    before = set(store.ids())
    stored = store.save(experiment, env, files)
    # The same run captured before keeps its record (re-sealed when this capture adds a lock).
    existed = stored.experiment.created != experiment.created
    old = stored.experiment.supersedes
    if stored.id not in before and old in before:
        warnings.append(
            f"this run was captured before as {old}; the files it lacked (the lock) "
            f"are attached, and since the id seals every file that record is now "
            f"{stored.id} (commit the new folder)"
        )
    return Captured.of(
        stored,
        warnings=tuple(warnings),
        locked=locked or (stored.path / "requirements.lock").exists(),
        new=not existed,
        timings=timings,
        run=run_usage,
    )


def _redact_git(info: GitInfo, red: Redactor, warnings: list[str]) -> GitInfo:
    """The git remote without credentials (user info, tokens in the path or query); untracked
    paths that hold a secret are left out."""
    remote = red.url(info.remote, "git.remote") if info.remote else info.remote
    untracked = []
    for path in info.untracked:
        kind = red.holds_secret(path)
        if kind:
            warnings.append(f"git.untracked: a path holds a secret ({kind}); it was left out")
        else:
            untracked.append(path)
    return replace(info, remote=remote, untracked=tuple(untracked))


def _redact_environment(env: Environment, red: Redactor) -> Environment:
    """Package sources (direct_url.json: archive and VCS URLs) without credentials: user info,
    signed query strings (an Azure SAS ``sig``), tokens in the path."""
    packages = []
    changed = False
    for p in env.packages:
        url = p.source.url
        if url:
            new = red.url(url, f"environment.json {p.name} source url")
            if new != url:
                p = replace(p, source=replace(p.source, url=new))
                changed = True
        packages.append(p)
    return replace(env, packages=tuple(packages)) if changed else env


def _redact_env_vars(values: Mapping[str, str], red: Redactor) -> dict[str, str]:
    """Replayable variables with credentials removed from their values (a URL with user info in
    XLA_FLAGS, an expanded secret)."""
    out = {}
    for name, value in values.items():
        out[name] = red.text(value, f"env.{name}")
    return out


def _check_before_storing(experiment: Experiment, env: Environment, *, name_given: bool) -> None:
    """Apply the grammars every reader applies, so that a capture never stores a record that
    `run`, `build` or `show` would then refuse as hostile."""
    if name_given:
        _check_given_name(experiment.name)
    try:
        validate_experiment(experiment, env)
    except ValidationError as exc:
        message = f"this capture cannot be recorded: {exc.message.replace('refusing ', '', 1)}"
        package = _package_of_field(exc.field, env)
        if package is not None:  # an installed package's own metadata (its dist-info folder)
            name = shlex.quote(package.name)
            raise UsageError(
                message,
                f"the installed metadata of {package.name} {package.version} is not what an "
                "installer writes: reinstall it (`python -m pip install --force-reinstall "
                f"--no-deps {name}`) or uninstall it (`python -m pip uninstall {name}`), then "
                "capture again",
            ) from None
        raise UsageError(
            message,
            "rename the file or value it names (paths: letters, digits, . _ - / and spaces), "
            "or leave it out of the capture",
        ) from None


def _package_of_field(field: str, env: Environment) -> Optional[Package]:
    """The package a refused field such as ``packages[numpy].installer`` or ``packages[3].name``
    belongs to, if it is one."""
    m = re.match(r"packages\[([^\]]+)\]", field)
    if m is None:
        return None
    key = m.group(1)
    if key.isascii() and key.isdigit():
        index = int(key)
        return env.packages[index] if index < len(env.packages) else None
    return next((p for p in env.packages if p.name == key), None)


#: What the committed Dockerfile says where a built one names the experiment id.
STORE_DOCKERFILE_ID = "<id>"


def render_store_dockerfile(experiment: Experiment, env: Environment, root: Path) -> str:
    """The Dockerfile committed with the experiment, for the automatically chosen base image.

    The id seals this file, so the file cannot hold the id: it says ``<id>`` where the one
    ``reprobox build`` renders (with the id in its labels) names it. The same capture and lock
    thus give the same file, and locking again gives the same id.
    """
    # Only a capture with a lock, or `reprobox lock`, writes the Dockerfile.
    # lazy: reprobox.build costs ~45 ms to import, which `capture --no-lock` never needs
    from .build.images import auto_base_image
    from .build.render import render_dockerfile  # lazy: as above

    base = auto_base_image(env)
    draft = replace(experiment, files={}, supersedes=None, id="").with_id()
    text = render_dockerfile(draft, env, base_image=base)
    return text.replace(draft.id, STORE_DOCKERFILE_ID)


@contextlib.contextmanager
def _renderer_loading(wanted: bool) -> Iterator[None]:
    """While the lock waits on the index, a thread loads the Dockerfile renderer the lock writes
    next (reprobox.build and jinja2, ~50 ms of imports): the two overlap instead of adding up.
    Python's import lock makes a module the main thread asks for meanwhile wait for it."""
    loader = None
    if wanted:
        loader = threading.Thread(target=_load_renderer, name="reprobox-load-renderer", daemon=True)
        loader.start()
    try:
        yield
    finally:
        if loader is not None:
            loader.join()


def _load_renderer() -> None:
    try:
        importlib.import_module("reprobox.build.render")
        importlib.import_module("reprobox.build.images")
        # jinja2 itself and the Dockerfile template, compiled (~60 ms each on a cold cache)
        importlib.import_module("reprobox.templating").load_template("Dockerfile.j2")
    except Exception:  # noqa: BLE001 - the main thread loads it again and reports
        pass


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox"


def lock_experiment(
    store: Store,
    stored: StoredExperiment,
    *,
    platform: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> tuple[StoredExperiment, LockResult]:
    """(Re)write requirements.lock, pylock.toml and the Dockerfile (or the conda lock) of a
    stored experiment and re-seal it: the new record, and the LockResult."""
    # lazy: reprobox.lock costs ~35 ms to import; see capture_experiment
    from .lock import early as early_lock
    from .lock import lock_environment  # lazy: as above

    # the lookups `reprobox lock` started before this record was loaded, if they are for it
    ahead = early_lock.take(stored.id, platform)
    with _renderer_loading(stored.environment.conda is None):
        result = lock_environment(
            stored.environment,
            repo_root=store.root,
            cache_dir=user_cache() / "index",
            platform=platform,
            progress=progress,
            ahead=ahead,
        )
    files: dict[str, Union[str, bytes]] = dict(result.files)
    if stored.environment.conda is not None:
        # lazy: the conda lock (~50 ms of imports) serves conda environments only
        from .lock.condalock import lock_conda

        conda_files = lock_conda(stored.environment, result.packages, progress=progress)
        files.update(conda_files)
        result = replace(result, files={**result.files, **conda_files})
    else:
        files["Dockerfile"] = render_store_dockerfile(
            stored.experiment, stored.environment, store.root
        )
    sealed = store.reseal(stored, files, replace_existing=True)
    return sealed, result
