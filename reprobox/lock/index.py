"""Simple-repository client: the files of one release, from every index and find-links location.

Pages are asked for as PEP 691 JSON, with PEP 503 HTML accepted as the fallback (file:// indexes
and many mirrors only speak HTML). Queries run in a thread pool over the keep-alive
:class:`~reprobox.lock.transport.Transport`.

The cache (``cache_dir``) has two parts:

* ``releases/<source>/<project>/<version>.json`` — the files of a pinned release on one remote
  index. Hashes of a published file never change, so these are kept forever and a warm lock of
  an unchanged environment makes no request at all. An index that lacks the release leaves an
  ``.absent`` marker trusted for :data:`NEGATIVE_TTL` seconds (a TTL rather than revalidation:
  the release may be uploaded later, and a lock only needs the files of one version). Whole
  project pages are not kept: a large project's page is megabytes, of which a lock uses one
  release.
* ``files/<key>.json`` — sha256 of local find-links files, keyed by size and mtime.

Local sources (folders, ``file://`` indexes) are read each time: that is cheaper than a cache.

Nothing in the cache is a credential: keys are digests of URLs with credentials stripped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence
from urllib.parse import urljoin, urlsplit
from urllib.request import pathname2url, url2pathname

from ..errors import IndexUnavailable
from ..secrets import strip_url_credentials
from .config import IndexConfig
from .dists import DistFile, ReleaseFilter, Source, filename_of, parse_filename
from .transport import Transport

NEGATIVE_TTL = 600.0
CACHE_VERSION = "v1"
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
_HASH_NAMES = ("sha256", "sha384", "sha512", "sha224", "sha1", "md5", "blake2b")


@dataclass(frozen=True)
class Lookup:
    """What one source says about ``project==version``."""

    source: Source
    project_found: bool
    files: tuple[DistFile, ...] = ()
    other_versions: int = 0  # how many other versions the project has there (for messages)


# --------------------------------------------------------------------------- page parsing


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: Optional[str] = None
        self.anchors: list[dict[str, Optional[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href
        elif tag == "a":
            found = dict(attrs)
            if found.get("href"):
                self.anchors.append(found)


def _split_fragment(url: str) -> tuple[str, dict[str, str]]:
    base, _, frag = url.partition("#")
    hashes: dict[str, str] = {}
    for part in frag.split("&"):
        name, _, value = part.partition("=")
        if name in _HASH_NAMES and value:
            hashes[name] = value.lower()
    return base, hashes


Keep = Callable[[str], bool]


def parse_html_page(body: bytes, page_url: str, source: Source,
                    keep: Optional[Keep] = None) -> list[DistFile]:
    """PEP 503 anchors: href (+ ``#sha256=``), ``data-requires-python``, ``data-yanked``."""
    parser = _Links()
    parser.feed(body.decode("utf-8", errors="replace"))
    base = urljoin(page_url, parser.base) if parser.base else page_url
    out = []
    for a in parser.anchors:
        href = a["href"] or ""
        if keep is not None and not keep(filename_of(href.partition("#")[0])):
            continue
        url, hashes = _split_fragment(urljoin(base, href))
        yanked = a.get("data-yanked", None) if "data-yanked" in a else None
        out.append(
            DistFile(
                filename=filename_of(url),
                url=url,
                source=source,
                hashes=hashes,
                requires_python=a.get("data-requires-python") or None,
                yanked=None if yanked is None else (yanked or ""),
                path=url2pathname(urlsplit(url).path) if url.startswith("file:") else None,
            )
        )
    return out


_DECODER = json.JSONDecoder()


def _api_version(text: str) -> str:
    at = text.rfind('"meta"')
    if at == -1:
        return "1.0"
    colon = text.find(":", at + 6)
    try:
        meta, _ = _DECODER.raw_decode(text, colon + 1 + (len(text[colon + 1:]) -
                                                         len(text[colon + 1:].lstrip())))
    except (ValueError, IndexError):
        return "1.0"
    return str(meta.get("api-version", "1.0")) if isinstance(meta, dict) else "1.0"


def _top_level_list(text: str, key: str) -> list:
    """A list-valued key decoded on its own (PEP 700 ``versions``); [] when absent or odd."""
    at = text.rfind(f'"{key}"')
    colon = text.find(":", at) if at != -1 else -1
    if colon == -1:
        return []
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _object_start(text: str, pos: int) -> int:
    """Start of the ``files`` entry around ``pos``: the nearest ``{`` opening an array element
    (preceded by ``[`` or ``,``, where a nested object follows a ``:``). -1 when not found."""
    i = pos
    while True:
        i = text.rfind("{", 0, i)
        if i == -1:
            return -1
        j = i - 1
        while j >= 0 and text[j] in " \t\r\n":
            j -= 1
        if j >= 0 and text[j] in "[,":
            return i


def release_items(text: str, version: str) -> Optional[list[dict]]:
    """The ``files`` entries of a PEP 691 page that mention ``version``, without decoding the
    page; ``None`` when the page does not have the expected shape (the caller decodes it all).

    A large project's page is megabytes (tens of thousands of files) and decoding it is most of a
    lock's CPU time, while the lock needs one release: the entries are found by searching the text
    for ``-<version>`` (as installed and PEP 440-normalized) and decoding only the enclosing
    objects. Every object decoded is checked (a dict with ``filename`` and ``url`` that spans the
    match); anything unexpected answers ``None``, so the fast path is exact or not taken.
    """
    from packaging.version import InvalidVersion, Version

    needles = {"-" + version}
    try:
        needles.add("-" + str(Version(version)))
    except InvalidVersion:
        pass
    last_match: dict[int, int] = {}  # object start -> the furthest match it must cover
    for needle in needles:
        pos = text.find(needle)
        while pos != -1:
            start = _object_start(text, pos)
            if start == -1:
                return None
            last_match[start] = max(pos, last_match.get(start, pos))
            pos = text.find(needle, pos + 1)
    items = []
    for start in sorted(last_match):
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except ValueError:
            return None
        if not (isinstance(obj, dict) and isinstance(obj.get("filename"), str)
                and isinstance(obj.get("url"), str) and end > last_match[start]):
            return None  # a match outside any file entry: not the shape we know
        items.append(obj)
    return items


def parse_json_page(body: bytes, page_url: str, source: Source,
                    keep: Optional[Keep] = None) -> list[DistFile]:
    """PEP 691 ``files`` (sizes and upload times from PEP 700 when the index sends them).

    With a :class:`ReleaseFilter` as ``keep``, only that release's entries are decoded
    (:func:`release_items`); the filter still decides which of them belong to it.
    """
    text = body.decode("utf-8")
    api = _api_version(text)
    if not api.startswith("1."):
        raise IndexUnavailable(
            f"{strip_url_credentials(page_url)} speaks simple-API version {api}, which this "
            "reprobox does not read",
            "upgrade reprobox (`pip install -U reprobox`)",
        )
    items: Optional[list] = None
    if isinstance(keep, ReleaseFilter):
        items = release_items(text, keep.version)
        if items is not None:  # the other versions, for messages, from PEP 700's list
            keep.other_versions.update(v for v in _top_level_list(text, "versions")
                                       if v != keep.version)
    if items is None:
        items = json.loads(text).get("files", ())
    out = []
    for item in items:
        if keep is not None and not keep(item.get("filename") or filename_of(item["url"])):
            continue
        url = urljoin(page_url, item["url"])
        url, frag_hashes = _split_fragment(url)
        hashes = {k: str(v).lower() for k, v in (item.get("hashes") or {}).items()}
        yanked = item.get("yanked", False)
        out.append(
            DistFile(
                filename=item.get("filename") or filename_of(url),
                url=url,
                source=source,
                hashes=hashes or frag_hashes,
                size=item.get("size") if isinstance(item.get("size"), int) else None,
                upload_time=item.get("upload-time"),
                requires_python=item.get("requires-python") or None,
                yanked=None if yanked is False else ("" if yanked is True else str(yanked)),
            )
        )
    return out


# --------------------------------------------------------------------------- cache


def _key(text: str) -> str:
    return hashlib.sha256(strip_url_credentials(text).encode()).hexdigest()[:32]


_made_dirs: set[Path] = set()


def _write(path: Path, data: bytes) -> None:
    """Atomic replace, no fsync: a lost cache entry is refetched, a torn one must not be read."""
    if path.parent not in _made_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_entry(path: Path, data: bytes) -> None:
    """Write a cache entry in place, without a temporary file and rename.

    Safe for a cache whose reader validates every entry: a torn or interleaved write decodes as
    garbage and counts as a miss; identical concurrent writes are harmless. This halves the
    syscalls per entry, which is measurable on a cold lock.
    """
    if path.parent not in _made_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path.parent)
    with open(path, "wb") as fh:
        fh.write(data)


