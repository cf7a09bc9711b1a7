"""Write the bytecode (.pyc) of the distributions one install step put in the image, except
their test suites.

Copied into the build context and run *inside the image* right after the step's install, so it
uses the standard library only and runs on any CPython >= 3.6. Usage: ``python -I bytecode.py
LOCK`` (``LOCK``: the step's part of requirements.lock, ``name==version --hash=...`` per line).

Why: the rerun runs as its own user, who cannot write into site-packages, so a module without
bytecode in the image is compiled again on every run that imports it. Why not the test suites
(files under a folder named ``tests`` or ``test``): a run does not import them, and they are a
third of the Python files of a data-science stack (a third of the bytecode's size and build
time). A run that does import one still works: Python compiles it in memory, as it would
without any bytecode. Bytecode is not part of the environment's fingerprint (the probe skips
``.pyc`` files and ``__pycache__``), and the files are the ones Python itself writes
(``py_compile``, timestamp-checked, optimization level 0).
"""

import csv
import os
import py_compile
import re
import sys
from concurrent.futures import ProcessPoolExecutor

#: Folder names whose contents are test suites, not code a run imports.
TEST_FOLDERS = frozenset(("tests", "test"))


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(lock_path):
    names = set()
    with open(lock_path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(("#", "-")):
                continue
            names.add(_normalize(re.split(r"[=<>!~;\s\[]", line, maxsplit=1)[0]))
    return names


def _sources(wanted):
    """The .py files the RECORDs of the ``wanted`` distributions list, test suites left out."""
    found = []
    for folder in sys.path:
        if not folder or not os.path.isdir(folder):
            continue
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            if _normalize(entry[: -len(".dist-info")].split("-", 1)[0]) not in wanted:
                continue
            record = os.path.join(folder, entry, "RECORD")
            try:
                with open(record, newline="") as fh:
                    rows = list(csv.reader(fh))
            except OSError:
                continue
            for row in rows:
                if not row or not row[0].endswith(".py"):
                    continue
                parts = row[0].replace("\\", "/").split("/")
                if TEST_FOLDERS.intersection(parts[:-1]) or ".." in parts:
                    continue
                found.append(os.path.join(folder, *parts))
    return sorted(set(found))


def _compile(path):
    try:
        py_compile.compile(
            path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
        )
        return True
    except (py_compile.PyCompileError, OSError, ValueError, SyntaxError):
        # A file that is not valid Python for this interpreter (packages ship some: templates,
        # code for other versions) gets no bytecode, as with pip and uv.
        return False


def _compile_all(paths):
    workers = min(len(paths) // 64 + 1, os.cpu_count() or 1)
    if workers > 1:
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                return sum(pool.map(_compile, paths, chunksize=64))
        except (OSError, NotImplementedError):
            pass  # no working semaphores here (no /dev/shm): one process does it all
    return sum(_compile(p) for p in paths)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: python -I bytecode.py LOCK\n")
        return 2
    paths = _sources(_names(argv[1]))
    done = _compile_all(paths) if paths else 0
    sys.stdout.write(
        "bytecode: %d of %d files compiled (test suites left out)\n" % (done, len(paths))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
