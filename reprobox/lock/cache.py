"""The lock's on-disk cache: one SQLite file under ``cache_dir`` (``v1/index.sqlite``).

It holds the files of a pinned release on one remote index — hashes of a published file never
change, so these are kept forever and a warm lock of an unchanged environment makes no request
at all — and remembers for :data:`NEGATIVE_TTL` seconds that an index lacks a release (a TTL
rather than revalidation: the release may be uploaded later). Whole project pages are not kept:
a large project's page is megabytes, of which a lock uses one release. It also remembers the
sha256 of local find-links files by size and mtime (a torch wheel is 200 MB).

Nothing in it is a credential: sources are keyed by a digest of their URL with credentials
stripped, and file URLs are stored stripped.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from ..redact import strip_url_credentials
from .cachedir import CACHE_VERSION, cache_file, default_cache_dir
from .dists import DistFile, Lookup, Source

__all__ = ["CACHE_VERSION", "Cache", "default_cache_dir"]

NEGATIVE_TTL = 600.0


def _key(text: str) -> str:
    return hashlib.sha256(strip_url_credentials(text).encode()).hexdigest()[:32]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    source TEXT NOT NULL, project TEXT NOT NULL, version TEXT NOT NULL,
    found INTEGER NOT NULL, others INTEGER NOT NULL, files TEXT, at REAL NOT NULL,
    PRIMARY KEY (source, project, version));
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL);
"""


class Cache:
    """One SQLite file: read in one query per source, written in one transaction per lock.

    A file per entry cost a file creation per release, which on some file systems (VM disks,
    network homes) is most of a cold lock's CPU time; SQLite also gives concurrent reprobox
    processes safe access. ``synchronous=OFF``: a crash may lose the last entries, and a lost
    entry is only fetched again. A cache that cannot be opened (read-only home, damaged file,
    Python built without sqlite3) is simply not used.
    """

    def __init__(self, root: Optional[Path]) -> None:
        self.path = None if root is None else cache_file(Path(root))
        self._db = None
        self._lock = threading.Lock()
        self._opened = False

    def _conn(self):  # -> Optional[sqlite3.Connection]
        if self._opened:
            return self._db
        self._opened = True
        if self.path is None:
            return None
        try:
            import sqlite3  # lazy: optional, a Python built without it locks uncached

            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                str(self.path), timeout=5.0, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        except Exception:  # noqa: BLE001 - sqlite3 missing, read-only or damaged: no cache
            self._db = None
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db, self._opened = None, False

    def _rows(
        self,
        source: Source,
        wanted: Sequence[tuple[str, str]],
        columns: str,
        where: str = "",
        args: Sequence[object] = (),
    ) -> list[tuple]:
        """``columns`` of the release rows of ``wanted`` on ``source`` (and ``where``, with its
        ``args``), in chunks of 400 releases; none when the cache is missing or damaged."""
        with self._lock:
            db = self._conn()
            if db is None or not wanted:
                return []
            src = _key(source.location)
            rows: list[tuple] = []
            try:
                for i in range(0, len(wanted), 400):
                    chunk = wanted[i : i + 400]
                    marks = ",".join("(?,?)" for _ in chunk)
                    rows += db.execute(
                        f"SELECT {columns} FROM releases WHERE source = ? "
                        f"AND (project, version) IN (VALUES {marks}){where}",
                        [src, *(x for pv in chunk for x in pv), *args],
                    ).fetchall()
            except Exception:  # noqa: BLE001 - a damaged cache is a miss
                return []
        return rows

    def get_releases(
        self, source: Source, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Lookup]:
        """The cached lookups among ``wanted`` on ``source`` (fresh negatives included)."""
        rows = self._rows(source, wanted, "project, version, found, others, files, at")
        out: dict[tuple[str, str], Lookup] = {}
        now = time.time()
        for project, version, found, others, files, at in rows:
            try:
                if files:
                    dists = tuple(DistFile.from_cache(f, source) for f in json.loads(files))
                    out[(project, version)] = Lookup(source, True, dists, int(others))
                elif now - float(at) < NEGATIVE_TTL:
                    out[(project, version)] = Lookup(source, bool(found), (), int(others))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def cached_keys(
        self, source: Source, wanted: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which of ``wanted`` :meth:`get_releases` answers on ``source``, without reading their
        files: what is left to ask, for a tenth of the cost of the answers (1 ms against 10-13 ms
        for the 117 releases of a data-science environment, ~1,900 files). An entry too damaged
        to read counts here; :meth:`get_releases` leaves it out, so the lookup asks for it."""
        fresh = time.time() - NEGATIVE_TTL
        rows = self._rows(
            source, wanted, "project, version", " AND (files <> '' OR at > ?)", [fresh]
        )
        return {(project, version) for project, version in rows}

    @staticmethod
    def row(project: str, version: str, lk: Lookup) -> tuple:
        """The cache row of one lookup, for :meth:`put_rows` (encoding it is the costly part
        of a write: the lookup threads do it as each answer arrives)."""
        return (
            _key(lk.source.location),
            project,
            version,
            int(lk.project_found),
            lk.other_versions,
            json.dumps([f.to_cache() for f in lk.files]) if lk.files else None,
            time.time(),
        )

    def put_rows(self, rows: Sequence[tuple]) -> None:
        """Write rows made by :meth:`row`, in one transaction."""
        with self._lock:
            db = self._conn()
            if db is None or not rows:
                return
            try:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO releases VALUES (?,?,?,?,?,?,?)", rows)
                db.execute("COMMIT")
            except Exception:  # noqa: BLE001 - a cache that cannot be written only costs speed
                try:
                    db.execute("ROLLBACK")
                except Exception:  # noqa: BLE001
                    pass

    def file_hash(self, path: str) -> Optional[str]:
        """sha256 of a local file, remembered by size and mtime (a torch wheel is 200 MB)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        with self._lock:
            db = self._conn()
            if db is not None:
                try:
                    row = db.execute(
                        "SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path = ?", (path,)
                    ).fetchone()
                    if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                        return str(row[2])
                except Exception:  # noqa: BLE001
                    pass
        digest = _sha256_file(path)
        with self._lock:
            db = self._conn()
            if db is not None:
                try:
                    db.execute(
                        "INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?)",
                        (path, st.st_size, st.st_mtime_ns, digest),
                    )
                except Exception:  # noqa: BLE001
                    pass
        return digest


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()