class Cache:
    def __init__(self, root: Optional[Path]) -> None:
        self.root = None if root is None else Path(root) / CACHE_VERSION

    def _release_path(self, source: Source, project: str, version: str) -> Optional[Path]:
        # flat, one folder per source, one file per release whether found or not: on a cold
        # run every extra mkdir or failed open is a slow syscall on some file systems
        if self.root is None:
            return None
        safe = hashlib.sha256(f"{project}=={version}".encode()).hexdigest()[:24]
        return self.root / "releases" / _key(source.location) / f"{project}-{safe}.json"

    def get_release(self, source: Source, project: str, version: str) -> Optional[Lookup]:
        path = self._release_path(source, project, version)
        if path is None:
            return None
        try:
            data = json.loads(path.read_bytes())
            if data.get("project") != project or data.get("version") != version:
                return None
            absent = data.get("absent")
            if absent is None:
                files = tuple(DistFile.from_cache(f, source) for f in data["files"])
                return Lookup(source, True, files, int(data.get("others", 0))) if files else None
            if time.time() - float(absent["at"]) < NEGATIVE_TTL:
                return Lookup(source, bool(absent["project_found"]), (),
                              int(absent.get("others", 0)))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # a damaged or torn entry is a miss: it is fetched again
        return None

    def put_release(self, lookup: Lookup, project: str, version: str) -> None:
        path = self._release_path(lookup.source, project, version)
        if path is None:
            return
        doc: dict = {"project": project, "version": version}
        if lookup.files:
            doc["files"] = [f.to_cache() for f in lookup.files]
            doc["others"] = lookup.other_versions
        else:
            doc["absent"] = {"at": time.time(), "project_found": lookup.project_found,
                             "others": lookup.other_versions}
        try:
            _write_entry(path, json.dumps(doc).encode())
        except OSError:
            pass  # a read-only or full cache only costs speed

    def file_hash(self, path: str) -> Optional[str]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        entry = None if self.root is None else self.root / "files" / f"{_key(path)}.json"
        if entry is not None:
            try:
                data = json.loads(entry.read_bytes())
                if data["size"] == st.st_size and data["mtime_ns"] == st.st_mtime_ns:
                    return str(data["sha256"])
            except (OSError, ValueError, KeyError):
                pass
        digest = _sha256_file(path)
        if entry is not None:
            _write(entry, json.dumps(
                {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}).encode())
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
        return url2pathname(urlsplit(location).path)
    return os.path.abspath(os.path.expanduser(location))


