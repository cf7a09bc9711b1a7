"""Simple-repository client: the files of one release, from every index and find-links location.

Pages are asked for as PEP 691 JSON, with PEP 503 HTML accepted as the fallback (file:// indexes
and many mirrors only speak HTML). Queries run in a thread pool over the keep-alive
:class:`~reprobox.lock.transport.Transport`.

Remote answers go through the release cache (:mod:`.cache`); local sources (folders,
``file://`` indexes) are read each time: that is cheaper than a cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

from ..errors import IndexUnavailable
from ..secrets import strip_url_credentials
from .cache import Cache, default_cache_dir
from .config import IndexConfig
from .dists import DistFile, Lookup, ReleaseFilter, Source, parse_filename
from .pages import parse_html_page, parse_json_page
from .transport import Transport

__all__ = ["IndexClient", "Lookup", "default_cache_dir"]

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


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
        max_workers: int = 32,
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
