"""The probe's whole answer, remembered until anything it was read from changes.

A capture of an environment that did not change since the last one gets the same probe output;
running the target interpreter again costs its start-up, a re-read of every metadata file and
ELF header, and the JSON round trip. This cache keeps the last answer per interpreter under
the user's cache (``$XDG_CACHE_HOME/reprobox/probe/``, never in the checkout: the answer holds
what the environment holds, a token in a recorded URL included) with a fingerprint of every file
and folder the answer depends on, and hands the answer back only when a fresh fingerprint is
identical.

The fingerprint is strict on purpose (a stale answer would be a wrong record; a miss only costs
the probe):

* the probe script itself, reprobox's version, the interpreter (path, real path, the real file's
  size, mtime, ctime and inode), its ``pyvenv.cfg``, its ``lib-dynload`` folder and files,
  the kernel release and the machine;
* the environment the probe runs with (every variable but the shell's own bookkeeping) and the
  working directory (a wrapper such as a pyenv shim picks the interpreter from it);
* every ``sys.path`` entry and site folder (so an added or removed distribution or ``.pth``),
  every ``.pth`` file, every metadata folder and the files in it;
* every file that a RECORD lists (bytecode aside, which the probe ignores too) and every folder
  holding one, so that a file edited in place, added or removed is seen (size, mtime, ctime,
  inode: ctime changes with any write and cannot be set back);
* the dynamic loader's cache, ``os-release``, the library folders the loader searches and every
  native library the answer resolved (so a library installed, removed or upgraded by the OS
  package manager or by hand is seen).

An answer is only used when none of those changed after its probe started (the ctime test git
uses for its index): a file written while the probe ran, or since, makes the next capture probe.
Full hashing of installed files (``REPROBOX_HASH_INSTALLED``) and interpreters that are scripts
(wrappers that may pick another Python) are never cached.

The folder holds one answer per checkout and interpreter; each write prunes it (:func:`prune`):
answers unused for 30 days go, then the least recently used beyond 64.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

from .. import __version__

#: Format of the cache file; a different one is ignored.
CACHE_VERSION = 1
#: Variables the shell itself keeps changing; the probe reads none of them.
_VOLATILE_ENV = frozenset({"OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "HISTCMD", "PS1"})
#: Folders the dynamic loader searches besides its cache.
_LIB_DIRS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
)
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/os-release", "/usr/lib/os-release", "/etc/ld.so.conf")
#: A change this recent to the probe's start may have been missed by it (coarse timestamps).
_RACY_NS = 2_000_000_000
#: The folder keeps one answer per checkout and interpreter (a torch environment's is ~2 MB):
#: answers unused for this long go, and past this many the least recently used go.
KEEP_SECONDS = 30 * 24 * 3600
KEEP_ANSWERS = 64
_ANSWER_SUFFIX = "-answer.json"


def usable(python: Path, environ: Mapping[str, str]) -> bool:
    """Whether an answer for ``python`` may be cached at all: not when every installed file is
    hashed, and only for a binary interpreter (a script may exec another Python each time)."""
    if environ.get("REPROBOX_HASH_INSTALLED", "").strip() not in ("", "0"):
        return False
    try:
        with open(os.path.realpath(python), "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _record_paths(record: str, site: str) -> Iterator[str]:
    """The files a RECORD lists, as paths under ``site`` (bytecode left out, as the probe does)."""
    try:
        with open(record, "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return
    prefix = site.rstrip("/") + "/"
    try:
        # newline="": csv's own reading of "\r\n" and "\r" line ends, as the probe reads them
        rows = list(csv.reader(io.StringIO(data, newline="")))
    except csv.Error:
        return  # not CSV: the probe checked none of its files either (and said so)
    for fields in rows:
        if not fields or not fields[0]:
            continue
        rel = fields[0]
        if rel.endswith((".pyc", ".pyo")) or "__pycache__" in rel:
            continue
        if rel[0] in "/." or "//" in rel or "/." in rel or "\\" in rel:
            yield os.path.normpath(os.path.join(site, rel))  # the rare path that needs it
        else:
            yield prefix + rel


def watched_paths(raw: Mapping[str, Any], python: Path, environ: Mapping[str, str]) -> list[str]:
    """Every file and folder the probe's answer ``raw`` was read from (see the module doc);
    ``environ`` is the probe's environment (its ``LD_LIBRARY_PATH`` folders are watched)."""
    paths: list[str] = [os.fspath(python), os.path.realpath(python), *_SYSTEM_FILES, *_LIB_DIRS]
    interp = raw.get("interpreter") or {}
    for key in ("prefix", "base_prefix"):
        prefix = interp.get(key)
        if isinstance(prefix, str) and prefix:
            paths.append(os.path.join(prefix, "pyvenv.cfg"))
    base = interp.get("base_prefix")
    version = interp.get("version_info") or []
    if isinstance(base, str) and len(version) >= 2:
        dynload = os.path.join(base, "lib", f"python{version[0]}.{version[1]}", "lib-dynload")
        paths.append(dynload)
        try:
            paths.extend(os.path.join(dynload, n) for n in sorted(os.listdir(dynload)))
        except OSError:
            pass
    for d in environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d:
            paths.append(d)
    folders: list[str] = [p for p in raw.get("sys_path") or [] if isinstance(p, str)]
    sites = [s for s in raw.get("site_dirs") or [] if isinstance(s, str)]
    if isinstance(raw.get("user_site"), str):
        sites.append(raw["user_site"])
    folders.extend(sites)
    paths.extend(folders)
    for site in sites:
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        paths.extend(os.path.join(site, n) for n in names if n.endswith(".pth"))
    dists = [*(raw.get("distributions") or []), *(raw.get("shadowed") or [])]
    for d in dists:
        meta = d.get("metadata_dir")
        if not isinstance(meta, str):
            continue
        paths.append(meta)
        try:
            paths.extend(os.path.join(meta, n) for n in sorted(os.listdir(meta)))
        except OSError:
            pass
        site = d.get("site")
        if isinstance(site, str) and d.get("has_record"):
            listed = list(_record_paths(os.path.join(meta, "RECORD"), site))
            paths.extend(listed)
            paths.extend(sorted({p.rpartition("/")[0] for p in listed}))
    native = (raw.get("native") or {}).get("libraries") or {}
    for lib in native.values():
        if isinstance(lib, dict):
            paths.extend(p for p in (lib.get("path"), lib.get("realpath")) if isinstance(p, str))
    return paths