def _file_url(path: str) -> str:
    return "file:" + pathname2url(os.path.abspath(path))


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
        Without ``done`` every source is asked about everything.

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
                results = self._ask(source, pending, pool)
                if results is None:  # a remote source: run it in the pool
                    if pool is None:
                        pool = ThreadPoolExecutor(max_workers=max(1, min(self.max_workers,
                                                                         len(pending))))
                    results = self._ask(source, pending, pool)
                assert results is not None
                for w, lookup in zip(pending, results):
                    found[w].append(lookup)
                if done is not None:
                    pending = [w for w in pending if not done(w, found[w])]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return found

    def _ask(self, source: Source, pending: Sequence[tuple[str, str]],
             pool: Optional[ThreadPoolExecutor]) -> Optional[list[Lookup]]:
        if source.is_local:
            # folders and file:// indexes cost no network: read them here
            return [self.lookup(source, p, v) for p, v in pending]
        if pool is None:
            return None
        futures = [pool.submit(self.lookup, source, p, v) for p, v in pending]
        results: list[Lookup] = []
        error: Optional[IndexUnavailable] = None
        for fut in futures:
            try:
                results.append(fut.result())
            except IndexUnavailable as exc:
                error = error or exc
        if error is not None:
            raise error
        return results

    def lookup(self, source: Source, project: str, version: str) -> Lookup:
        """The files of ``project==version`` on one source (``project`` canonical)."""
        if not source.is_local:
            cached = self.cache.get_release(source, project, version)
            if cached is not None:
                return cached
        keep = ReleaseFilter(project, version)
        if source.kind == "index":
            found, files = self._index_files(source, project, keep)
        else:
            found, files = self._find_links_files(source, project, keep)
        result = Lookup(source, found, tuple(self._with_local_hashes(files)),
                        len(keep.other_versions))
        if not source.is_local:
            self.cache.put_release(result, project, version)
        return result

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
