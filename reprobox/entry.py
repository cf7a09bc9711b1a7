"""The ``reprobox`` command: a first capture's probe (:mod:`reprobox.capture.early`) or a lock's
first index queries (:mod:`reprobox.lock.early`) start before the rest of reprobox loads, then
:mod:`reprobox.cli` runs the command."""

from __future__ import annotations

import sys


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "capture":
        from .capture import early  # lazy: only for capture, before everything else loads

        early.begin(sys.argv[2:])
    elif command == "lock":
        # lazy: only for lock (~5 ms: the record's package names), before everything else loads
        from .lock import early as early_lock

        early_lock.begin(sys.argv[2:])
    try:
        from .cli import main as cli_main  # lazy: after the probe or queries have started

        cli_main()
    finally:
        if command == "capture":
            early.discard()
        elif command == "lock":
            early_lock.discard()