def _environment_digest(python: Path, environ: Mapping[str, str], probe_file: Path) -> str:
    env = sorted((k, v) for k, v in environ.items() if k not in _VOLATILE_ENV)
    try:
        probe = hashlib.sha256(probe_file.read_bytes()).hexdigest()
    except OSError:
        probe = ""
    uname = os.uname()
    return hashlib.sha256(
        json.dumps(
            [
                CACHE_VERSION,
                __version__,
                probe,
                os.fspath(python),
                os.path.realpath(python),
                os.getcwd(),
                uname.release,
                uname.version,
                uname.machine,
                env,
            ],
            ensure_ascii=False,
        ).encode("utf-8", "surrogateescape")
    ).hexdigest()


def _group(paths: Iterable[str]) -> dict[str, list[str]]:
    """``paths`` as {folder: [names]} (the form the cache file keeps: smaller, and each folder
    is opened once to stat what it holds)."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        folder, _, name = p.rpartition("/")
        groups.setdefault(folder or "/", []).append(name)
    return groups


def _fingerprint(groups: Mapping[str, list[str]]) -> tuple[str, int]:
    """(digest of the stat of every path, the newest ctime among them). A missing path counts
    as such; the names are part of the digest, so a different list never matches."""
    h = hashlib.sha256()
    values = array("q")
    newest = 0
    stat = os.stat
    for folder, names in groups.items():
        h.update(
            folder.encode("utf-8", "surrogateescape")
            + b"\0"
            + "\0".join(names).encode("utf-8", "surrogateescape")
            + b"\n"
        )
        try:
            fd: Optional[int] = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            fd = None
        try:
            for name in names:
                try:
                    st = (
                        stat(name, dir_fd=fd)
                        if fd is not None and name
                        else stat(f"{folder}/{name}")
                    )
                except OSError:
                    values.extend((-1, -1, -1, -1, -1))
                    continue
                values.extend((st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
                if st.st_ctime_ns > newest:
                    newest = st.st_ctime_ns
        finally:
            if fd is not None:
                os.close(fd)
    h.update(values.tobytes())
    return h.hexdigest(), newest


class ResultCache:
    """The last probe answer for one interpreter, in ``path``: :meth:`load` returns it when
    nothing it depends on changed, :meth:`store` keeps a fresh one.

    A fresh answer is kept with the time its probe started, and nothing else: the capture that
    made it pays no extra stat of every file. The first :meth:`load` after it stats every
    watched path (which it has to do anyway) and accepts the answer only when none of them
    changed after the probe started (ctime, which every write, rename, link or removal in a
    folder sets and no user can set back); it then keeps that stat as the fingerprint, and every
    later load compares against it, whatever the clock does.
    """

    def __init__(
        self, path: Path, python: Path, environ: Mapping[str, str], probe_file: Path
    ) -> None:
        self.path = Path(path)
        self.python = Path(python)
        self.environ = dict(environ)
        self.env_digest = _environment_digest(self.python, environ, probe_file)
        self.started_ns = 0

    def load(self) -> Optional[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("version") != CACHE_VERSION
            or data.get("environment") != self.env_digest
            or not isinstance(data.get("raw"), dict)
        ):
            return None
        raw: dict[str, Any] = data["raw"]
        try:
            if isinstance(data.get("paths"), dict):  # a fingerprint was taken: compare
                digest, _newest = _fingerprint(data["paths"])
                if digest != data.get("fingerprint"):
                    return None
            else:  # the first load: nothing may have changed since the probe started
                started = data.get("probe_started_ns")
                if not isinstance(started, int) or not 0 < started <= time.time_ns():
                    return None
                paths = _group(watched_paths(raw, self.python, self.environ))
                digest, newest = _fingerprint(paths)
                if newest >= started - _RACY_NS:
                    return None
                self._write(
                    {
                        "version": CACHE_VERSION,
                        "environment": self.env_digest,
                        "fingerprint": digest,
                        "paths": paths,
                        "raw": raw,
                    }
                )
        except (TypeError, AttributeError, ValueError, KeyError):  # a damaged file: probe again
            return None
        try:
            os.utime(self.path)  # used now: what prune() goes by
        except OSError:
            pass
        native = raw.get("native")
        if isinstance(native, dict) and isinstance(native.get("cache_misses"), int):
            # the probe's own ELF cache statistics: this time nothing at all was parsed again
            native["cache_hits"] = int(native.get("cache_hits") or 0) + native["cache_misses"]
            native["cache_misses"] = 0
        return raw

    def probe_starts(self) -> None:
        """Called just before the probe runs: a later change makes its answer unusable."""
        self.started_ns = time.time_ns()

    def store(self, raw: Mapping[str, Any]) -> None:
        """Keep ``raw``, the probe's answer as it is now, with the time its probe started."""
        if not self.started_ns:
            return
        self._write(
            {
                "version": CACHE_VERSION,
                "environment": self.env_digest,
                "probe_started_ns": self.started_ns,
                "raw": raw,
            }
        )

    def _write(self, data: Mapping[str, Any]) -> None:
        """Atomically; a cache that cannot be written only costs speed."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            text = json.dumps(data, ensure_ascii=False)
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
        except (OSError, ValueError, TypeError):
            tmp.unlink(missing_ok=True)
            return
        prune(self.path.parent, keep=self.path.name)


def prune(folder: Path, *, keep: str = "", now: Optional[float] = None) -> int:
    """Remove the answers of ``folder`` unused for :data:`KEEP_SECONDS`, then the least recently
    used beyond :data:`KEEP_ANSWERS` (never ``keep``, the one just written), and temporary files
    a killed capture left (older than a day). Only plain files named as this module names them
    go; returns how many. Each costs one more probe at most, if its checkout comes back."""
    now = time.time() if now is None else now
    answers: list[tuple[float, str]] = []
    gone = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                is_tmp = name.endswith(".tmp") and _ANSWER_SUFFIX in name
                if name == keep or not (name.endswith(_ANSWER_SUFFIX) or is_tmp):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                age = now - st.st_mtime
                if age > (86400 if is_tmp else KEEP_SECONDS):
                    gone += _unlink(entry.path)
                elif not is_tmp:
                    answers.append((st.st_mtime, entry.path))
    except OSError:
        return gone
    answers.sort(reverse=True)
    for _mtime, path in answers[max(KEEP_ANSWERS - 1, 0) :]:
        gone += _unlink(path)
    return gone


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except OSError:
        return 0
