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
import queue
import threading
import time
from dataclasses import replace
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import wait as wait_futures
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

from ..errors import IndexUnavailable
from ..names import canonical_name
from ..redact import strip_url_credentials
from .cache import Cache, default_cache_dir
from .config import ACCEPT, IndexConfig, project_page
from .dists import DistFile, Lookup, ReleaseFilter, Source, parse_filename
from .pages import parse_html_page, parse_json_page
from .transport import START_CONNECTIONS, Transport

if TYPE_CHECKING:
    from .curlpages import CurlPages

__all__ = ["IndexClient", "Lookup", "default_cache_dir"]

#: Lookup threads (one connection each) a lock starts with. An index that answers fast
#: (a mirror on the local network) is limited by bandwidth, not latency: there, more
#: connections only add TLS handshakes and GIL contention (measured: 8 finished a 114-page lock
#: ~25 ms sooner than 32, and 4 sooner than 8: a cold lock of the data-science set 0.35 s ->
#: 0.31 s, 15 interleaved pairs; the 250-page torch set 0.71 s either way).
START_WORKERS = START_CONNECTIONS
#: A request whose first byte takes longer than this is slow; once most of the first answers
#: are, the index is latency-bound (the Internet) and the pool grows to ``max_workers``.
SLOW_FIRST_BYTE = 0.010
SLOW_TO_GROW = 4


def page_url(source: Source, project: str) -> str:
    """The URL of ``project``'s page on the index ``source`` (``project`` normalized)."""
    return project_page(source.location, project)


