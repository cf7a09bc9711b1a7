"""Print the distributions installed in this interpreter that the capture does not hold.

Copied into the build context and run *inside the image* by the last install step, so it uses
the standard library only and runs on any CPython >= 3.6. The base image brings packages of its
own (pip, setuptools, wheel); an exact rebuild removes those the captured environment did not
have. Usage: ``python prune.py packages.txt`` (one normalized name per line); prints the names
to uninstall, space separated.
"""

import os
import re
import sys


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed():
    names = set()
    for folder in sys.path:
        if not folder or not os.path.isdir(folder):
            continue
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith((".dist-info", ".egg-info")):
                stem = entry.rsplit(".", 1)[0]
                # name-version: the name never contains "-" in metadata folder names (PEP 427).
                names.add(_normalize(stem.split("-", 1)[0]))
    return names


def main(argv):
    with open(argv[1]) as fh:
        expected = {_normalize(line.strip()) for line in fh if line.strip()}
    extra = sorted(_installed() - expected)
    sys.stdout.write(" ".join(extra))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
