"""A whole record walked through the grammars: what the store applies, once, to every experiment
it reads (and a capture to what it is about to store).

Every value of an experiment and its environment that reaches pip, a Dockerfile, a shell or a
path is checked against its grammar (:mod:`.grammar`); with the experiment's folder, the files
next to the JSON are checked too (plain files, sizes, the paths its patch touches).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from .condacheck import check_conda
from .envvars import check_replayable
from .environment import Environment, PackageSource
from .experiment import INLINE_METRICS, Experiment
from .grammar import (
    ARCHIVE_SCHEMES,
    MAX_APT_SOURCES,
    MAX_JSON_BYTES,
    MAX_PATCH_BYTES,
    MAX_TEXT,
    REMOTE_SCHEMES,
    VCS_SCHEMES,
    _fail,
    _match,
    apt_arch,
    apt_source,
    archive_hash,
    clean_text,
    codename,
    command,
    digest,
    env_var,
    experiment_id,
    experiment_name,
    git_ref,
    installer,
    local_path,
    package_name,
    platform_tag,
    relpath,
    sha256_hex,
    system_package,
    url,
    vcs_commit,
    version,
    wheel_tag,
)
from .patch import patch_targets


def _count(field: str, value: Any, limit: int) -> None:
    """An optional count or size: a whole number from 0 to ``limit``."""
    if value is not None and not (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
    ):
        raise _fail(field, value, f"is not a whole number from 0 to {limit}")


def validate_environment(env: Environment) -> None:
    """Every value of an ``environment.json`` that reaches pip, a Dockerfile or a path."""
    interp = env.interpreter
    _match(
        "interpreter.implementation",
        interp.implementation,
        re.compile(r"[a-z][a-z0-9_]*"),
        32,
        "implementation name (cpython, pypy)",
    )
    _match(
        "interpreter.version",
        interp.version,
        re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:(?:a|b|rc)[0-9]+)?\+?", re.ASCII),
        32,
        "Python version (X.Y.Z)",
    )
    for key in ("abi", "soabi", "platform"):
        val = getattr(interp, key)
        if val is not None:
            _match(f"interpreter.{key}", val, re.compile(r"[A-Za-z0-9_.-]+", re.ASCII), 128, key)
    for key in ("build", "compiler", "kind", "executable"):
        val = getattr(interp, key)
        if val is not None:
            clean_text(f"interpreter.{key}", val, MAX_TEXT)
    for i, tag in enumerate(interp.platform_tags):
        platform_tag(tag, f"interpreter.platform_tags[{i}]")

    for i, pkg in enumerate(env.packages):
        where = f"packages[{i}]"
        package_name(pkg.name, f"{where}.name")
        where = f"packages[{pkg.name}]"
        version(pkg.version, f"{where}.version")
        if pkg.display_name is not None:
            package_name(pkg.display_name, f"{where}.display_name")
        if pkg.installer is not None:
            installer(pkg.installer, f"{where}.installer")
        for j, tag in enumerate(pkg.wheel_tags):
            wheel_tag(tag, f"{where}.wheel_tags[{j}]")
        _source(pkg.source, f"{where}.source")

    if env.conda is not None:
        check_conda(env.conda)

    for i, spkg in enumerate(env.system_packages):
        where = f"system_packages[{i}]"
        system_package(spkg.manager, spkg.name, spkg.version, where)
        if spkg.arch is not None:
            apt_arch(spkg.arch, f"{where}.arch")
        for j, lib in enumerate(spkg.libraries):
            local_path(f"{where}.libraries[{j}]", lib)
    for key in ("unowned_libraries", "missing_libraries"):
        for j, lib in enumerate(getattr(env, key)):
            local_path(f"{key}[{j}]", lib)
    if len(env.apt_sources) > MAX_APT_SOURCES:
        raise _fail(
            "apt_sources", f"{len(env.apt_sources)} sources", f"lists more than {MAX_APT_SOURCES}"
        )
    for i, asrc in enumerate(env.apt_sources):
        apt_source(asrc, f"apt_sources[{i}]")

    osi = env.os
    if osi.codename is not None:  # goes into the base image tag: python:3.11.7-slim-<codename>
        codename(osi.codename, "os.codename")
    for key in ("id", "version_id", "glibc", "arch"):
        val = getattr(osi, key)
        if val is not None:
            _match(f"os.{key}", val, re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*", re.ASCII), 64, key)
    for key in ("pretty_name", "kernel", "system"):
        val = getattr(osi, key)
        if val is not None:
            clean_text(f"os.{key}", val, 256)
    for j, like in enumerate(osi.id_like):
        _match(f"os.id_like[{j}]", like, re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII), 64, "id")

    hw = env.hardware
    for key in ("cuda_runtime", "cudnn"):  # select the CUDA base image tag
        val = getattr(hw, key)
        if val is not None:
            _match(
                f"hardware.{key}",
                val,
                re.compile(r"[0-9]+(?:\.[0-9]+){0,3}", re.ASCII),
                32,
                "version (digits and dots)",
            )
    for key in ("cpu_model", "cpu_vendor", "cuda_source"):
        val = getattr(hw, key)
        if val is not None:
            clean_text(f"hardware.{key}", val, 256)
    for j, flag in enumerate(hw.cpu_flags):
        _match(f"hardware.cpu_flags[{j}]", flag, re.compile(r"[a-z0-9_.]+", re.ASCII), 32, "flag")
    # counts and sizes a machine can have (a number past them breaks no check, but its display)
    _count("hardware.cpu_cores", hw.cpu_cores, 1 << 24)
    _count("hardware.memory_bytes", hw.memory_bytes, 1 << 64)
    for j, gpu in enumerate(hw.gpus):
        clean_text(f"hardware.gpus[{j}].name", gpu.name, 256)
        _count(f"hardware.gpus[{j}].memory_mib", gpu.memory_mib, 1 << 44)
        for key in ("driver", "cuda_driver", "compute_capability"):
            val = getattr(gpu, key)
            if val is not None:
                _match(
                    f"hardware.gpus[{j}].{key}",
                    val,
                    re.compile(r"[0-9]+(?:\.[0-9]+){0,3}", re.ASCII),
                    32,
                    "version",
                )


def _source(src: PackageSource, where: str) -> None:
    if src.kind == "index":
        return
    if src.kind == "vcs":
        if src.vcs not in ("git", "hg", "svn", "bzr"):
            raise _fail(f"{where}.vcs", src.vcs, "is not one of git, hg, svn, bzr")
        url(f"{where}.url", src.url, VCS_SCHEMES)
        vcs_commit(src.commit, f"{where}.commit")
        if src.requested_revision is not None:
            git_ref(src.requested_revision, f"{where}.requested_revision")
    elif src.kind == "archive":
        url(f"{where}.url", src.url, ARCHIVE_SCHEMES)
        if src.hash is not None:
            archive_hash(src.hash, f"{where}.hash")
    elif src.kind == "directory":
        if src.path is not None:
            if src.in_repo:
                relpath(f"{where}.path", src.path)
            else:
                local_path(f"{where}.path", src.path)
        if src.url is not None:
            url(f"{where}.url", src.url, ("file",))
    else:
        raise _fail(f"{where}.kind", src.kind, "is not one of index, vcs, directory, archive")
    if src.subdirectory is not None:
        relpath(f"{where}.subdirectory", src.subdirectory)


_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def validate_experiment(exp: Experiment, env: Environment, *, folder: Path | None = None) -> None:
    """Apply the grammars to every field of a loaded capture; raise on the first hostile value.

    ``exp`` is a :class:`~reprobox.model.Experiment`, ``env`` its
    :class:`~reprobox.model.Environment`. With ``folder`` (the experiment's folder in the store),
    the files next to the JSON are checked too: plain files only (no symbolic links), sizes under
    the limits, and the targets of ``patch.diff``.
    """
    if exp.id:
        experiment_id(exp.id, "id")
    experiment_name(exp.name, "name")
    if exp.command_kind not in ("shell", "dvc", "none"):
        raise _fail("command_kind", exp.command_kind, "is not one of shell, dvc, none")
    if exp.command is not None:
        command(exp.command, "command")
    relpath("cwd", exp.cwd)
    digest(exp.environment_digest, "environment_digest")
    _match("created", exp.created, _TIMESTAMP, 40, "UTC timestamp (2026-01-31T12:00:00Z)")
    if exp.tool_version != "unknown":
        version(exp.tool_version, "tool_version")
    if exp.supersedes is not None:
        experiment_id(exp.supersedes, "supersedes")
    for fname, fdigest in exp.files.items():
        _match(
            "files",
            fname,
            re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", re.ASCII),
            100,
            "file name",
        )
        digest(fdigest, f"files[{fname}]")

    git = exp.git
    vcs_commit(git.commit, "git.commit")
    if git.branch is not None:
        git_ref(git.branch, "git.branch")
    if git.remote is not None:
        url("git.remote", git.remote, REMOTE_SCHEMES, allow_scp=True)
    if git.patch is not None:
        relpath("git.patch", git.patch, allow_dot=False)
        if "/" in git.patch.rstrip("/") or git.patch.startswith("."):
            raise _fail("git.patch", git.patch, "must be a file name in the experiment folder")
    if git.patch_sha256 is not None:
        sha256_hex(git.patch_sha256, "git.patch_sha256")
    for i, path in enumerate(git.untracked):
        relpath(f"git.untracked[{i}]", path, allow_dot=False)

    if exp.dvc is not None:
        dvc = exp.dvc
        if dvc.lock_digest is not None:
            _match(
                "dvc.lock_digest",
                dvc.lock_digest,
                re.compile(r"(?:sha256:)?[0-9a-f]{64}", re.ASCII),
                71,
                "digest",
            )
        for i, dout in enumerate(dvc.outputs):
            relpath(f"dvc.outputs[{i}].path", dout.path, allow_dot=False)
            _match(
                f"dvc.outputs[{i}].hash_name",
                dout.hash_name,
                re.compile(r"[a-z0-9_-]+", re.ASCII),
                32,
                "hash name",
            )
            if dout.hash_name.startswith("md5"):
                _match(
                    f"dvc.outputs[{i}].hash",
                    dout.hash,
                    re.compile(r"[0-9a-f]{32}(?:\.dir)?", re.ASCII),
                    36,
                    "md5 hash",
                )
            else:  # etag / checksum / version_id of cloud-versioned outputs: compared, never run
                clean_text(f"dvc.outputs[{i}].hash", dout.hash, 256)
            if dout.stage is not None:
                clean_text(f"dvc.outputs[{i}].stage", dout.stage, 256)
        for i, stage in enumerate(dvc.stages):
            clean_text(f"dvc.stages[{i}]", stage, 256)
        if dvc.remote is not None:
            _match(
                "dvc.remote",
                dvc.remote,
                re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII),
                128,
                "DVC remote name",
            )
        for i, path in enumerate(dvc.metrics_files):
            relpath(f"dvc.metrics_files[{i}]", path, allow_dot=False)
        _check_tree("dvc.params", dvc.params)

    for mfile, values in exp.metrics.items():
        if mfile != INLINE_METRICS:
            relpath("metrics file", mfile, allow_dot=False)
        _check_tree(f"metrics[{mfile}]", values)
    for i, out in enumerate(exp.outputs):
        relpath(f"outputs[{i}].path", out.path, allow_dot=False)
        sha256_hex(out.sha256, f"outputs[{i}].sha256")
        if not isinstance(out.size, int) or isinstance(out.size, bool) or out.size < 0:
            raise _fail(f"outputs[{i}].size", out.size, "is not a non-negative integer")
    for name, value in exp.env.items():
        env_var(name, value, "env")
    check_replayable(exp.env, "env")  # and only the variables reprobox itself would record
    if exp.run is not None:
        run_usage(exp.run)

    validate_environment(env)

    if folder is not None:
        _check_folder(Path(folder), exp)


_LIB_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*", re.ASCII)
_LIB_OWNER = re.compile(
    r"(?:package|system):[A-Za-z0-9][A-Za-z0-9._+-]*|python|driver|unowned", re.ASCII
)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_MODULE_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*|<repo>|<unknown>", re.ASCII)


def library_name_ok(name: Any) -> bool:
    """Whether a loaded library's file name is one ``run.libraries`` may hold."""
    return isinstance(name, str) and len(name) <= 255 and bool(_LIB_FILE.fullmatch(name))


def display_text_ok(value: Any, max_len: int = MAX_TEXT) -> bool:
    """Whether a value passes :func:`clean_text` (display-only text of a record)."""
    try:
        clean_text("value", value, max_len)
    except ValidationError:
        return False
    return True


def run_usage(run: Any) -> None:
    """``run`` of experiment.json (what a recorded command used): display-only names."""
    if run.source not in ("recorded", "declared"):
        raise _fail("run.source", run.source, "is not one of recorded, declared")
    if run.exit_status is not None and not -255 <= run.exit_status <= 255:
        raise _fail("run.exit_status", run.exit_status, "is not an exit status (-255..255)")
    for i, lib in enumerate(run.libraries):
        _match(f"run.libraries[{i}].name", lib.name, _LIB_FILE, 255, "library file name")
        _match(
            f"run.libraries[{i}].owner",
            lib.owner,
            _LIB_OWNER,
            255,
            "owner (package:NAME, system:NAME, python, driver, unowned)",
        )
    for owner, modules in run.modules.items():
        _match("run.modules key", owner, _MODULE_OWNER, 255, "distribution name")
        for m in modules:
            _match(f"run.modules[{owner}]", m, _MODULE, 255, "module name")
    for i, name in enumerate(run.dlopen_failed):
        clean_text(f"run.dlopen_failed[{i}]", name, 255)


def _check_tree(field: str, data: Any, depth: int = 0) -> None:
    """Keys and string leaves of metrics / params: display-only, but they reach terminals and
    PRs."""
    if depth > 32:
        raise _fail(field, "...", "is nested more than 32 levels deep")
    if isinstance(data, Mapping):
        for key, value in data.items():
            clean_text(f"{field} key", key, MAX_TEXT)
            _check_tree(f"{field}.{key}", value, depth + 1)
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            _check_tree(f"{field}[{i}]", value, depth + 1)
    elif isinstance(data, str):
        if data:
            clean_text(field, data, MAX_TEXT)
    elif data is not None and not isinstance(data, (int, float, bool)):
        raise _fail(field, data, f"holds a {type(data).__name__}, not a number, string or boolean")


def _check_folder(folder: Path, exp: Experiment) -> None:
    """The experiment folder holds plain, small files; its patch touches only the work tree."""
    if folder.is_symlink():
        raise _fail("experiment folder", str(folder), "is a symbolic link")
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            raise _fail(
                f"file {entry.name}",
                entry.name,
                "is a symbolic link; the store holds plain files only",
            )
        if not entry.is_file():
            raise _fail(f"file {entry.name}", entry.name, "is not a plain file")
        limit = MAX_PATCH_BYTES if entry.name == exp.git.patch else MAX_JSON_BYTES
        size = entry.stat().st_size
        if size > limit:
            raise _fail(
                f"file {entry.name}", entry.name, f"is {size} bytes, over the {limit} byte limit"
            )
    if exp.git.patch is not None:
        patch = folder / exp.git.patch
        if not patch.is_file():
            raise _fail(
                "git.patch",
                exp.git.patch,
                "is recorded but the file is missing",
                "restore the experiment folder from git or re-capture it",
            )
        patch_targets(patch.read_bytes(), "git.patch")