def _by_page(source: Source, wanted: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """``wanted`` releases by the URL of their project's page on ``source``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for w in wanted:
        out.setdefault(page_url(source, w[0]), []).append(w)
    return out


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        return unquote(urlsplit(location).path)
    return os.path.abspath(os.path.expanduser(location))


def _file_url(path: str) -> str:
    return "file://" + quote(os.path.abspath(path))


#: When the lookup child stores curl's answers for the lock to read ahead: every this many
#: releases, or this many seconds after the last batch (the last pages, the largest, come
#: one by one): the lock reads each batch while the rest arrive, not all of them at the end.
STORE_EVERY = (24, 0.01)


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
        self.transport.on_first_byte = self._observe_latency
        self.max_workers = max_workers
        self._slow = self._fast = 0
        self._memo: dict[str, Future] = {}
        self._memo_lock = threading.Lock()
        self._workers: Optional[_Workers] = None
        self._pool_lock = threading.Lock()
        self._early: dict[tuple[Source, tuple[str, str]], Future] = {}
        self._hasher: Optional[ThreadPoolExecutor] = None
        self._hashing: dict[str, Future] = {}  # path -> its sha256, hashed ahead (see start)
        #: (source location, (project, version)) -> the cached answer, read while the lookup
        #: child was still storing others (:meth:`read_ahead`)
        self._read: dict[tuple[str, tuple[str, str]], Lookup] = {}
        self.requests = 0  # network requests made (for benchmarks and tests)

    def sources(self) -> tuple[Source, ...]:
        out = [Source(u, "index", i) for i, u in enumerate(self.config.index_urls)]
        base = len(out)
        out += [Source(f, "find-links", base + i) for i, f in enumerate(self.config.find_links)]
        return tuple(out)

    def close(self) -> None:
        self._stop_workers()
        if self.transport.pages is not None:
            self.transport.pages.close()
        if self._hasher is not None:
            # a hash still running finishes first: it writes to the cache closed below
            self._hasher.shutdown(wait=True, cancel_futures=True)
            self._hasher = None
        self.transport.close()
        self.cache.close()

    def prewarm(self, wanted: Sequence[tuple[str, str]], *, then_start: bool = False) -> None:
        """Start the lookup threads now, each opening a connection to the first remote source
        (name lookup, TCP, TLS, CA bundle loading), one per release the cache cannot answer,
        up to the pool size, so that connections are ready when the first requests go out.

        This returns at once: the threads are started from a background thread, because on a
        busy interpreter each ``Thread.start`` waits for the GIL, and 32 of them held the
        caller for tens of milliseconds. Failures are ignored here: the request that needs
        the host reports them properly. ``then_start``: :meth:`start` follows, and where it
        will hand the pages to curl, no connection is opened here.
        """
        for source in self.sources():
            if source.is_local:
                continue
            misses = len(set(wanted) - self.cache.cached_keys(source, wanted))
            if misses > 0 and then_start and self._curl_may_fetch(source):
                return  # start() hands the pages to curl: no connections of its own
            if misses > 0 and self._workers is None:
                threading.Thread(
                    target=self.transport.prewarm_context,
                    args=(source.location,),
                    daemon=True,
                    name="reprobox-tls-context",
                ).start()
                self._workers = _Workers(
                    min(self.max_workers, START_WORKERS, misses),
                    partial(self.transport.prewarm_one, source.location),
                )
            return

    def start(self, wanted: Sequence[tuple[str, str]]) -> None:
        """Send now the queries that :meth:`lookup_many` will make first, so that the caller
        works while they run; ``lookup_many`` then collects them. Only when the first source is
        remote: every package is asked there, whatever ``done`` will say. The names and
        versions must be checked already (they go into URLs).
        """
        sources = self.sources()
        if not sources or sources[0].is_local:
            return
        source = sources[0]
        pending = list(dict.fromkeys(wanted))
        cached = self.cache.cached_keys(source, pending)
        misses = [w for w in pending if w not in cached and (source, w) not in self._early]
        if misses and not self._start_pages(source, misses):
            pool = self._pool(len(misses))
            for w in misses:
                self._early[(source, w)] = pool.submit(self._fetch, source, *w)
        self._hash_ahead(pending)

    def _curl_may_fetch(self, source: Source) -> bool:
        """Whether :meth:`start` would hand ``source``'s pages to curl (:mod:`.curlpages`)."""
        from .curlpages import curl_available, usable  # lazy: only for a remote source

        return (
            self.transport.pages is None
            and usable(self.config, page_url(source, "x"))
            and curl_available()
        )

    def _start_pages(self, source: Source, misses: Sequence[tuple[str, str]]) -> bool:
        """curl started on the pages of ``misses`` on ``source``, and one future per release
        in :attr:`_early`, answered as curl finishes each page (or by the lookup threads,
        for a page curl did not fetch cleanly); False where curl is not used."""
        if not self._curl_may_fetch(source):
            return False
        from .curlpages import CurlPages  # lazy: as above

        by_url = _by_page(source, misses)
        pages = CurlPages.start(self.config, list(by_url))
        if pages is None:
            return False
        self.transport.pages = pages
        futures: dict[tuple[str, str], Future] = {w: Future() for w in misses}
        for w, fut in futures.items():
            self._early[(source, w)] = fut

        def settle(w: tuple[str, str], fut: Future) -> None:
            if not fut.set_running_or_notify_cancel():
                return  # the lookups ended without it
            try:
                fut.set_result(self._fetch(source, *w))
            except BaseException as exc:  # noqa: BLE001 - handed to the lookup that waits
                fut.set_exception(exc)

        handed: set[tuple[str, str]] = set()

        def fallback(w: tuple[str, str], fut: Future) -> None:
            if w not in handed and not fut.done():  # done: cancelled, the lookups ended
                handed.add(w)
                self._pool(len(misses)).submit(settle, w, fut)

        def collect() -> None:
            try:
                for url in pages.finished():
                    for w in by_url.get(url, ()):
                        if pages.ready(url):
                            handed.add(w)
                            settle(w, futures[w])
                        else:
                            fallback(w, futures[w])
            except Exception:  # noqa: BLE001 - curl's output unreadable: the threads ask
                pass
            finally:
                for w, fut in futures.items():
                    fallback(w, fut)
                pages.close()

        threading.Thread(target=collect, daemon=True, name="reprobox-curl-pages").start()
        return True

    def prefetch(
        self,
        wanted: Sequence[tuple[str, str]],
        *,
        connected: bool = False,
        pages: Optional[CurlPages] = None,
        stored: Optional[Callable[[], None]] = None,
    ) -> None:
        """Ask the first source, when it is remote, about each of ``wanted`` the cache cannot
        answer, and keep the answers in the cache; hash the files of ``wanted`` that local
        find-links folders hold into it too, meanwhile. A :meth:`lookup_many` of the same
        releases then makes none of these requests and hashes none of these files
        (:mod:`.early` runs this in a process of its own). Raises :class:`IndexUnavailable`
        like :meth:`lookup_many`. ``connected``: the transport's connections to that source
        are being opened already (:meth:`.transport.Transport.connect_ahead`). ``pages``:
        curl is fetching the first source's pages (:mod:`.curlpages`, served through the
        transport); each is read as curl finishes it, and what curl did not fetch cleanly is
        asked as usual. ``stored()`` is called each time some of curl's answers are in the
        cache (:data:`STORE_EVERY`), for the lock to read them while the others arrive."""
        sources = self.sources()
        if not sources or sources[0].is_local:
            return
        pending = list(dict.fromkeys(wanted))
        # what the cache answers, the lock reads itself: only whether it does is read here
        cached = self.cache.cached_keys(sources[0], pending)
        misses = [w for w in pending if w not in cached]
        if misses and not connected and pages is None:
            self.prewarm(misses)
        hashing = threading.Thread(
            target=lambda: [self.cache.file_hash(p) for p in self._local_files(pending)],
            daemon=True,
            name="reprobox-hash",
        )
        hashing.start()
        try:
            if misses and pages is not None:
                misses = self._take_pages(sources[0], misses, pages, stored)
            if misses:
                self._ask_remote(sources[0], misses, lambda _w, _lookup: None)
        finally:
            self._stop_workers()
            hashing.join()

    def _take_pages(
        self,
        source: Source,
        misses: Sequence[tuple[str, str]],
        pages: CurlPages,
        stored: Optional[Callable[[], None]] = None,
    ) -> list[tuple[str, str]]:
        """Look ``misses`` up on ``source`` from the pages curl fetches, each as curl finishes
        it, into the cache; the ones it did not answer, for the usual client. With
        ``stored``, the answers go into the cache as they come (:data:`STORE_EVERY`), each
        batch followed by ``stored()``; else in one transaction at the end."""
        if self.transport.pages is not pages:  # served through the transport, or not at all
            return list(misses)
        by_url = _by_page(source, misses)
        answered: set[tuple[str, str]] = set()
        rows: list[tuple] = []
        last = time.monotonic()
        try:
            for url in pages.finished():
                for w in by_url.get(url, ()):
                    if not pages.ready(url):
                        continue
                    lookup, row = self._fetch(source, *w)
                    rows.append(row)
                    answered.add(w)
                now = time.monotonic()
                if (
                    stored is not None
                    and rows
                    and (len(rows) >= STORE_EVERY[0] or now - last >= STORE_EVERY[1])
                ):
                    self.cache.put_rows(rows)
                    rows, last = [], now
                    stored()
        finally:
            self.cache.put_rows(rows)
        return [w for w in misses if w not in answered]

    def _hash_ahead(self, wanted: Sequence[tuple[str, str]]) -> None:
        """Hash, on a thread of its own, the files of ``wanted`` releases that local find-links
        folders hold: a folder names no hashes, and a torch wheel takes ~0.1 s to hash. The
        remote answers arrive meanwhile (hashlib releases the GIL while it hashes). A release
        the index settles first never reads the digest, which is only kept in the cache; the
        hashes not started when the lookups end are dropped."""
        if not wanted or not any(s.kind == "find-links" and s.is_local for s in self.sources()):
            return
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprobox-hash")
        self._hasher.submit(self._queue_hashes, wanted)

    def _queue_hashes(self, wanted: Sequence[tuple[str, str]]) -> None:
        hasher = self._hasher
        if hasher is None:
            return
        for path in self._local_files(wanted):
            with self._memo_lock:
                if path in self._hashing:
                    continue
                try:
                    self._hashing[path] = hasher.submit(self.cache.file_hash, path)
                except RuntimeError:  # shut down: the lookups are over
                    return

    def _local_files(self, wanted: Sequence[tuple[str, str]]) -> list[str]:
        """The files of ``wanted`` releases that local find-links folders hold with no hash
        given, folder by folder; in each, those with a local version label first (torch
        2.5.1+cpu is on no public index: that file is the likeliest to be needed)."""
        versions: dict[str, list[str]] = {}
        for project, version in wanted:
            versions.setdefault(project, []).append(version)
        out: list[str] = []
        for source in self.sources():
            if source.kind != "find-links" or not source.is_local:
                continue
            try:
                files = self._memoized(
                    f"find-links {source.location}", partial(self._list_find_links, source)
                )
            except OSError:
                continue  # the lookup itself reports an unreadable folder
            matching: list[tuple[bool, str]] = []
            for f in files:
                if not f.path or f.sha256:
                    continue
                if f.filename.endswith(".whl"):
                    name = f.filename.split("-", 1)[0]
                else:
                    parsed = parse_filename(f.filename)
                    if parsed is None:
                        continue
                    name = parsed.name
                project = canonical_name(name)
                if any(ReleaseFilter(project, v)(f.filename) for v in versions.get(project, ())):
                    matching.append(("+" not in f.filename, f.path))
            matching.sort(key=lambda m: m[0])
            out += [path for _public, path in matching]
        return out

    def _file_hash(self, path: str) -> Optional[str]:
        """The sha256 of a local file: the one hashed ahead when there is one (waiting for it
        if it is running), else hashed here."""
        with self._memo_lock:
            fut = self._hashing.get(path)
        if fut is not None and (fut.running() or fut.done()):
            try:
                return fut.result()
            except Exception:  # noqa: BLE001 - hashed again below, where an error is reported
                pass
        elif fut is not None:
            fut.cancel()  # still queued behind others: quicker here
        return self.cache.file_hash(path)

    def _stop_workers(self) -> None:
        early, self._early = list(self._early.values()), {}
        for fut in early:  # started but never collected: not needed any more
            fut.cancel()
        with self._memo_lock:
            ahead = list(self._hashing.values())
        for fut in ahead:  # hashes not started by the end of the lookups: not needed
            fut.cancel()
        if self._workers is not None:  # the threads end with the call, as a pool would
            self._workers.shutdown()
            self._workers = None

    def _pool(self, jobs: int) -> _Workers:
        with self._pool_lock:  # curl's collecting thread may ask for it too
            if self._workers is None:
                self._workers = _Workers(max(1, min(self.max_workers, START_WORKERS, jobs)))
            return self._workers

    def _observe_latency(self, seconds: float) -> None:
        """Grow the pool to ``max_workers`` once the index proves latency-bound (called from
        the lookup threads; the counts are approximate, which is all this needs)."""
        if seconds > SLOW_FIRST_BYTE:
            self._slow += 1
        else:
            self._fast += 1
        workers = self._workers
        if workers is not None and self._slow >= SLOW_TO_GROW and self._slow > self._fast:
            workers.grow(self.max_workers)

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
        settled: set[tuple[str, str]] = set()

        def take(w: tuple[str, str], lookup: Lookup) -> None:
            # judged as each answer arrives: the caller's work overlaps the slowest pages
            found[w].append(lookup)
            if done is not None and done(w, found[w]):
                settled.add(w)

        try:
            for source in self.sources():
                if not pending:
                    break
                if source.is_local:
                    # folders and file:// indexes cost no network: read them here
                    for p, v in pending:
                        take((p, v), self.lookup(source, p, v))
                else:
                    self._ask_remote(source, pending, take)
                pending = [w for w in pending if w not in settled]
        finally:
            self._stop_workers()
        return found

    def read_ahead(self, source: Source, wanted: Sequence[tuple[str, str]]) -> None:
        """Read now the cached answers among ``wanted`` on ``source`` that were not read yet
        (the lookup child is storing the others as they arrive): :meth:`lookup_many` then
        takes them from memory instead of reading them all at once after the child's end."""
        key = source.location
        left = [w for w in wanted if (key, w) not in self._read]
        if left:
            for w, lookup in self.cache.get_releases(source, left).items():
                self._read[(key, w)] = lookup

    def _cached(
        self, source: Source, pending: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Lookup]:
        """The cached answers among ``pending`` on ``source``: those read ahead, then the
        cache's."""
        key = source.location
        out = {w: self._read[(key, w)] for w in pending if (key, w) in self._read}
        left = [w for w in pending if w not in out]
        if left:
            out.update(self.cache.get_releases(source, left))
        return out

    def _ask_remote(
        self,
        source: Source,
        pending: Sequence[tuple[str, str]],
        take: Callable[[tuple[str, str], Lookup], None],
    ) -> None:
        """``take(wanted, lookup)`` for each of ``pending``: the cached ones first, then the
        others as their answers arrive."""
        cached = self._cached(source, pending)
        misses = [w for w in pending if w not in cached]
        futures: dict[Future, tuple[str, str]] = {}
        rows: list[tuple] = []
        error: Optional[IndexUnavailable] = None
        try:
            for w in misses:
                fut = self._early.pop((source, w), None)  # sent by start()
                if fut is None:
                    fut = self._pool(len(misses)).submit(self._fetch, source, *w)
                futures[fut] = w
            for w in pending:
                if w in cached:
                    take(w, cached[w])
            for fut in as_completed(futures):
                try:
                    lookup, row = fut.result()
                except IndexUnavailable as exc:
                    error = error or exc
                    continue
                rows.append(row)
                if error is None:
                    take(futures[fut], lookup)
        finally:
            # interrupted (Ctrl-C): drop the queries not started, let the running ones finish
            for fut in futures:
                fut.cancel()
            wait_futures(list(futures))
        self.cache.put_rows(rows)
        if error is not None:
            raise error

    def _fetch(self, source: Source, project: str, version: str) -> tuple[Lookup, tuple]:
        """A lookup and its cache row, encoded here in the lookup thread, off the caller's
        path."""
        lookup = self.lookup(source, project, version)
        return lookup, self.cache.row(project, version, lookup)

    def lookup(self, source: Source, project: str, version: str) -> Lookup:
        """The files of ``project==version`` on one source (``project`` canonical), uncached."""
        keep = ReleaseFilter(project, version)
        if source.kind == "index":
            found, files = self._index_files(source, project, keep)
        else:
            found, files = self._find_links_files(source, project, keep)
        return Lookup(
            source, found, tuple(self._with_local_hashes(files)), len(keep.other_versions)
        )

    def fill_hash(self, f: DistFile) -> DistFile:
        """``f`` with a sha256, downloaded and hashed if the index gave none (old mirrors)."""
        if f.sha256:
            return f
        if f.path:
            digest = self._file_hash(f.path)
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

    def _index_files(
        self, source: Source, project: str, keep: ReleaseFilter
    ) -> tuple[bool, list[DistFile]]:
        url = page_url(source, project)
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

    def _find_links_files(
        self, source: Source, project: str, keep: ReleaseFilter
    ) -> tuple[bool, list[DistFile]]:
        files = self._memoized(
            f"find-links {source.location}", lambda: self._list_find_links(source)
        )
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
                        out.append(
                            DistFile(
                                entry.name,
                                _file_url(entry.path),
                                source,
                                size=entry.stat().st_size,
                                path=entry.path,
                            )
                        )
                return out
            if os.path.isfile(path):
                if path.endswith((".html", ".htm")):
                    with open(path, "rb") as fh:
                        return parse_html_page(fh.read(), _file_url(path), source)
                return [
                    DistFile(
                        os.path.basename(path),
                        _file_url(path),
                        source,
                        size=os.path.getsize(path),
                        path=path,
                    )
                ]
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
                digest = f.sha256 or self._file_hash(f.path)
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


class _Workers:
    """A fixed set of daemon threads running lookups from one queue.

    Unlike ``ThreadPoolExecutor``, whose ``submit`` starts a thread per call (each start
    waiting for the GIL while the earlier threads parse pages), the threads are started up front
    by a launcher thread, and each may first run ``on_start`` (open its connection).
    """

    def __init__(self, count: int, on_start: Optional[Callable[[], None]] = None) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = count
        self._stopped = False
        threading.Thread(
            target=self._launch,
            args=(0, count, on_start),
            daemon=True,
            name="reprobox-lookup-launcher",
        ).start()

    def _launch(self, first: int, count: int, on_start: Optional[Callable[[], None]]) -> None:
        for i in range(first, first + count):
            threading.Thread(
                target=self._run, args=(on_start,), daemon=True, name=f"reprobox-lookup-{i}"
            ).start()

    def grow(self, count: int) -> None:
        """Run ``count`` threads in all (the new ones connect on their first request)."""
        with self._lock:
            add = count - self._count
            if add <= 0 or self._stopped:
                return
            first, self._count = self._count, count
        threading.Thread(
            target=self._launch,
            args=(first, add, None),
            daemon=True,
            name="reprobox-lookup-launcher",
        ).start()

    def _run(self, on_start: Optional[Callable[[], None]]) -> None:
        if on_start is not None:
            try:
                on_start()
            except Exception:  # noqa: BLE001 - the requests that need it report it properly
                pass
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                fut.set_exception(exc)

    def submit(self, fn: Callable, *args: object) -> Future:
        fut: Future = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Ask every thread to stop once the queue is drained (they are daemons: an exit
        does not wait for them)."""
        with self._lock:
            self._stopped = True
            count = self._count
        for _ in range(count):
            self._jobs.put(None)


def _with(f: DistFile, *, sha256: Optional[str] = None, size: Optional[int] = None) -> DistFile:
    hashes = {**f.hashes, "sha256": sha256} if sha256 else f.hashes
    return replace(f, hashes=hashes, size=size if size is not None else f.size)
