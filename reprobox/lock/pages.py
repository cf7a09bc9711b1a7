"""Simple-repository pages -> distribution files: PEP 691 JSON and PEP 503 HTML.

A large project's JSON page is megabytes (tens of thousands of files) while a lock needs the few
files of one release; decoding whole pages was most of a cold lock's CPU time. So for a JSON page
and a known release, :func:`release_items` searches the raw bytes for ``-<version>`` and decodes
only the file entries around the matches, with strict checks: whenever the page does not have the
expected shape it answers ``None`` and the page is decoded whole. Either way the release filter
has the last word on which files belong to the release.
"""

from __future__ import annotations

import json
from typing import Callable, Optional
from urllib.parse import unquote, urljoin, urlsplit

from packaging.version import InvalidVersion, Version

from ..errors import IndexUnavailable
from ..redact import strip_url_credentials
from .dists import DistFile, ReleaseFilter, Source, filename_of

Keep = Callable[[str], bool]
_HASH_NAMES = ("sha256", "sha384", "sha512", "sha224", "sha1", "md5", "blake2b")
_DECODER = json.JSONDecoder()
_WINDOWS = (4096, 65536)  # bytes decoded around one file entry before falling back


def split_fragment(url: str) -> tuple[str, dict[str, str]]:
    """``url#sha256=...`` -> (url, {"sha256": ...})."""
    base, _, frag = url.partition("#")
    hashes: dict[str, str] = {}
    for part in frag.split("&"):
        name, _, value = part.partition("=")
        if name in _HASH_NAMES and value:
            hashes[name] = value.lower()
    return base, hashes


def file_url_path(url: str) -> Optional[str]:
    """The local path of a ``file:`` URL (POSIX), else None."""
    if not url.startswith("file:"):
        return None
    return unquote(urlsplit(url).path)


# --------------------------------------------------------------------------- HTML (PEP 503)


def parse_html_page(
    body: bytes, page_url: str, source: Source, keep: Optional[Keep] = None
) -> list[DistFile]:
    """PEP 503 anchors: href (+ ``#sha256=``), ``data-requires-python``, ``data-yanked``."""
    from html.parser import HTMLParser  # lazy: only HTML pages (PyPI answers in JSON)

    anchors: list[dict[str, Optional[str]]] = []
    base_href: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
            found = dict(attrs)
            if tag == "base" and not base_href and found.get("href"):
                base_href.append(found["href"] or "")
            elif tag == "a" and found.get("href"):
                anchors.append(found)

    Links(convert_charrefs=True).feed(body.decode("utf-8", errors="replace"))
    base = urljoin(page_url, base_href[0]) if base_href else page_url
    out = []
    for a in anchors:
        href = a["href"] or ""
        if keep is not None and not keep(filename_of(href.partition("#")[0])):
            continue
        url, hashes = split_fragment(urljoin(base, href))
        # PEP 592: the attribute's presence marks the file yanked; its value is the reason
        yanked = (a.get("data-yanked") or "") if "data-yanked" in a else None
        out.append(
            DistFile(
                filename=filename_of(url),
                url=url,
                source=source,
                hashes=hashes,
                requires_python=a.get("data-requires-python") or None,
                yanked=yanked,
                path=file_url_path(url),
            )
        )
    return out


# --------------------------------------------------------------------------- JSON (PEP 691)


def _decode_at(body: bytes, start: int) -> Optional[tuple[object, int]]:
    """The JSON value starting at byte ``start`` and the byte just after it, or None."""
    for window in (*_WINDOWS, None):
        chunk = body[start:] if window is None else body[start : start + window]
        text = chunk.decode("utf-8", errors="strict" if window is None else "ignore")
        try:
            value, end = _DECODER.raw_decode(text)
        except ValueError:
            if window is None or len(chunk) < window:
                return None
            continue
        consumed = end if text.isascii() else len(text[:end].encode("utf-8"))
        return value, start + consumed
    return None


