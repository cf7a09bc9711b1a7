"""Which interpreter a capture records, and the command line that probes it.

Importable without the record model or the store (standard library, :mod:`reprobox.errors`
and the payload's path): the command line resolves the interpreter and starts a first
capture's probe before it loads the rest (:mod:`reprobox.capture.early`); the capture itself
(:mod:`reprobox.capture.python`, :mod:`reprobox.capture.record`) uses the same functions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from .. import payload
from ..errors import InterpreterError, UsageError

PROBE = payload.script("probe")

_FIX_PYTHON = (
    "activate the environment you train in, or pass its interpreter with "
    "`reprobox capture --python /path/to/venv/bin/python`"
)

#: Folders of a repository that may hold the project's own virtualenv.
VENV_NAMES = (".venv", "venv", "env", ".env")


# --------------------------------------------------------------------------- finding the target


def _bin(prefix: str) -> Path:
    return Path(prefix) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _check_executable(path: Path, origin: str) -> Path:
    if not path.exists():
        raise InterpreterError(f"{origin}: {path} does not exist", _FIX_PYTHON)
    if path.is_dir():
        inside = _bin(str(path))
        if inside.exists():
            return _check_executable(inside, origin)
        raise InterpreterError(
            f"{origin}: {path} is a folder, not a Python interpreter",
            "pass the interpreter itself, e.g. `--python .venv/bin/python`",
        )
    unreadable = ""
    try:
        with open(path, "rb") as f:
            head: Optional[bytes] = f.read(4)
    except OSError as exc:
        head, unreadable = None, str(exc)  # the executable check below speaks first
    if head is not None:
        binary = head in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe") or head[:2] == b"MZ"
        if not binary and not head.startswith(b"#!"):
            # before the executable bit: `chmod +x` is no fix for a text file or data
            raise InterpreterError(
                f"{origin}: {path} is not a program (neither a binary nor a script)",
                _FIX_PYTHON,
            )
    if not os.access(path, os.X_OK):
        raise InterpreterError(
            f"{origin}: {path} is not executable",
            f"make it executable (`chmod +x {path}`) or pass another interpreter with --python",
        )
    if head is None:
        raise InterpreterError(f"{origin}: cannot read {path}: {unreadable}", _FIX_PYTHON)
    return path


def find_target_python(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The interpreter to record: ``--python``, the active venv, the active conda env, else PATH.

    The order follows what the user's own ``python train.py`` would run: an activated venv or
    conda env wins over whatever ``python`` PATH finds. Whether the file really is a working
    Python >= 3.8 is established by :func:`run_probe`, which runs it anyway.
    """
    env = os.environ if environ is None else environ
    if explicit:
        p = Path(explicit).expanduser()
        if os.sep not in explicit and not p.exists():
            found = shutil.which(explicit, path=env.get("PATH"))
            if not found:
                raise InterpreterError(f"--python {explicit}: no such program on PATH", _FIX_PYTHON)
            p = Path(found)
        # a path as given, made absolute without following links (a venv's python is one): a
        # bare relative name (`python3`, `./python` becomes `python`) would be run from PATH
        return _check_executable(Path(os.path.abspath(p)), "--python")
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = env.get(var)
        if prefix:
            exe = _bin(prefix)
            if not exe.exists():
                raise InterpreterError(
                    f"${var} points to {prefix}, which has no {exe.relative_to(prefix)}",
                    f"the environment was moved or deleted: deactivate it (`unset {var}`) or "
                    "pass the interpreter with --python",
                )
            return _check_executable(exe, f"${var}")
    for name in ("python", "python3"):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return _check_executable(Path(found), f"`{name}` on PATH")
    raise InterpreterError(
        "no Python interpreter found: no active venv/conda env and no "
        "`python` or `python3` on PATH",
        _FIX_PYTHON,
    )


