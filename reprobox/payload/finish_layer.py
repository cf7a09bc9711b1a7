"""Finish one locked install step of an image: its identical files stored once, then the
bytecode (.pyc) of its distributions, except their test suites.

Copied into the build context and run *inside the image* right after the step's install, so it
uses the standard library only and runs on any CPython >= 3.6. Usage: ``python -I
finish_layer.py LOCK [--no-bytecode]`` (``LOCK``: the step's part of requirements.lock,
``name==version --hash=...`` per line). It reads the RECORDs of the distributions ``LOCK`` names,
and only the files they list inside the folder that holds the RECORD (no ``..``, no symbolic
link).

Identical files: wheels carry the same file more than once (a shared library and its versioned
name, one vendored library in two packages: torch's ``protoc`` and ``protoc-3.13.0.0``,
pyarrow's ``libarrow_python.so`` three times, numpy's and scipy's ``libgfortran``). Files of this
step with the same size, bytes, mode and owner become hard links to one file, which a layer
stores once (a layer's archive records the second name as a link). The RECORDs' hashes pick the
candidates, files of at least one block (4 KiB) that claim another's content; each candidate's
own lstat and sha256 decide. Every path still holds the
same bytes, as the probe and verify see them; a write to one of them in a container copies that
path up alone. Links are made before the bytecode is written: linked ``.py`` files share one
modification time, the one their ``.pyc`` is then checked against.

Bytecode: the rerun runs as its own user, who cannot write into site-packages, so a module
without bytecode in the image is compiled again on every run that imports it. Why not the test
suites (files under a folder named ``tests`` or ``test``): a run does not import them, and they
are a third of the Python files of a data-science stack (a third of the bytecode's size and
build time). A run that does import one still works: Python compiles it in memory, as it would
without any bytecode. Bytecode is not part of the environment's fingerprint (the probe skips
``.pyc`` files and ``__pycache__``), and the files are the ones Python itself writes
(``py_compile``, timestamp-checked, optimization level 0).
"""

import csv
import hashlib
import os
import py_compile
import re
import stat
import sys
from concurrent.futures import ProcessPoolExecutor

#: Folder names whose contents are test suites, not code a run imports.
TEST_FOLDERS = frozenset(("tests", "test"))

#: Files smaller than one file-system block are not worth a link (and are many).
MIN_LINK_SIZE = 4096

USAGE = "usage: python -I finish_layer.py LOCK [--no-bytecode]\n"


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


def _installed(wanted):
    """Every file the RECORDs of the ``wanted`` distributions list inside their folder, as
    (folder, path parts, claimed hash, claimed size) rows, in a stable order."""
    found = set()
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
                if not row or not row[0]:
                    continue
                parts = tuple(row[0].replace("\\", "/").split("/"))
                if ".." in parts or "" in parts:
                    continue
                claim = tuple(row[1:3]) if len(row) >= 3 else ("", "")
                found.add((folder, parts) + claim)
    return sorted(found)


def _sources(files):
    """The .py files among ``files``, test suites left out."""
    return [
        os.path.join(folder, *parts)
        for folder, parts, _hash, _size in files
        if parts[-1].endswith(".py") and not TEST_FOLDERS.intersection(parts[:-1])
    ]


def _regular(folder, parts, real_dirs):
    """The lstat of ``folder/parts`` when every folder on its way is a real folder (no symbolic
    link) and it is a regular file; else None. ``real_dirs`` memoizes the folders checked."""
    path = folder
    try:
        for part in parts[:-1]:
            path = os.path.join(path, part)
            if path not in real_dirs:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return None
                real_dirs.add(path)
        st = os.lstat(os.path.join(path, parts[-1]))
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _digest(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.digest()


def _link(keep, dup):
    """Make ``dup`` a hard link to ``keep``: a new name beside it, then renamed over it."""
    tmp = dup + ".reprobox-link"
    try:
        os.link(keep, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, dup)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def link_identical(files):
    """Hard-link the identical files among ``files``; return (files linked, bytes saved).

    The RECORDs' hashes and sizes only pick the candidates (files whose record claims the same
    content as another's, at least ``MIN_LINK_SIZE`` bytes): what gets linked is decided by
    each file's own lstat and sha256 here."""
    claimed = {}
    for folder, parts, digest, size in files:
        if digest and size.isascii() and size.isdigit() and int(size) >= MIN_LINK_SIZE:
            claimed.setdefault((digest, int(size)), []).append((folder, parts))
    by_key = {}
    real_dirs = set()
    for group in claimed.values():
        if len(group) < 2:
            continue
        for folder, parts in group:
            st = _regular(folder, parts, real_dirs)
            if st is None or st.st_size < MIN_LINK_SIZE:
                continue
            key = (st.st_size, st.st_dev, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            by_key.setdefault(key, []).append((os.path.join(folder, *parts), st.st_ino))
    linked = saved = 0
    for key in sorted(by_key):
        group = sorted(by_key[key])
        if len({ino for _, ino in group}) < 2:
            continue
        first = {}  # sha256 -> (path, inode) of the file the others link to
        for path, ino in group:
            digest = _digest(path)
            if digest is None:
                continue
            keep = first.get(digest)
            if keep is None:
                first[digest] = (path, ino)
            elif keep[1] != ino and _link(keep[0], path):
                linked += 1
                saved += key[0]
    return linked, saved


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
    args = argv[1:]
    bytecode = "--no-bytecode" not in args
    args = [a for a in args if a != "--no-bytecode"]
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(USAGE)
        return 2
    try:
        wanted = _names(args[0])
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write(
            "finish_layer: cannot read the step's lock %s (%s): the build context is "
            "incomplete; build again\n"
            % (args[0], exc.strerror if isinstance(exc, OSError) else exc)
        )
        return 2
    files = _installed(wanted)
    linked, saved = link_identical(files)
    sys.stdout.write("identical files: %d stored once (%.1f MB saved)\n" % (linked, saved / 1e6))
    if bytecode:
        paths = _sources(files)
        done = _compile_all(paths) if paths else 0
        sys.stdout.write(
            "bytecode: %d of %d files compiled (test suites left out)\n" % (done, len(paths))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