def _value_of(body: bytes, key: bytes) -> object:
    """A top-level key's value decoded on its own (the last occurrence); None when odd."""
    at = body.rfind(b'"' + key + b'"')
    colon = body.find(b":", at) if at != -1 else -1
    if colon == -1:
        return None
    start = colon + 1
    while start < len(body) and body[start] in b" \t\r\n":
        start += 1
    got = _decode_at(body, start)
    return got[0] if got else None


def _object_start(body: bytes, pos: int) -> int:
    """Start of the ``files`` entry around ``pos``: the nearest ``{`` opening an array element
    (preceded by ``[`` or ``,``; a nested object follows a ``:``). -1 when not found."""
    i = pos
    while True:
        i = body.rfind(b"{", 0, i)
        if i == -1:
            return -1
        j = i - 1
        while j >= 0 and body[j] in b" \t\r\n":
            j -= 1
        if j >= 0 and body[j] in b"[,":
            return i


def release_items(body: bytes | str, version: str) -> Optional[list[dict]]:
    """The ``files`` entries of a PEP 691 page that mention ``version``, decoded alone;
    ``None`` when the page does not have the expected shape (decode it whole then).

    Matches are ``-<version>`` as installed and PEP 440-normalized. Every decoded object must be
    a file entry (a dict with ``filename`` and ``url``) that spans its matches; a match anywhere
    else (the project name, the versions list) means an unexpected shape.
    """
    raw = body.encode() if isinstance(body, str) else body
    needles = {("-" + version).encode()}
    try:
        needles.add(("-" + str(Version(version))).encode())
    except InvalidVersion:
        pass
    furthest: dict[int, int] = {}  # object start -> the furthest match it must cover
    for needle in needles:
        pos = raw.find(needle)
        while pos != -1:
            start = _object_start(raw, pos)
            if start == -1:
                return None
            furthest[start] = max(pos, furthest.get(start, pos))
            pos = raw.find(needle, pos + 1)
    items = []
    for start in sorted(furthest):
        got = _decode_at(raw, start)
        if got is None:
            return None
        obj, end = got
        if not (
            isinstance(obj, dict)
            and isinstance(obj.get("filename"), str)
            and isinstance(obj.get("url"), str)
            and end > furthest[start]
        ):
            return None
        items.append(obj)
    return items


def parse_json_page(
    body: bytes, page_url: str, source: Source, keep: Optional[Keep] = None
) -> list[DistFile]:
    """PEP 691 ``files`` (sizes and upload times from PEP 700 when the index sends them).

    With a :class:`ReleaseFilter` as ``keep``, only that release's entries are decoded.
    """
    meta = _value_of(body, b"meta")
    api = str(meta.get("api-version", "1.0")) if isinstance(meta, dict) else "1.0"
    if not api.startswith("1."):
        raise IndexUnavailable(
            f"{strip_url_credentials(page_url)} speaks simple-API version {api}, which this "
            "reprobox does not read",
            "upgrade reprobox (`pip install -U reprobox`)",
        )
    items: Optional[list] = None
    if isinstance(keep, ReleaseFilter):
        items = release_items(body, keep.version)
        if items is not None:  # the other versions, for messages, from PEP 700's list
            versions = _value_of(body, b"versions")
            if isinstance(versions, list):
                keep.other_versions.update(
                    v for v in versions if isinstance(v, str) and v != keep.version
                )
    if items is None:
        items = json.loads(body).get("files", ())
    out = []
    for item in items:
        if keep is not None and not keep(item.get("filename") or filename_of(item["url"])):
            continue
        url = item["url"]
        if not url.startswith(("https://", "http://")):
            url = urljoin(page_url, url)
        url, frag_hashes = split_fragment(url) if "#" in url else (url, {})
        hashes = {k: str(v).lower() for k, v in (item.get("hashes") or {}).items()}
        yanked = item.get("yanked", False)
        size = item.get("size")
        out.append(
            DistFile(
                filename=item.get("filename") or filename_of(url),
                url=url,
                source=source,
                hashes=hashes or frag_hashes,
                size=size if isinstance(size, int) else None,
                upload_time=item.get("upload-time"),
                requires_python=item.get("requires-python") or None,
                yanked=None if yanked is False else ("" if yanked is True else str(yanked)),
                path=file_url_path(url),
            )
        )
    return out
