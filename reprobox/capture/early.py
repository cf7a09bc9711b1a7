"""A first capture's probe, started before the command line loads the rest of reprobox.

``reprobox capture`` imports the record model, the store and the pipeline (~0.06 s) before it
reaches the probe, and on a first capture the probe (~0.15 s on a 120-package environment) is
the long pole. :func:`begin` runs before those imports (from :mod:`reprobox.entry`): with the
capture's own functions (:mod:`.interp`, :mod:`reprobox.layout`) it works out the interpreter
the capture will record and the probe's command line, and starts it. The capture adopts it
(:func:`adopt`, from :func:`reprobox.capture.python.run_probe`) only when the command line and
the environment it computes itself are exactly these; otherwise, and when no capture reaches the
probe (a refused command line), it is stopped (:func:`discard`). Nothing starts when the probe's
answer is already in the user's cache (the capture then runs no probe), nor for any doubt: a
problem found here is left for the capture to find and report.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from .. import layout
from ..errors import ReproboxError
from .interp import (
    _DROP_ENV,
    answer_file,
    find_repo_venv,
    find_target_python,
    probe_cache_file,
    probe_command,
)


class _Started:
    """One probe started ahead, its output read as it comes (a full pipe would stall it)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.started_ns = time.time_ns()
        self.child = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.output: tuple[str, str] = ("", "")
        self.reader = threading.Thread(target=self._read, daemon=True, name="reprobox-early")
        self.reader.start()

    def _read(self) -> None:
        out, err = self.child.communicate()
        self.output = (out or "", err or "")

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(5)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.reader.join()


_lock = threading.Lock()
_started: Optional[_Started] = None


def _take() -> Optional[_Started]:
    global _started
    with _lock:
        started, _started = _started, None
    return started


def python_option(args: Sequence[str]) -> Union[str, None, bool]:
    """The ``--python`` of a ``capture`` command line (its arguments after ``capture``): the
    value, None without one, False when the line asks for help or ends early. A guess, not a
    parse: the capture adopts the probe only if it computes the same command line."""
    value: Optional[str] = None
    for i, arg in enumerate(args):
        if arg in ("-h", "--help"):
            return False
        if arg == "--python":
            if i + 1 >= len(args):
                return False
            value = args[i + 1]
        elif arg.startswith("--python="):
            value = arg.split("=", 1)[1]
    return value


def plan(
    args: Sequence[str], environ: Mapping[str, str], cwd: Path
) -> Optional[tuple[list[str], dict[str, str]]]:
    """The probe's command line and environment as the capture will compute them, or None
    when the capture will not run a probe (its answer is cached) or the line asks for help."""
    python = python_option(args)
    if python is False:
        return None
    root = layout.find_root(cwd)
    explicit = python if isinstance(python, str) and python else None
    if explicit is None:
        repo_venv = find_repo_venv(root, cwd, environ)
        if repo_venv is not None:
            explicit = os.fspath(repo_venv)
    target = find_target_python(explicit, environ)
    cache_file = probe_cache_file(layout.local_dir(root, "cache") / "probe", target)
    if answer_file(cache_file).exists():
        return None  # a later capture: answered from the cache (or probed by the capture)
    env = {k: v for k, v in environ.items() if k not in _DROP_ENV}
    return probe_command(target, cache_file, environ), env


def begin(args: Sequence[str]) -> None:
    """Start the probe of ``reprobox capture ARGS`` now, if there will be one."""
    global _started
    try:
        planned = plan(args, dict(os.environ), Path.cwd())
        started = _Started(*planned) if planned is not None else None
    except Exception:  # noqa: BLE001 - only a head start: the capture finds and reports it
        return
    with _lock:
        _started = started


def adopt(
    argv: Sequence[Union[str, "os.PathLike[str]"]],
    env: Mapping[str, str],
    timeout: float,
    what: str,
    hint: str,
) -> Optional[tuple["subprocess.CompletedProcess[str]", int]]:
    """The probe started ahead when it runs exactly ``argv`` in ``env``: its completed process
    and the time it started (ns); else None (and it is stopped). Waits at most ``timeout``."""
    started = _take()
    if started is None:
        return None
    if [os.fspath(a) for a in argv] != started.argv or dict(env) != started.env:
        started.stop()
        return None
    started.reader.join(timeout)
    if started.reader.is_alive():
        started.stop()
        raise ReproboxError(f"{what} did not finish within {timeout:.0f} s", hint)
    out, err = started.output
    done = subprocess.CompletedProcess(started.argv, started.child.returncode, out, err)
    return done, started.started_ns


def discard() -> None:
    """Stop a probe started ahead that no capture adopted."""
    started = _take()
    if started is not None:
        started.stop()
