"""The one place that runs subprocesses.

Each call is logged at debug level, and a failure raises :class:`CommandError` with the exit status
and the tail of stderr, so callers never parse ``CalledProcessError`` themselves.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Union

from .errors import CommandError, ReproboxError, ToolMissing
from .termsafe import stream_line

log = logging.getLogger("reprobox.proc")

#: Default bound for commands that should be quick (git, dpkg, nvidia-smi...).
DEFAULT_TIMEOUT = 120.0

#: How to get the tools reprobox shells out to, for the "missing tool" message.
INSTALL_HINTS = {
    "git": "install git (Debian/Ubuntu: `apt-get install git`)",
    "dvc": "install DVC in the environment you run reprobox from: `pip install dvc`",
    "docker": "install Docker (Debian/Ubuntu: `apt-get install docker.io`) and start the daemon",
    "debootstrap": "install debootstrap (Debian/Ubuntu: `apt-get install debootstrap`)",
    "uv": "install uv: `pip install uv`",
}


def which(name: str) -> str | None:
    return shutil.which(name)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    input: bytes | str | None = None,
    text: bool = True,
    what: str | None = None,
    hint: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``argv`` and return the completed process.

    ``what`` names the step for the error message ("git diff", "building the image"); ``hint`` is
    the fix shown when the command fails. Output is captured unless ``capture`` is false.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s (cwd=%s)", " ".join(args), cwd)
    if isinstance(input, str) and not text:
        input = input.encode()
    if not capture and input is None and _terminal_fds():
        return _run_on_terminal(
            args, cwd=cwd, env=env, timeout=timeout, what=what, hint=hint, check=check
        )
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            text=text,
            errors="replace" if text else None,
        )
    except FileNotFoundError as exc:
        tool = Path(args[0]).name
        if cwd is not None and not Path(cwd).is_dir():
            raise ReproboxError(f"working directory {cwd} does not exist") from exc
        raise ToolMissing(
            f"`{tool}` is not installed or not on PATH",
            INSTALL_HINTS.get(tool, f"install {tool} and make sure it is on PATH"),
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ReproboxError(
            f"{what or args[0]} did not finish within {timeout:.0f} s",
            hint or "check that the machine is not overloaded and that the network answers",
        ) from exc
    if check and proc.returncode != 0:
        err = proc.stderr if capture else ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        tail = "\n".join((err or "").strip().splitlines()[-15:])
        raise CommandError(args, proc.returncode, tail, hint=hint, what=what)
    return proc


def stream(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[Union[str, int]]:
    """Yield a command's merged stdout/stderr line by line; its exit status comes last, as int.

    For long steps (image builds) whose progress must be shown as it happens. Closing the
    generator early terminates the child.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("stream: %s (cwd=%s)", " ".join(args), cwd)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        child = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError as exc:
        tool = Path(args[0]).name
        raise ToolMissing(
            f"`{tool}` is not installed or not on PATH",
            INSTALL_HINTS.get(tool, f"install {tool} and make sure it is on PATH"),
        ) from exc
    assert child.stdout is not None
    try:
        for line in child.stdout:
            yield line.rstrip("\n")
    finally:
        if child.poll() is None:
            child.terminate()
        child.wait()
    yield child.returncode


# --------------------------------------------------------------------------- output to a terminal


def _terminal_fds() -> tuple[int, ...]:
    """Which of this process's stdout / stderr (as file descriptors a child inherits) are
    terminals."""
    return tuple(fd for fd in (1, 2) if _isatty(fd))


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _run_on_terminal(
    args: list[str],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
    what: str | None,
    hint: str | None,
    check: bool,
) -> subprocess.CompletedProcess:
    """Run a command whose output would go straight to a terminal, relaying it cleaned instead.

    The output of a recorded command (a rerun, a DVC pipeline) is a stranger's text: escape
    sequences and control characters in it must not reach the terminal (a fake verdict, colours
    that hide the real one). The child gets a pseudo-terminal in place of each stream that is a
    terminal here, so that it behaves as it would on the terminal (line buffering, progress
    bars), and every line it writes is relayed through :func:`reprobox.termsafe.stream_line`.
    A stream that is not a terminal (a pipe, a file, a CI log) is left to the child as is: bytes
    written to a file are kept exact for whoever reads them later.
    """
    fds = _terminal_fds()
    master, slave = pty.openpty()
    _copy_window_size(fds[0], slave)
    try:
        child = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=slave if 1 in fds else None,
            stderr=slave if 2 in fds else None,
        )
    except FileNotFoundError as exc:
        os.close(master)
        os.close(slave)
        tool = Path(args[0]).name
        raise ToolMissing(
            f"`{tool}` is not installed or not on PATH",
            INSTALL_HINTS.get(tool, f"install {tool} and make sure it is on PATH"),
        ) from exc
    os.close(slave)
    out_fd = 2 if 2 in fds else 1
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = b""

    def emit(raw: bytes) -> None:
        line = stream_line(raw.decode("utf-8", errors="replace"))
        os.write(out_fd, (line + "\n").encode("utf-8", errors="replace"))

    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([master], [], [], wait)
            if not ready:
                child.kill()
                child.wait()
                raise ReproboxError(
                    f"{what or args[0]} did not finish within {timeout:.0f} s",
                    hint or "check that the machine is not overloaded and that the network answers",
                )
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                emit(raw)
        if pending:
            emit(pending)
    finally:
        os.close(master)
        if child.poll() is None:
            child.terminate()
        child.wait()
    if check and child.returncode != 0:
        raise CommandError(args, child.returncode, "", hint=hint, what=what)
    return subprocess.CompletedProcess(args, child.returncode, None, None)


def _copy_window_size(src: int, dst: int) -> None:
    """The child's terminal gets the size of ours (progress bars fit the window)."""
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass
