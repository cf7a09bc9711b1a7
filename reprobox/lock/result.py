"""What a lock decided, package by package, and the result handed back to the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import LockError
from ..model import PackageSource
from .dists import DistFile, Source


@dataclass(frozen=True)
class LockedPackage:
    """One package of the lock.

    ``kind`` is ``index`` (hashed files from an index or find-links location: goes into
    requirements.lock), or ``vcs`` / ``directory`` / ``archive`` (installed separately: pylock.toml
    entries and a comment in requirements.lock).
    """

    name: str
    version: str
    kind: str
    files: tuple[DistFile, ...] = ()
    source: Optional[Source] = None  # the index / find-links location that served it
    installed: Optional[str] = None  # file name of the installed file, when identified
    built_from_sdist: bool = False
    origin: Optional[PackageSource] = None  # vcs / directory / archive
    repo_path: Optional[str] = None  # directory or archive inside the repository (POSIX, relative)


@dataclass(frozen=True)
class VersionChange:
    """A version a cross-platform lock had to change (``None``: added or dropped)."""

    name: str
    captured: Optional[str]
    locked: Optional[str]

    def describe(self) -> str:
        if self.captured is None:
            return f"{self.name} {self.locked} added (needed on the target platform)"
        if self.locked is None:
            return f"{self.name} {self.captured} dropped (not needed on the target platform)"
        return f"{self.name} {self.captured} -> {self.locked}"


@dataclass(frozen=True)
class LockResult:
    """The two lock files, ready to store, and what the caller should tell the user."""

    requirements_lock: str
    pylock_toml: str
    warnings: tuple[str, ...] = ()
    changed_versions: tuple[VersionChange, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    packages: tuple[LockedPackage, ...] = ()
    platform: Optional[str] = None  # the --platform asked for, if any
    requests: int = 0  # network requests made (0 on a warm cache)


@dataclass(frozen=True)
class Problem:
    name: str
    version: str
    reason: str


class UnlockablePackages(LockError):
    """Some packages cannot be locked: no configured index serves them.

    ``problems`` lists every one; ``partial`` is the lock of all the others, for a caller that
    wants to show it. reprobox itself never stores a partial lock: a lock that installs without
    complaint but misses packages would make a rebuild silently differ.
    """

    def __init__(self, problems: tuple[Problem, ...], partial: Optional[LockResult]) -> None:
        lines = "\n".join(f"  - {p.name}=={p.version}: {p.reason}" for p in problems)
        count = len(problems)
        super().__init__(
            f"cannot lock {count} package{'s' if count != 1 else ''} that no configured index "
            f"serves:\n{lines}",
            "publish them to an index pip is configured with (or put their files in a "
            "find-links folder: `pip config set global.find-links DIR`), install them from an "
            "index or from a folder inside the repository, then capture again; or capture with "
            "`--no-lock` to record the environment without a lock",
        )
        self.problems = problems
        self.partial = partial