def find_repo_venv(root: Path, cwd: Path, environ: Mapping[str, str]) -> Optional[Path]:
    """The interpreter of the virtualenv the repository holds, when nothing else names one.

    Only when no ``VIRTUAL_ENV`` / ``CONDA_PREFIX`` is set (the caller handles ``--python``):
    the folders :data:`VENV_NAMES` of the working directory and of the repository root that
    hold a ``pyvenv.cfg`` and a ``bin/python``. One candidate: its interpreter; none: None;
    several: a :class:`UsageError` naming them (exit 2) asking for ``--python``.

    The checkout is the user's own working tree on their machine (capture runs there), so a
    venv in it, symbolic links included, is theirs to use.
    """
    if environ.get("VIRTUAL_ENV") or environ.get("CONDA_PREFIX"):
        return None
    found: list[Path] = []
    seen: set[str] = set()
    for base in (Path(cwd), Path(root)):
        for name in VENV_NAMES:
            folder = base / name
            exe = folder / "bin" / "python"
            if not (folder / "pyvenv.cfg").is_file() or not os.path.exists(exe):
                continue
            key = os.path.realpath(folder)
            if key not in seen:
                seen.add(key)
                found.append(exe)
    if len(found) > 1:
        names = ", ".join(shown_path(p.parent.parent, root) for p in found)
        raise UsageError(
            f"the repository holds several virtualenvs ({names}) and none is active",
            f"say which one the command runs in: `--python {shown_path(found[0], root)}` "
            "(or activate it first)",
        )
    return found[0] if found else None


def resolve_target(
    root: Path, cwd: Path, python: Optional[str], environ: Mapping[str, str]
) -> tuple[Path, Optional[Path]]:
    """The interpreter a capture records, and the repository's virtualenv when it is the one:
    ``python`` (``--python``) when given, else the repository's own virtualenv when none is
    active (:func:`find_repo_venv`), else :func:`find_target_python`'s choice."""
    repo_venv = None if python else find_repo_venv(root, cwd, environ)
    chosen = os.fspath(repo_venv) if repo_venv is not None else python
    return find_target_python(chosen, environ), repo_venv


def shown_path(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return os.fspath(path)


# --------------------------------------------------------------------------- the probe's command


#: ``-I`` already makes the interpreter ignore these; they are removed from the environment too
#: because a wrapper in front of the interpreter (a pyenv shim, ``conda run``) may re-exec a
#: Python that would honour them. PYTHONUSERBASE stays: it says where the user site-packages is.
_DROP_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PYTHONSAFEPATH",
    "PYTHONEXECUTABLE",
    "PYTHONDEVMODE",
    "PYTHONWARNINGS",
    "PYTHONBREAKPOINT",
)


def probe_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the probe runs in: the user's, without :data:`_DROP_ENV`."""
    return {k: v for k, v in environ.items() if k not in _DROP_ENV}


def probe_command(
    python: Path,
    cache_file: Path | None,
    environ: Mapping[str, str],
    probe: Path = PROBE,
) -> list[str]:
    """The argv that runs the probe; see ``probe.py``'s docstring for why ``-I`` and not ``-S``."""
    argv = [os.fspath(python), "-I", os.fspath(probe)]
    if not environ.get("PYTHONNOUSERSITE"):
        argv.append("--user-site")  # a normal run would see ~/.local site-packages
    if cache_file is not None:
        argv += ["--cache", os.fspath(cache_file)]
    if environ.get("REPROBOX_HASH_INSTALLED", "").strip() not in ("", "0"):
        # hash every installed file of the recorded size, not only those touched after install
        argv.append("--hash-all")
    return argv


def probe_cache_file(cache_dir: Path, python: Path) -> Path:
    """The probe's own cache for ``python`` in ``cache_dir`` (ELF parses, RECORD listings)."""
    key = hashlib.sha256(os.fspath(Path(python).absolute()).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"probe-{key}.json"


def answer_file(cache_file: Path) -> Path:
    """Where the probe's whole answer for one interpreter is kept: in the user's own cache (as
    pip keeps its own), never in the checkout, since the answer holds what the environment
    holds, a token in a package's recorded URL included (the record strips it, the answer
    cannot). One file per checkout and interpreter."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(os.fspath(cache_file.absolute()).encode()).hexdigest()[:24]
    return Path(base) / "reprobox" / "probe" / f"{key}-answer.json"
