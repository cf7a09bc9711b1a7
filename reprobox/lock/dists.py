"""What an index offers: distribution files, where they came from, and what their names say.

Kept apart from the HTTP client and from the tag logic so both can share the types without
importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional
from urllib.parse import unquote, urlsplit

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..names import canonical_name
from ..redact import strip_url_credentials

if TYPE_CHECKING:
    from packaging.tags import Tag


#: Source-distribution suffixes pip still installs.
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tbz", ".txz", ".tar")


@dataclass(frozen=True)
class Source:
    """One place pip looks for distributions: a simple-API index or a find-links location."""

    location: str  # as configured: may carry credentials, in memory only
    kind: str  # "index" | "find-links"
    order: int = 0  # pip's order of the configuration (index-url first)

    @property
    def redacted(self) -> str:
        return strip_url_credentials(self.location)

    @property
    def is_local(self) -> bool:
        """A folder or ``file://`` URL on this machine: reading it costs no network."""
        return "://" not in self.location or self.location.startswith("file:")

    def describe(self) -> str:
        return f"{'find-links' if self.kind == 'find-links' else 'index'} {self.redacted}"


@dataclass(frozen=True)
class DistFile:
    """One file of a release, as an index lists it."""

    filename: str
    url: str  # absolute; may carry the index's credentials in memory: redact before writing
    source: Source
    hashes: Mapping[str, str] = field(default_factory=dict)  # algorithm -> lower-case hex
    size: Optional[int] = None
    upload_time: Optional[str] = None  # ISO-8601 as the index gives it
    requires_python: Optional[str] = None
    yanked: Optional[str] = None  # None: not yanked; "" yanked without a reason
    path: Optional[str] = None  # the local file, for folders and file:// URLs

    @property
    def sha256(self) -> Optional[str]:
        return self.hashes.get("sha256")

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def is_sdist(self) -> bool:
        return self.filename.lower().endswith(SDIST_SUFFIXES)

    def to_cache(self) -> dict:
        return {
            "filename": self.filename,
            # the cache is on disk: never a credential
            "url": strip_url_credentials(self.url) if "@" in self.url else self.url,
            "hashes": dict(self.hashes),
            "size": self.size,
            "upload_time": self.upload_time,
            "requires_python": self.requires_python,
            "yanked": self.yanked,
            "path": self.path,
        }

    @classmethod
    def from_cache(cls, data: Mapping, source: Source) -> "DistFile":
        return cls(
            filename=str(data["filename"]),
            url=str(data["url"]),
            source=source,
            hashes={str(k): str(v) for k, v in dict(data.get("hashes") or {}).items()},
            size=data.get("size"),
            upload_time=data.get("upload_time"),
            requires_python=data.get("requires_python"),
            yanked=data.get("yanked"),
            path=data.get("path"),
        )


@dataclass(frozen=True)
class Lookup:
    """What one source says about ``project==version``."""

    source: Source
    project_found: bool
    files: tuple[DistFile, ...] = ()
    other_versions: int = 0  # how many other versions the project has there (for messages)


@dataclass(frozen=True)
class ParsedName:
    """What a distribution file name says about itself."""

    name: str  # canonical
    version: Version
    kind: str  # "wheel" | "sdist"
    tags: frozenset[Tag] = frozenset()
    build: tuple = ()


def filename_of(url: str) -> str:
    """The file name a URL points at, as pip derives it (last path segment, unquoted)."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def _sdist_stem(filename: str) -> Optional[str]:
    low = filename.lower()
    for suffix in SDIST_SUFFIXES:
        if low.endswith(suffix):
            return filename[: -len(suffix)]
    return None


_VERSION_START = re.compile(r"-(?=[0-9vV])")


def parse_filename(filename: str, project: Optional[str] = None) -> Optional[ParsedName]:
    """Parse a wheel or sdist file name; ``None`` for anything else (eggs, .exe, junk).

    sdist names are ambiguous (``python-dateutil-2.8.2.tar.gz``): with ``project`` known, the
    split is the one whose name part normalizes to it; without, the first ``-`` before a digit.
    """
    if filename.endswith(".whl"):
        try:
            name, version, build, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            return None
        return ParsedName(str(name), version, "wheel", frozenset(tags), tuple(build))
    stem = _sdist_stem(filename)
    if stem is None:
        return None
    for match in _VERSION_START.finditer(stem):
        name_part, version_part = stem[: match.start()], stem[match.end() :]
        if project is not None and canonical_name(name_part) != project:
            continue
        try:
            version = Version(version_part)
        except InvalidVersion:
            continue
        return ParsedName(str(canonical_name(name_part)), version, "sdist")
    return None


def same_version(a: Version, b: str) -> bool:
    """PEP 440 equality, local label included (``2.1+cpu`` is not ``2.1``)."""
    try:
        return a == Version(b)
    except InvalidVersion:
        return False


class ReleaseFilter:
    """Does a file name belong to ``project==version``? Fast, for pages of thousands of files.

    The name and version parts are split with string operations and the verdict is memoized per
    (name part, version part): a release's files share them, so PEP 440 parsing runs once per
    version on the page, not once per file. Other versions seen are counted for messages.
    """

    def __init__(self, project: str, version: str) -> None:
        self.project = project
        self.version = version
        self._memo: dict[tuple[str, str], bool] = {}
        self.other_versions: set[str] = set()

    def __call__(self, filename: str) -> bool:
        if filename.endswith(".whl"):
            parts = filename[:-4].split("-")
            if len(parts) not in (5, 6):
                return False
            name, ver = parts[0], parts[1]
        else:
            stem = _sdist_stem(filename)
            if stem is None:
                return False
            name, _, ver = stem.rpartition("-")
        key = (name, ver)
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = self._judge(filename, name, ver)
            self._memo[key] = verdict
        return verdict

    def _judge(self, filename: str, name: str, ver: str) -> bool:
        if canonical_name(name) != self.project:
            # an sdist whose version holds a '-' or an odd name split: the full parser decides
            parsed = parse_filename(filename, self.project)
            if parsed is None or parsed.name != self.project:
                return False
            return same_version(parsed.version, self.version)
        if ver == self.version:
            return True

        try:
            match = Version(ver) == Version(self.version)
        except InvalidVersion:
            return False
        if not match:
            self.other_versions.add(ver)
        return match
