"""The ``reprobox`` command: a first capture's probe starts before the rest of reprobox loads
(:mod:`reprobox.capture.early`), then :mod:`reprobox.cli` runs the command."""

from __future__ import annotations

import sys


def main() -> None:
    capture = len(sys.argv) > 1 and sys.argv[1] == "capture"
    if capture:
        from .capture import early  # lazy: only for capture, before everything else loads

        early.begin(sys.argv[2:])
    try:
        from .cli import main as cli_main  # lazy: after the probe has started

        cli_main()
    finally:
        if capture:
            early.discard()
