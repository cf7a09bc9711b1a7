"""``reprobox record -- CMD``: run the command in the target environment, then record what the
run really used.

The host side of :mod:`reprobox.payload.recorder`: the payload is copied as ``sitecustomize.py``
into a private folder put first on ``PYTHONPATH``, the command runs (its exit status, wall time
and peak memory measured here, with ``os.wait4``), and every Python process of the run leaves a
small JSON file (modules imported, ``ctypes`` load attempts, the shared objects mapped at exit).
This module maps those files to distributions (their RECORD files, read here: plain files of the
same machine) and OS packages (:func:`reprobox.capture.system.owning_packages`).

Also here, because plain ``capture`` uses them too:

* the inactive virtualenv of the repository (``.venv/``, ``venv/``, ``env/``);
* the static scan of installed packages' sources for libraries named to ``ctypes``;
* system packages the user declares (``--system-package``, ``[tool.reprobox]``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..model import grammar as validate
from ..errors import InterpreterError, UsageError, ValidationError
from ..model import LoadedLibrary, RunUsage
from ..model.check import display_text_ok, library_name_ok
from . import system
from .. import payload
from ..payload import probe
from .interp import find_repo_venv, shown_path
from ..names import canonical_name

if TYPE_CHECKING:  # pragma: no cover
    from typing import TypeGuard  # Python 3.10+; the annotation is never evaluated

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

PAYLOAD = payload.script("recorder")
RECORD_DIR_VAR = "REPROBOX_RECORD_DIR"
#: Folders of a repository that may hold the project's own virtualenv.
#: Sonames the GPU driver provides from the host (never an OS package of the image).
DRIVER_PREFIXES = ("libcuda.so", "libnvidia-", "libnvcuvid.so", "libnvoptix.so")
#: Payload files read at most (a run that spawns thousands of Python processes).
MAX_PROCESS_FILES = 2000


# --------------------------------------------------------------------------- the repo's venv


# --------------------------------------------------------------------------- running the command


@dataclass(frozen=True)
class Execution:
    """The command's outcome as measured here, and the payload's reports."""

    argv: tuple[str, ...]
    exit_status: int
    wall_seconds: float
    peak_memory_kib: Optional[int]
    reports: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()


def command_environment(
    environ: Mapping[str, str], target: Optional[Path], payload_dir: Path, out_dir: Path
) -> dict[str, str]:
    """The command's environment: the user's, with the payload folder first on PYTHONPATH and,
    for an interpreter reprobox found or was given (not the active one), its ``bin`` first on
    PATH, the way activating that environment would."""
    env = dict(environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.fspath(payload_dir) + (os.pathsep + old if old else "")
    env[RECORD_DIR_VAR] = os.fspath(out_dir)
    if target is not None:
        bindir = os.fspath(Path(target).absolute().parent)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[:1] != [bindir]:
            env["PATH"] = bindir + (os.pathsep + path if path else "")
        venv = Path(bindir).parent
        if (venv / "pyvenv.cfg").is_file():
            env["VIRTUAL_ENV"] = os.fspath(venv)
    return env


def execute(
    argv: Sequence[str],
    *,
    cwd: Path,
    environ: Mapping[str, str],
    target: Optional[Path] = None,
    stdout_to_stderr: bool = False,
) -> Execution:
    """Run ``argv`` (stdin, stdout and stderr are the user's; with ``stdout_to_stderr`` its
    output goes to stderr, so that reprobox's ``--json`` stays alone on stdout) with the payload,
    wait for it and collect what its Python processes reported."""
    if not argv:
        raise UsageError(
            "no command to record", "give it after `--`: `reprobox record -- python train.py`"
        )

    with tempfile.TemporaryDirectory(prefix="reprobox-record-") as tmp:
        payload_dir = Path(tmp) / "payload"
        out_dir = Path(tmp) / "out"
        payload_dir.mkdir()
        out_dir.mkdir()
        shutil.copyfile(PAYLOAD, payload_dir / "sitecustomize.py")
        env = command_environment(environ, target, payload_dir, out_dir)
        exe = shutil.which(argv[0], path=env.get("PATH")) if os.sep not in argv[0] else argv[0]
        if exe is None:
            raise UsageError(
                f"{argv[0]}: no such program on PATH",
                "check the command's spelling, or give the program's path",
            )
        # Ctrl-C reaches the command (same process group); reprobox waits for it. SIGINT is
        # ignored here only once the child exists: an ignored signal would be inherited.
        t0 = time.perf_counter()
        try:
            child = subprocess.Popen(
                [exe, *argv[1:]], cwd=cwd, env=env, stdout=2 if stdout_to_stderr else None
            )
        except OSError as exc:
            raise UsageError(
                f"cannot run {argv[0]}: {exc.strerror or exc}",
                "check that the program exists and is executable",
            ) from None
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        # SIGTERM (a scheduler ending the job, `timeout`) goes on to the command, which reprobox
        # still waits for: then nothing is recorded and nothing is left behind
        terminated: list[int] = []

        def _forward(signo: int, _frame: Any) -> None:
            terminated.append(signo)
            try:
                child.send_signal(signo)
            except OSError:
                pass

        previous_term = signal.signal(signal.SIGTERM, _forward)
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        finally:
            wall = time.perf_counter() - t0
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
        reports, warnings = _read_reports(out_dir)
    if child.returncode == -signal.SIGINT or terminated:
        raise KeyboardInterrupt  # the user stopped the command: nothing is recorded
    peak = int(usage.ru_maxrss) or None  # KiB on Linux: the largest process of the run
    if not reports:
        warnings.append(
            "no Python process of the command reported what it loaded (a program that is not "
            "Python, or an interpreter started with -I, -E or -S): exit status, time and memory "
            "are recorded, modules and libraries are not"
        )
    return Execution(
        argv=tuple(argv),
        exit_status=child.returncode,
        wall_seconds=round(wall, 3),
        peak_memory_kib=peak,
        reports=tuple(reports),
        warnings=tuple(warnings),
    )


def interpreters_used(execution: Execution, root: Optional[Path] = None) -> dict[str, Any]:
    """{environment: (interpreter, ran a script of ``root``)} of the command's Python
    processes, from their reports: each environment by its ``sys.prefix`` with links resolved
    (a venv, a conda env, an installed Python), with the first ``sys.executable`` seen in it,
    and whether one of its processes ran a ``__main__`` file inside ``root`` (the project's own
    script, where a launcher such as ``poetry run`` runs from its own environment)."""
    used: dict[str, Any] = {}
    top = os.path.realpath(root) + os.sep if root is not None else None
    for report in execution.reports:
        prefix, exe = report.get("prefix"), report.get("executable")
        if not (_reported_path(prefix) and _reported_path(exe)):
            continue  # the command can write there too: only plain absolute paths are taken
        modules = report.get("modules")
        main = modules.get("__main__") if isinstance(modules, dict) else None
        own = top is not None and _reported_path(main) and os.path.realpath(main).startswith(top)
        env = os.path.realpath(prefix)
        first_exe, ran_own = used.get(env, (exe, False))
        used[env] = (first_exe, ran_own or own)
    return used


def _reported_path(value: Any) -> TypeGuard[str]:
    """A path from a report that is fit to resolve, run and show: absolute, printable, bounded."""
    return (
        isinstance(value, str)
        and value.startswith("/")
        and display_text_ok(value, 4096)
        and "\0" not in value
    )


@dataclass(frozen=True)
class InterpreterCheck:
    """What :func:`check_interpreter` found: the interpreter to record instead of the one
    probed (None: keep it), and what to tell the user."""

    switch_to: Optional[Path] = None
    warnings: tuple[str, ...] = ()


def check_interpreter(
    execution: Execution,
    probed: Mapping[str, Any],
    target: Path,
    explicit: bool,
    root: Optional[Path] = None,
) -> InterpreterCheck:
    """Whether the environment probed is the one the command ran (``probed``: the probe's
    ``interpreter`` section). A record describes the environment its run used. When the
    command's Python processes did not run the one reprobox chose itself, the one they ran is
    recorded instead (``switch_to``): the only one, or the only one that ran a script of the
    repository ``root`` (``poetry run python train.py``: poetry runs from an environment of its
    own, the script from the project's), the others named in a warning. One given with
    ``--python`` (``explicit``) is kept, with a warning naming what ran; so is the probed one
    when the processes ran several and none stands out, and, when the probed one ran, the
    others are named as environments whose packages the record does not hold."""
    used = interpreters_used(execution, root)
    prefix = probed.get("prefix")
    if not used or not isinstance(prefix, str):
        return InterpreterCheck()
    mine = os.path.realpath(prefix)
    own = [env for env, (_exe, ran_own) in used.items() if ran_own]
    if len(own) == 1:
        ran = own[0]  # the environment of the project's own script
    elif mine in used:
        ran = mine
    elif len(used) == 1:
        ran = next(iter(used))
    else:
        ran = None
    if ran == mine:
        others = {env: info for env, info in used.items() if env != mine}
        return InterpreterCheck(warnings=(_also_ran(others, target),) if others else ())
    if ran is not None and not explicit:
        exe = Path(used[ran][0])
        others = {env: info for env, info in used.items() if env != ran}
        return InterpreterCheck(switch_to=exe, warnings=(_also_ran(others, exe),) if others else ())
    if ran is not None:  # given with --python: kept
        what = f"the command ran {used[ran][0]}, not {target}"
        why = "the record describes the interpreter given with --python"
    else:
        what = "the command's Python processes ran " + _listed(
            sorted(exe for env, (exe, _own) in used.items() if env != mine)
        )
        what += f", not {target}"
        why = f"the record describes {target}, which none of them ran"
    return InterpreterCheck(
        warnings=(f"{what}: {why}; record with --python naming the interpreter the command runs",)
    )


def _also_ran(others: Mapping[str, Any], recorded: Path) -> str:
    ran = sorted(exe for exe, _own in others.values())
    return f"the command also ran {_listed(ran)}: the record holds the packages of {recorded} only"


def _listed(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


@dataclass(frozen=True)
class PortableCommand:
    argv: list[str]
    why: str


def portable_command(
    argv: Sequence[str],
    cwd: Path,
    root: Path,
    interpreter: Path,
    tracked: Callable[[str], bool],
    owner: Callable[[str], Optional[str]] = lambda _path: None,
) -> Optional[PortableCommand]:
    """``argv`` with its program named as a rerun finds it, when the program is named by a path
    a rerun will not have and the rebuilt environment, first on a rerun's PATH, has it: the
    recorded environment's own interpreter (``.venv/bin/python train.py`` in a virtualenv the
    checkout ignores, ``~/envs/ml/bin/python3 train.py``), or a script a distribution of it
    installed beside it (``.venv/bin/mytrain``; ``owner`` names the distribution whose RECORD
    lists a path, :meth:`FileOwners.installed_by`). None when the program is anything else: a
    name looked up on PATH, a committed file, a file of another environment than
    ``interpreter``'s (a base interpreter beside the virtualenv it created resolves to the same
    binary, so its folder must match), or one no distribution installed."""
    if not argv or os.sep not in argv[0]:
        return None
    name = os.path.basename(argv[0])
    full = os.path.normpath(os.path.join(os.path.realpath(cwd), os.path.expanduser(argv[0])))
    try:
        rel: Optional[str] = Path(full).relative_to(root).as_posix()
    except ValueError:
        rel = None
    if rel is not None and tracked(rel):
        return None
    try:
        if not os.path.samefile(os.path.dirname(full), os.path.dirname(interpreter)):
            return None
        if re.fullmatch(r"python[0-9.]*", name) and os.path.samefile(full, interpreter):
            return PortableCommand(
                [name, *argv[1:]], f"{argv[0]} is the recorded environment's interpreter"
            )
    except (OSError, ValueError):
        return None
    dist = owner(full) if os.path.isfile(full) else None
    if dist is None:
        return None
    return PortableCommand(
        [name, *argv[1:]], f"{argv[0]} is a script of {dist} in the recorded environment"
    )


def program_path_warning(
    argv: Sequence[str], cwd: Path, root: Path, tracked: Callable[[str], bool]
) -> Optional[str]:
    """A warning when the command's program is named by a path a rerun will not have: outside
    the repository, or inside it but not committed (a virtualenv the checkout ignores). A rerun
    runs the recorded command in a clone, or in a container, with the rebuilt environment's
    ``bin`` first on PATH: ``python train.py`` finds its interpreter there, ``.venv/bin/python
    train.py`` does not. ``tracked`` says whether a path relative to ``root`` is committed."""
    if not argv or os.sep not in argv[0]:
        return None
    program = argv[0]
    full = os.path.normpath(os.path.join(os.path.realpath(cwd), os.path.expanduser(program)))
    try:
        rel = Path(full).relative_to(root).as_posix()
    except ValueError:
        rel = None
    if rel is not None and tracked(rel):
        return None
    where = "outside the repository" if rel is None else "not committed"
    name = os.path.basename(program) or program
    if re.fullmatch(r"python[0-9.]*", name):
        fix = (
            "record it as `"
            + shlex.join(["reprobox", "record", "--python", program, "--", name, *argv[1:]])
            + "`: the rerun's PATH starts with the rebuilt environment"
        )
    else:
        fix = "commit it, or start the command with a program the rebuilt environment has"
    return (
        f"the command's program {program} is {where}: a rerun in a clone or a container will "
        f"not find it; {fix}"
    )


def _read_reports(out_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    reports: list[dict[str, Any]] = []
    warnings: list[str] = []
    names = sorted(n for n in os.listdir(out_dir) if n.endswith(".json"))
    if len(names) > MAX_PROCESS_FILES:
        warnings.append(
            f"{len(names)} Python processes reported; the first {MAX_PROCESS_FILES} were read"
        )
        names = names[:MAX_PROCESS_FILES]
    for n in names:
        try:
            data = json.loads((out_dir / n).read_text(encoding="utf-8", errors="surrogateescape"))
        except (OSError, ValueError, RecursionError):
            continue  # the command can write there too: what is not a report is not read
        if (
            isinstance(data, dict)
            and data.get("version") == 1
            and isinstance(data.get("modules") or {}, dict)
            and isinstance(data.get("maps") or [], list)
            and isinstance(data.get("dlopen") or [], list)
        ):
            reports.append(data)
    return reports, warnings


# --------------------------------------------------------------------------- file -> owner


class FileOwners:
    """Which distribution installed a file, from the RECORD files the probe found."""

    def __init__(self, raw_probe: Mapping[str, Any], root: Path) -> None:
        self.by_path: dict[str, str] = {}
        self.by_top: dict[tuple[str, str], str] = {}
        self.sites = sorted(
            {os.path.realpath(s) for s in raw_probe.get("site_dirs") or () if isinstance(s, str)},
            key=len,
            reverse=True,
        )
        self.root = os.path.realpath(root)
        interp = raw_probe.get("interpreter") or {}
        self.prefixes = sorted(
            {
                os.path.realpath(p)
                for p in (interp.get("prefix"), interp.get("base_prefix"))
                if isinstance(p, str) and p not in ("/usr", "/")
            }
        )
        for d in raw_probe.get("distributions") or ():
            if not isinstance(d, Mapping) or not isinstance(d.get("metadata_dir"), str):
                continue
            name = canonical_name(str(d.get("name") or ""))
            site = os.path.realpath(str(d.get("site") or ""))
            for top in d.get("top_level") or ():
                self.by_top[(site, str(top))] = name
            self.by_top[(site, name.replace("-", "_"))] = name
            if d.get("has_record"):
                self._read_record(os.path.join(d["metadata_dir"], "RECORD"), site, name)

    def _read_record(self, path: str, site: str, name: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        for line in data.split(b"\n"):
            if not line:
                continue
            if line.startswith(b'"'):
                try:
                    text = line.decode("utf-8", "surrogateescape")
                    row = next(csv.reader(io.StringIO(text, newline="")), [])
                except csv.Error:  # not CSV (a field over csv's limit): names no file
                    row = []
                rel = row[0] if row else ""
            else:
                rel = line.split(b",", 1)[0].decode("utf-8", "surrogateescape")
            if rel and not rel.endswith(".pyc"):
                full = os.path.normpath(os.path.join(site, rel))
                self.by_path.setdefault(full, name)
                if not rel.startswith(".."):
                    self.by_top.setdefault((site, rel.split("/", 1)[0]), name)

    def installed_by(self, path: str) -> Optional[str]:
        """The distribution whose RECORD lists ``path`` as it is named (a console script in the
        environment's ``bin``), or None."""
        return self.by_path.get(os.path.normpath(path))

    def site_of(self, real: str) -> Optional[str]:
        return next((s for s in self.sites if real.startswith(s + os.sep)), None)

    def owner(self, path: str) -> Optional[str]:
        """The distribution owning ``path``, ``<repo>`` for the repository's own code, or None."""
        real = os.path.realpath(path)
        hit = self.by_path.get(real) or self.by_path.get(os.path.normpath(path))
        if hit:
            return hit
        site = self.site_of(real)
        if site is not None:
            top = real[len(site) + 1 :].split(os.sep, 1)[0]
            return (
                self.by_top.get((site, top))
                or self.by_top.get((site, top.split(".", 1)[0]))
                or "<unknown>"
            )
        if real == self.root or real.startswith(self.root + os.sep):
            return "<repo>"
        return None

    def in_prefix(self, real: str) -> bool:
        return any(real == p or real.startswith(p + os.sep) for p in self.prefixes)


# --------------------------------------------------------------------------- summary


@dataclass
class RunSummary:
    usage: RunUsage
    #: realpath -> sonames of OS libraries the run loaded (they join the system packages)
    system_libraries: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _soname(path: str) -> str:
    try:
        info = probe.read_elf(path)
    except Exception:  # noqa: BLE001 - a file that is not ELF keeps its file name
        info = None
    if isinstance(info, dict) and isinstance(info.get("soname"), str) and info["soname"]:
        return str(info["soname"])
    return os.path.basename(path)


def python_own_closure(raw_probe: Mapping[str, Any]) -> set[str]:
    """Realpaths of the system libraries the interpreter and its stdlib extension modules load,
    transitively (libssl -> libcrypto): part of the base image of that Python, left out."""
    native = (raw_probe.get("native") or {}).get("libraries") or {}
    todo = [
        str(rec["realpath"])
        for rec in native.values()
        if isinstance(rec, Mapping)
        and rec.get("realpath")
        and set(rec.get("users") or ()) <= {"<python>"}
    ]
    cache = probe.read_ld_cache() or {}
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            info = probe.read_elf(path)
        except Exception:  # noqa: BLE001
            continue
        for needed in (info or {}).get("needed") or ():
            for candidate in cache.get(needed, ())[:1]:
                todo.append(os.path.realpath(candidate))
    return seen


def summarize(execution: Execution, raw_probe: Mapping[str, Any], root: Path) -> RunSummary:
    """The payload's reports mapped to distributions and OS packages."""
    owners = FileOwners(raw_probe, root)
    modules: dict[str, set[str]] = {}
    mapped: set[str] = set()
    dlopen: set[str] = set()
    for rep in execution.reports:
        for name, fpath in (rep.get("modules") or {}).items():
            if not isinstance(name, str) or not isinstance(fpath, str):
                continue
            owner = owners.owner(fpath)
            top = name.split(".", 1)[0]
            if owner is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
                modules.setdefault(owner, set()).add(top)
        mapped.update(p for p in rep.get("maps") or () if isinstance(p, str))
        dlopen.update(n for n in rep.get("dlopen") or () if isinstance(n, str))
    python_own = python_own_closure(raw_probe)
    libraries: list[LoadedLibrary] = []
    system_libs: dict[str, list[str]] = {}
    system_paths: list[str] = []
    for path in sorted(mapped):
        real = os.path.realpath(path)
        name = os.path.basename(real)
        if name.startswith(DRIVER_PREFIXES):
            libraries.append(LoadedLibrary(name, "driver"))
            continue
        owner = owners.owner(real)
        if owner is not None and owner not in ("<repo>", "<unknown>"):
            libraries.append(LoadedLibrary(name, f"package:{owner}"))
        elif owner is not None or owners.in_prefix(real):
            libraries.append(LoadedLibrary(name, "python" if owner is None else "unowned"))
        elif (real in python_own or _is_interpreter_file(real, raw_probe)) and not any(
            _answered(n, {name, os.path.basename(path)}) for n in dlopen
        ):
            # what the interpreter and its stdlib modules bring, unless the run asked for the
            # library itself through ctypes: then the command needs it, whoever else might
            # (libpng16 is also under Tk's closure, but a base image need not have Tk)
            libraries.append(LoadedLibrary(name, "python"))
        else:
            system_paths.append(real)
            system_libs[real] = [_soname(real)]
    if system_paths:
        pkgs, unowned = system.owning_packages(system_paths, system_libs)
        by_lib = {lib: p.name for p in pkgs for lib in p.libraries}
        for real in system_paths:
            so = system_libs[real][0]
            owner = f"system:{by_lib[so]}" if so in by_lib and real not in unowned else "unowned"
            libraries.append(LoadedLibrary(os.path.basename(real), owner))
    loaded_names = {os.path.basename(os.path.realpath(p)) for p in mapped} | {
        os.path.basename(p) for p in mapped
    }
    failed = sorted(n for n in dlopen if not _answered(n, loaded_names))
    # names a record cannot hold (too long, not UTF-8, control characters) are left out, said
    # once: the command has run, and its record must not be lost over one library's name
    kept_libraries = [lib for lib in libraries if library_name_ok(lib.name)]
    kept_failed = [n for n in failed if display_text_ok(n, 255)]
    left_out = len(libraries) - len(kept_libraries) + len(failed) - len(kept_failed)
    warnings = list(execution.warnings)
    if left_out:
        warnings.append(
            f"{left_out} library name(s) the run loaded or asked for were left out of the "
            "record: too long, not UTF-8 or with control characters"
        )
    libraries, failed = kept_libraries, kept_failed
    usage = RunUsage(
        exit_status=execution.exit_status,
        source="recorded",
        wall_seconds=execution.wall_seconds,
        peak_memory_kib=execution.peak_memory_kib,
        processes=len(execution.reports),
        modules={k: tuple(sorted(v)) for k, v in sorted(modules.items())},
        libraries=tuple(sorted(set(libraries), key=lambda x: (x.owner, x.name))),
        dlopen_failed=tuple(failed[:100]),
    )
    return RunSummary(usage=usage, system_libraries=system_libs, warnings=warnings)


def _is_interpreter_file(real: str, raw_probe: Mapping[str, Any]) -> bool:
    interp = raw_probe.get("interpreter") or {}
    exe = interp.get("executable")
    if isinstance(exe, str) and os.path.realpath(exe) == real:
        return True
    return os.path.basename(real).startswith("libpython")


def _answered(name: str, loaded: set[str]) -> bool:
    """Whether a name given to ctypes matches a mapped object (``libm.so.6``, a path, ``c``)."""
    base = os.path.basename(name)
    if base in loaded:
        return True
    stem = base.split(".so", 1)[0]
    return any(n.split(".so", 1)[0] == stem for n in loaded)


# --------------------------------------------------------------------------- static ctypes scan


def ctypes_names(raw_probe: Mapping[str, Any]) -> dict[str, set[str]]:
    """Library names the installed packages' sources hand to ctypes, by distribution: the
    probe's ``ctypes`` answer (see ``probe.scan_ctypes``: pure-Python distributions only, test
    modules left out, cached per RECORD), keyed here by normalized distribution name."""
    found = raw_probe.get("ctypes")
    if not isinstance(found, Mapping):
        return {}
    out: dict[str, set[str]] = {}
    for d in raw_probe.get("distributions") or ():
        if not isinstance(d, Mapping) or not isinstance(d.get("metadata_dir"), str):
            continue
        names = found.get(d["metadata_dir"])
        if isinstance(names, list):
            kept = {n for n in names if isinstance(n, str) and 0 < len(n) <= 80}
            if kept:
                out.setdefault(canonical_name(str(d.get("name") or "")), set()).update(kept)
    return out


def resolve_library_names(names: Iterable[str]) -> dict[str, list[str]]:
    """realpath -> [soname] for library names as ctypes takes them (``magic``, ``libz.so.1``),
    found through this machine's ld.so.cache; names it does not know are left out."""
    cache = probe.read_ld_cache() or {}
    out: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        if name.startswith("lib") and ".so" in name:
            candidates = [name] if name in cache else []
        else:
            prefix = f"lib{name}.so"
            # the versioned soname the loader uses, not the development link ``libx.so``
            candidates = sorted(
                (k for k in cache if k.startswith(prefix + ".")), key=lambda k: (len(k), k)
            ) or [k for k in cache if k == prefix]
        for soname in candidates[:1]:
            paths = cache.get(soname) or []
            if paths:
                sonames = out.setdefault(os.path.realpath(paths[0]), [])
                if soname not in sonames:
                    sonames.append(soname)
    return out


# --------------------------------------------------------------------------- declared packages


def declared_system_packages(root: Path, given: Sequence[str]) -> list[str]:
    """``--system-package`` names and ``[tool.reprobox] system-packages`` of pyproject.toml.

    pyproject.toml is untrusted input (it comes with the checkout): each name must pass the
    Debian package-name grammar. A name only adds a package from the trusted Debian archive
    the image installs from (at the version this machine has), so a checkout that declares one
    can ask for nothing the archive does not already offer.
    """
    names: list[str] = []
    for n in given:
        try:
            names.append(validate.apt_package_name(n, "--system-package"))
        except ValidationError as exc:
            raise UsageError(
                exc.message.replace("refusing ", "bad ", 1),
                "give a Debian package name, e.g. --system-package libmagic1",
            ) from None
    pyproject = Path(root) / "pyproject.toml"
    if pyproject.is_file() and not pyproject.is_symlink():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"pyproject.toml cannot be read: {exc}", "fix the file's TOML syntax"
            ) from None
        except RecursionError:
            raise UsageError(
                "pyproject.toml cannot be read: it nests too deeply", "fix the file's TOML"
            ) from None
        tool = data.get("tool")
        ours = tool.get("reprobox") if isinstance(tool, dict) else None
        if ours is not None and not isinstance(ours, dict):
            raise UsageError(
                "pyproject.toml: [tool.reprobox] must be a table",
                'write e.g. [tool.reprobox] then system-packages = ["libmagic1"]',
            )
        declared = (ours or {}).get("system-packages")
        if declared is not None:
            if not isinstance(declared, list) or not all(isinstance(x, str) for x in declared):
                raise UsageError(
                    "pyproject.toml: [tool.reprobox] system-packages must be a list "
                    "of package names",
                    'write e.g. system-packages = ["libmagic1"]',
                )
            for i, n in enumerate(declared):
                try:
                    names.append(
                        validate.apt_package_name(
                            n, f"pyproject.toml [tool.reprobox] system-packages[{i}]"
                        )
                    )
                except ValidationError as exc:
                    raise UsageError(
                        exc.message.replace("refusing ", "bad ", 1),
                        'give Debian package names, e.g. "libmagic1"',
                    ) from None
    return sorted(set(names))


def check_exit_status(value: Optional[int]) -> Optional[int]:
    if value is not None and not 0 <= value <= 255:
        raise UsageError(
            f"--exit-status {value} is not an exit status",
            "give the status the command exited with, 0 to 255",
        )
    return value


__all__ = [
    "Execution",
    "FileOwners",
    "RunSummary",
    "InterpreterError",
    "check_exit_status",
    "ctypes_names",
    "declared_system_packages",
    "execute",
    "find_repo_venv",
    "resolve_library_names",
    "shown_path",
    "summarize",
]
