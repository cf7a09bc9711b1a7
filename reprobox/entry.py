"""The ``reprobox`` command: a first capture's probe (:mod:`reprobox.capture.early`) or a lock's
first index queries (:mod:`reprobox.lock.early`) start before the rest of reprobox loads, then
:mod:`reprobox.cli` runs the command."""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from typing import NoReturn


#: The collector's first threshold for the command's process (Python's default is 700). A command
#: allocates tens of thousands of objects that live until it ends (its modules, a record, the
#: index's answers) and makes little cyclic garbage: at the default the collector ran ~77 times
#: in a cold lock's process (17-23 ms) and ~42 times in its lookup child, which inherits this
#: (7-13 ms), to free ~500 objects in each; ~45 times (9 ms) in a capture's. Collections still
#: happen, only rarely: the cyclic garbage of a long command is freed in larger batches.
GC_THRESHOLD = 100_000


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    _first, *rest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *rest)
    if command == "capture":
        from .capture import early  # lazy: only for capture, before everything else loads

        early.begin(sys.argv[2:])
    elif command == "lock":
        # lazy: only for lock (~5 ms: the record's package names), before everything else loads
        from .lock import early as early_lock

        # SIGTERM (a CI job cancelled, a timeout) ends a lock like Ctrl-C: the lookups' child
        # and its curl are stopped and their folder removed, instead of running on orphaned
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if command == "lock":
            early_lock.begin(sys.argv[2:])
        from .cli import main as cli_main  # lazy: after the probe or queries have started

        cli_main()
    except SystemExit as exc:
        status = exc.code
    except KeyboardInterrupt:  # before the CLI could say so (it was still loading)
        from .errors import INTERRUPTED  # lazy: as the CLI above

        sys.stderr.write(f"\n{INTERRUPTED}\n")
        status = 130
    else:
        status = None
    finally:
        if command == "capture":
            early.discard()
        elif command == "lock":
            early_lock.discard()
    leave(status)


def _interrupt(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def leave(status: str | int | None) -> NoReturn:
    """Exit with ``status`` as :func:`sys.exit` would, without the interpreter's teardown.

    The command is over: its files are written and closed, its processes waited for. What the
    interpreter does next is free every object of the run and tear every module down, ~50 ms
    after a lock that is of no use to anyone. Exit handlers still run and the standard streams
    are flushed; a thread still running, or a stream that cannot be flushed, takes the usual way
    out (which waits for the one and reports the other)."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.exit(status)
    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_handlers is None:
        sys.exit(status)
    run_handlers()
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status & 0xFF
    else:
        print(status, file=sys.stderr)
        code = 1
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BrokenPipeError:  # the reader went away (`reprobox ls | head -1`): as SIGPIPE would
        os._exit(141)
    except (OSError, ValueError):
        sys.exit(status)
    os._exit(code)
