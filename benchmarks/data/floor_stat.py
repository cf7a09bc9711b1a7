"""The floor of an exact capture: the least work any tool does that checks installed files as
``reprobox capture`` must (its installed-file integrity check): start the target interpreter
(``python -I``), read every distribution's RECORD on ``sys.path`` and stat each file it lists
(bytecode aside). Nothing is parsed beyond the path column, nothing hashed, nothing printed but
the count, nothing written. Run as ``<venv>/bin/python -I floor_stat.py``.

A capture that is faster than this cannot have looked at every installed file; the benchmark
reports it beside ``pip freeze`` so a target below it shows as out of reach.
"""

import os
import sys


def main() -> int:
    stat = os.stat
    files = 0
    seen = set()
    for entry in sys.path:
        if not entry or entry in seen or not os.path.isdir(entry):
            continue
        seen.add(entry)
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        prefix = entry.rstrip("/") + "/"
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            try:
                with open(prefix + name + "/RECORD", "rb") as f:
                    data = f.read().decode("utf-8", "surrogateescape")
            except OSError:
                continue
            for line in data.splitlines():
                rel = line.rsplit(",", 2)[0].strip('"')
                if not rel or rel.endswith(".pyc") or "__pycache__" in rel:
                    continue
                try:
                    stat(prefix + rel)
                except OSError:
                    pass
                files += 1
    print(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
