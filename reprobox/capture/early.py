"""A capture's probe, or its check of the cached answer, started before the command line loads
the rest of reprobox.

``reprobox capture`` imports the record model, the store and the pipeline (~0.06 s) before it
reaches the probe, and the probe is the long pole of a capture: on a first capture the probe
itself (~0.15 s on a 120-package environment), on a later one the check that its cached answer
still holds (a stat of every installed file, ~0.07 s, see :mod:`.probecache`). :func:`begin`
runs before those imports (from :mod:`reprobox.entry`): with the capture's own functions
(:mod:`.interp`, :mod:`reprobox.layout`) it works out the interpreter the capture will record,
and starts the probe, or, when an answer is cached, has a forked child check it. The capture
takes either only when what it computes itself is exactly the same (:func:`adopt`,
:func:`checked_answer`, from :func:`reprobox.capture.python.run_probe`); otherwise, and when no
capture gets that far (a refused command line), it is stopped (:func:`discard`). For any doubt
nothing starts: a problem found here is left for the capture to find and report.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Optional, Union

from .. import layout
from ..errors import ReproboxError
from .interp import (
    PROBE,
    answer_file,
    probe_cache_file,
    probe_command,
    probe_env,
    resolve_target,
)


class _Started:
    """One probe started ahead, its output read as it comes (a full pipe would stall it)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        created: tuple[Path, ...] = (),
        cache_file: Optional[Path] = None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.created = created
        self.cache_file = cache_file
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


class _Checking:
    """The probe's cached answer, checked by a forked child: it loads the answer as the capture
    would (:meth:`.probecache.ResultCache.load`, a stat of every file the answer depends on)
    and sends it back, or ``null`` when it no longer holds."""

    def __init__(self, answer: Path, python: Path, env: dict[str, str]) -> None:
        self.key = (os.fspath(answer), os.fspath(python), env)
        self.data = b""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answer through the pipe, nothing else
            try:
                os.close(r)
                devnull = os.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):  # off the command's output: its reader waits for holders
                    os.dup2(devnull, std)
                from .probecache import ResultCache  # lazy: in the child only

                raw = ResultCache(answer, python, env, PROBE).load()
                view = memoryview(json.dumps(raw).encode("utf-8", "surrogateescape"))
                while view:
                    view = view[os.write(w, view) :]
            finally:
                os._exit(0)
        os.close(w)
        self.pid, self.fd = pid, r
        self.reader = threading.Thread(target=self._read, daemon=True, name="reprobox-early")
        self.reader.start()

    def _read(self) -> None:
        chunks = []
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            os.waitpid(self.pid, 0)
        self.data = b"".join(chunks)

    def stop(self) -> None:
        self.reader.join()  # the check is short, and it may be writing the answer's fingerprint


_lock = threading.Lock()
_started: Union[_Started, _Checking, None] = None


def _take(kind: Optional[type] = None) -> Union[_Started, _Checking, None]:
    """What was started ahead, handed over once (only if it is a ``kind``)."""
    global _started
    with _lock:
        started = _started
        if kind is not None and not isinstance(started, kind):
            return None
        _started = None
    return started


class ProbePlan(NamedTuple):
    """The probe the capture will run, the folders made for its cache, and that cache."""

    argv: list[str]
    env: dict[str, str]
    created: tuple[Path, ...] = ()
    cache_file: Optional[Path] = None


