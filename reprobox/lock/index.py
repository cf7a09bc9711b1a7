"""Simple-repository client: the files of one release, from every index and find-links location.

Pages are asked for as PEP 691 JSON, with PEP 503 HTML accepted as the fallback (file:// indexes
and many mirrors only speak HTML). Queries run in a thread pool over the keep-alive
:class:`~reprobox.lock.transport.Transport`.

The cache (``cache_dir``/v1/index.sqlite, see :class:`Cache`) holds:

* the files of a pinned release on one remote index. Hashes of a published file never change, so
  these are kept forever and a warm lock of an unchanged environment makes no request at all. An
  index that lacks the release is remembered for :data:`NEGATIVE_TTL` seconds (a TTL rather than
  revalidation: the release may be uploaded later). Whole project pages are not kept: a large
  project's page is megabytes, of which a lock uses one release;
* sha256 of local find-links files, keyed by size and mtime.

Local sources (folders, ``file://`` indexes) are read each time: that is cheaper than a cache.

Nothing in the cache is a credential: keys are digests of URLs with credentials stripped.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

from ..errors import IndexUnavailable
from ..secrets import strip_url_credentials
from .config import IndexConfig
from .dists import DistFile, ReleaseFilter, Source, parse_filename
from .pages import parse_html_page, parse_json_page, release_items
from .transport import Transport

__all__ = ["Cache", "IndexClient", "Lookup", "default_cache_dir", "parse_html_page",
           "parse_json_page", "release_items"]

NEGATIVE_TTL = 600.0
CACHE_VERSION = "v1"
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


@dataclass(frozen=True)
class Lookup:
    """What one source says about ``project==version``."""

    source: Source
    project_found: bool
    files: tuple[DistFile, ...] = ()
    other_versions: int = 0  # how many other versions the project has there (for messages)


# --------------------------------------------------------------------------- cache


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
        self.path = None if root is None else Path(root) / CACHE_VERSION / "index.sqlite"
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
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False,
                                 isolation_level=None)
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

    def get_releases(self, source: Source,
                     wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lookup]:
        """The cached lookups among ``wanted`` on ``source`` (fresh negatives included)."""
        with self._lock:
            db = self._conn()
            if db is None or not wanted:
                return {}
            src = _key(source.location)
            rows = []
            try:
                for i in range(0, len(wanted), 400):
                    chunk = wanted[i:i + 400]
                    marks = ",".join("(?,?)" for _ in chunk)
                    args = [x for pv in chunk for x in pv]
                    rows += db.execute(
                        "SELECT project, version, found, others, files, at FROM releases "
                        f"WHERE source = ? AND (project, version) IN (VALUES {marks})",
                        [src, *args]).fetchall()
            except Exception:  # noqa: BLE001 - a damaged cache is a miss
                return {}
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

    def put_releases(self, project_lookups: Sequence[tuple[str, str, Lookup]]) -> None:
        with self._lock:
            db = self._conn()
            if db is None or not project_lookups:
                return
            now = time.time()
            rows = [
                (_key(lk.source.location), project, version, int(lk.project_found),
                 lk.other_versions,
                 json.dumps([f.to_cache() for f in lk.files]) if lk.files else None, now)
                for project, version, lk in project_lookups
            ]
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
                    row = db.execute("SELECT size, mtime_ns, sha256 FROM file_hashes "
                                     "WHERE path = ?", (path,)).fetchone()
                    if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                        return str(row[2])
                except Exception:  # noqa: BLE001
                    pass
        digest = _sha256_file(path)
        with self._lock:
            db = self._conn()
            if db is not None:
                try:
                    db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?)",
                               (path, st.st_size, st.st_mtime_ns, digest))
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


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reprobox" / "index"


# --------------------------------------------------------------------------- client


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        return unquote(urlsplit(location).path)
    return os.path.abspath(os.path.expanduser(location))


def _file_url(path: str) -> str:
    return "file://" + quote(os.path.abspath(path))


class IndexClient:
    """Looks releases up on every configured source, in parallel, through the cache."""

    def __init__(
        self,
        config: IndexConfig,
        cache_dir: Optional[Path] = None,
        *,
        transport: Optional[Transport] = None,
        max_workers: int = 16,
    ) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.cache = Cache(cache_dir)
        self.transport = transport or Transport(config)
        self.max_workers = max_workers
        self._memo: dict[str, Future] = {}
        self._memo_lock = threading.Lock()
        self.requests = 0  # network requests made (for benchmarks and tests)

    def sources(self) -> tuple[Source, ...]:
        out = [Source(u, "index", i) for i, u in enumerate(self.config.index_urls)]
        base = len(out)
        out += [Source(f, "find-links", base + i) for i, f in enumerate(self.config.find_links)]
        return tuple(out)

    def close(self) -> None:
        self.transport.close()
        self.cache.close()

    def prewarm(self, wanted: Sequence[tuple[str, str]]) -> None:
        """Start connecting to the first remote source now (see :meth:`Transport.prewarm`),
        one connection per release the cache cannot answer, up to the pool size."""
        for source in self.sources():
            if source.is_local:
                continue
            misses = len(wanted) - len(self.cache.get_releases(source, wanted))
            if misses > 0:
                self.transport.prewarm(source.location, min(self.max_workers, misses))
            return

    # ------------------------------------------------------------------ public

    def lookup_many(
        self,
        wanted: Sequence[tuple[str, str]],
        done: Optional[Callable[[tuple[str, str], Sequence[Lookup]], bool]] = None,
    ) -> dict[tuple[str, str], list[Lookup]]:
        """``(project, version)`` -> one :class:`Lookup` per source asked, in source order.

        Sources are asked in pip's order, all packages of a source at once (remote ones in the
        thread pool, in the caller's order: put the large pages first); ``done(wanted, lookups)``
        says when a package needs no further source (its installed file was found), so the
        later sources are only asked about the packages the earlier ones did not settle.
        Without ``done`` every source is asked about everything. Remote answers go through the
        release cache.

        An unreachable source raises :class:`IndexUnavailable` once the queries in flight have
        finished (the cache keeps what did arrive).
        """
        found: dict[tuple[str, str], list[Lookup]] = {w: [] for w in wanted}
        pending = list(dict.fromkeys(wanted))
        pool: Optional[ThreadPoolExecutor] = None
        try:
            for source in self.sources():
                if not pending:
                    break
                if source.is_local:
                    # folders and file:// indexes cost no network: read them here
                    results = [self.lookup(source, p, v) for p, v in pending]
                else:
                    if pool is None:
                        pool = ThreadPoolExecutor(max_workers=max(1, min(self.max_workers,
                                                                         len(pending))))
                    results = self._ask_remote(source, pending, pool)
                for w, lookup in zip(pending, results):
                    found[w].append(lookup)
                if done is not None:
                    pending = [w for w in pending if not done(w, found[w])]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return found

    def _ask_remote(self, source: Source, pending: Sequence[tuple[str, str]],
                    pool: ThreadPoolExecutor) -> list[Lookup]:
        cached = self.cache.get_releases(source, pending)
        misses = [w for w in pending if w not in cached]
        futures = {w: pool.submit(self.lookup, source, *w) for w in misses}
        fetched: dict[tuple[str, str], Lookup] = {}
        error: Optional[IndexUnavailable] = None
        for w, fut in futures.items():
            try:
                fetched[w] = fut.result()
            except IndexUnavailable as exc:
                error = error or exc
        self.cache.put_releases([(p, v, lk) for (p, v), lk in fetched.items()])
        if error is not None:
            raise error
        return [cached.get(w) or fetched[w] for w in pending]

    def lookup(self, source: Source, project: str, version: str) -> Lookup:
        """The files of ``project==version`` on one source (``project`` canonical), uncached."""
        keep = ReleaseFilter(project, version)
        if source.kind == "index":
            found, files = self._index_files(source, project, keep)
        else:
            found, files = self._find_links_files(source, project, keep)
        return Lookup(source, found, tuple(self._with_local_hashes(files)),
                      len(keep.other_versions))

    def fill_hash(self, f: DistFile) -> DistFile:
        """``f`` with a sha256, downloaded and hashed if the index gave none (old mirrors)."""
        if f.sha256:
            return f
        if f.path:
            digest = self.cache.file_hash(f.path)
            if digest:
                return _with(f, sha256=digest)
        resp = self._get(f.url, accept="*/*")
        if resp.status != 200:
            raise IndexUnavailable(
                f"cannot download {strip_url_credentials(f.url)} to hash it (HTTP {resp.status})",
                "make the index publish sha256 hashes, or check access to it; "
                "run `reprobox lock EXP` when it answers",
            )
        return _with(f, sha256=hashlib.sha256(resp.body).hexdigest(), size=len(resp.body))

    # ------------------------------------------------------------------ sources

    def _index_files(self, source: Source, project: str,
                     keep: ReleaseFilter) -> tuple[bool, list[DistFile]]:
        url = source.location.rstrip("/") + f"/{project}/"
        if source.is_local:
            # pip reads a file:// project "page" as the index.html inside its folder
            page = os.path.join(_local_path(url), "index.html")
            try:
                with open(page, "rb") as fh:
                    body = fh.read()
            except (FileNotFoundError, NotADirectoryError):
                return False, []
            except OSError as exc:
                raise IndexUnavailable(
                    f"cannot read the local index page {page}: {exc.strerror or exc}",
                    "fix its permissions or remove the index from pip's configuration",
                ) from None
            return True, parse_html_page(body, _file_url(page), source, keep)
        got = self._page(url)
        if got is None:
            return False, []
        final_url, ctype, body = got
        if "json" in ctype:
            return True, parse_json_page(body, final_url, source, keep)
        return True, parse_html_page(body, final_url, source, keep)

    def _find_links_files(self, source: Source, project: str,
                          keep: ReleaseFilter) -> tuple[bool, list[DistFile]]:
        files = self._memoized(f"find-links {source.location}",
                               lambda: self._list_find_links(source))
        found = False
        mine = []
        for f in files:
            parsed = parse_filename(f.filename, project)
            if parsed is None or parsed.name != project:
                continue
            found = True
            if keep(f.filename):
                mine.append(f)
        return found, mine

    def _list_find_links(self, source: Source) -> list[DistFile]:
        loc = source.location
        if source.is_local:
            path = _local_path(loc)
            if os.path.isdir(path):
                out = []
                for entry in sorted(os.scandir(path), key=lambda e: e.name):
                    if entry.is_file():
                        out.append(DistFile(entry.name, _file_url(entry.path), source,
                                            size=entry.stat().st_size, path=entry.path))
                return out
            if os.path.isfile(path):
                if path.endswith((".html", ".htm")):
                    with open(path, "rb") as fh:
                        return parse_html_page(fh.read(), _file_url(path), source)
                return [DistFile(os.path.basename(path), _file_url(path), source,
                                 size=os.path.getsize(path), path=path)]
            return []  # pip ignores a missing find-links folder with a warning; so do we
        got = self._page(loc)
        if got is None:
            return []
        final_url, _ctype, body = got
        return parse_html_page(body, final_url, source)

    def _with_local_hashes(self, files: Iterable[DistFile]) -> list[DistFile]:
        out = []
        for f in files:
            if f.path and (not f.sha256 or f.size is None):
                try:
                    size = os.stat(f.path).st_size
                except OSError:
                    out.append(f)  # listed but absent: pip would fail on it too; keep the link
                    continue
                digest = f.sha256 or self.cache.file_hash(f.path)
                f = _with(f, sha256=digest, size=size)
            out.append(f)
        return out

    # ------------------------------------------------------------------ HTTP + page cache

    def _memoized(self, key: str, fn: Callable[[], list[DistFile]]) -> list[DistFile]:
        with self._memo_lock:
            fut = self._memo.get(key)
            owner = fut is None
            if owner:
                fut = Future()
                self._memo[key] = fut
        assert fut is not None
        if owner:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter, then re-raised
                fut.set_exception(exc)
                raise
        return fut.result()

    def _get(self, url: str, accept: str = ACCEPT, extra: Optional[dict] = None):
        self.requests += 1
        return self.transport.get(url, {"Accept": accept, **(extra or {})})

    def _page(self, url: str) -> Optional[tuple[str, str, bytes]]:
        """(final url, content type, body), or None when the project is not there (404/410)."""
        resp = self._get(url)
        if resp.status in (404, 410):
            return None
        if resp.status in (401, 403):
            raise IndexUnavailable(
                f"{strip_url_credentials(url)} refused access (HTTP {resp.status})",
                "give pip the index credentials (in the index URL in pip's configuration, or in "
                "~/.netrc for that host); reprobox reads them from there and never writes them",
            )
        if resp.status != 200:
            raise IndexUnavailable(
                f"{strip_url_credentials(url)} answered HTTP {resp.status}",
                "check the index URL in pip's configuration (`pip config list`), or run "
                "`reprobox lock EXP` later",
            )
        ctype = resp.headers.get("content-type", "text/html").split(";")[0].strip().lower()
        return resp.url, ctype, resp.body


def _with(f: DistFile, *, sha256: Optional[str] = None, size: Optional[int] = None) -> DistFile:
    from dataclasses import replace

    hashes = {**f.hashes, "sha256": sha256} if sha256 else f.hashes
    return replace(f, hashes=hashes, size=size if size is not None else f.size)