class CheckPlan(NamedTuple):
    """The cached answer the capture will check."""

    answer: Path
    python: Path
    env: dict[str, str]


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
) -> Union[ProbePlan, CheckPlan, None]:
    """What the capture will do first, as it will compute it: check the cached answer when
    there is one, else run the probe; None when the line asks for help. For a probe the
    probe's cache folder is made here, as the capture makes it (links refused), and the
    folders this made are in the plan: :func:`discard` removes them again when no capture
    came to take the probe (a refused command line leaves nothing behind)."""
    python = python_option(args)
    if python is False:
        return None
    root = layout.find_root(cwd)
    explicit = python if isinstance(python, str) and python else None
    target, _repo_venv = resolve_target(root, cwd, explicit, environ)
    env = probe_env(environ)
    local = root / layout.STORE_DIR / layout.LOCAL
    cache_file = probe_cache_file(local / "cache" / "probe", target)
    answer = answer_file(cache_file)
    if answer.exists():
        return CheckPlan(answer, target, env)
    wanted = (root / layout.STORE_DIR, local, local / "cache")
    created = tuple(p for p in wanted if not os.path.lexists(p))
    try:
        made = layout.local_dir(root, "cache") / "probe"
    except Exception:  # a link on the way (refused), a read-only checkout: the capture says
        _undo(created, cache_file)
        raise
    if made != cache_file.parent:  # not where the capture will look: no head start
        _undo(created, cache_file)
        return None
    return ProbePlan(probe_command(target, cache_file, environ), env, created, cache_file)


def _undo(created: Sequence[Path], cache_file: Path) -> None:
    """Remove what a probe started ahead left, in the folders :func:`plan` made: its cache
    file, the probe's folder, those folders (deepest first) and the ignore file of ``local``.
    A folder that holds anything else stays."""
    if not created:
        return
    probe_dir = cache_file.parent
    for path in [cache_file, *probe_dir.glob(f"{cache_file.name}.*.tmp")]:
        try:
            os.unlink(path)
        except OSError:
            pass
    for folder in (probe_dir, *reversed(created)):
        if folder.name == layout.LOCAL:
            try:  # its ignore file goes only with it: nothing else in it may show in git
                if os.listdir(folder) == [".gitignore"] and (
                    (folder / ".gitignore").read_text() == layout.LOCAL_GITIGNORE
                ):
                    os.unlink(folder / ".gitignore")
            except OSError:
                pass
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            continue  # never made (the probe's own folder, when it was stopped early)
        except OSError:
            return  # holds something else: it and the folders above it stay


def begin(args: Sequence[str]) -> None:
    """Start the probe of ``reprobox capture ARGS``, or the check of its cached answer, now."""
    global _started
    try:
        planned = plan(args, dict(os.environ), Path.cwd())
    except Exception:  # noqa: BLE001 - only a head start: the capture finds and reports it
        return
    started: Union[_Started, _Checking, None] = None
    try:
        if isinstance(planned, ProbePlan):
            started = _Started(planned.argv, planned.env, planned.created, planned.cache_file)
        elif isinstance(planned, CheckPlan) and hasattr(os, "fork"):
            started = _Checking(planned.answer, planned.python, planned.env)
    except Exception:  # noqa: BLE001 - the capture runs it itself, and reports what fails
        if isinstance(planned, ProbePlan) and planned.cache_file is not None:
            _undo(planned.created, planned.cache_file)
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
    if (
        not isinstance(started, _Started)
        or [os.fspath(a) for a in argv] != started.argv
        or dict(env) != started.env
    ):
        started.stop()
        return None
    started.reader.join(timeout)
    if started.reader.is_alive():
        started.stop()
        raise ReproboxError(f"{what} did not finish within {timeout:.0f} s", hint)
    out, err = started.output
    done = subprocess.CompletedProcess(started.argv, started.child.returncode, out, err)
    return done, started.started_ns


def checked_answer(
    answer: Path, python: Path, env: Mapping[str, str]
) -> Optional[tuple[Optional[dict]]]:
    """The check of the cached answer at ``answer`` for ``python`` in ``env``, made ahead:
    ``(raw,)`` (None when the answer no longer holds), or None when no such check was made (or
    it said nothing), and the capture checks it itself."""
    started = _take(_Checking)
    if not isinstance(started, _Checking):
        return None
    if started.key != (
        os.fspath(answer),
        os.fspath(python),
        dict(env),
    ):
        started.stop()
        return None
    started.reader.join()
    try:
        raw = json.loads(started.data.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None  # the child died before it answered
    return (raw,) if raw is None or isinstance(raw, dict) else None


def discard() -> None:
    """Stop what was started ahead and no capture took; a probe's folders made for it go."""
    started = _take()
    if started is not None:
        started.stop()
        if isinstance(started, _Started) and started.cache_file is not None:
            _undo(started.created, started.cache_file)
