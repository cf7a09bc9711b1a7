"""Per-package decisions of a lock: which files, from which source — or why it cannot be locked.

Index packages: the first source in pip's order that holds the installed file (recognised by its
WHEEL tags) decides, and gives the rebuild candidates too; a wheel that no source holds was built
on the capture host, so its sdist is locked. VCS and in-repository directories become pylock
entries; archives are matched to an index file by hash when one exists. Everything that cannot be
locked becomes a :class:`~reprobox.lock.result.Problem` with the reason.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from ..model import Package
from ..redact import strip_url_credentials
from .dists import DistFile, Lookup
from .index import IndexClient
from .pages import file_url_path
from .result import LockedPackage, Problem
from .select import (
    Target,
    capture_platform_files,
    installed_files,
    ordered,
    parse_wheel_tags,
    rebuild_files,
)


def _file_url_path(url: Optional[str]) -> Optional[str]:
    return file_url_path(url) if url else None


def _inside_repo(path: Optional[str], repo_root: Path) -> Optional[str]:
    if not path or not os.path.isabs(path):
        return None
    try:
        rel = Path(path).resolve().relative_to(Path(repo_root).resolve())
    except ValueError:
        return None
    return rel.as_posix() or "."


def separate(pkg: Package, repo_root: Path) -> LockedPackage | Problem:
    """A VCS / directory package: its pylock entry, or why it cannot be locked."""
    src = pkg.source
    if src.kind == "vcs":
        if not src.commit:
            return Problem(
                pkg.name,
                pkg.version,
                f"installed from {strip_url_credentials(src.url or '?')} with no recorded commit",
            )
        return LockedPackage(pkg.name, pkg.version, "vcs", origin=src)
    # directory
    rel = src.path if (src.in_repo and src.path) else None
    if rel is None:
        rel = _inside_repo(src.path or _file_url_path(src.url), repo_root)
    if rel is None:
        where = src.path or _file_url_path(src.url) or src.url or "?"
        return Problem(
            pkg.name, pkg.version, f"installed from the directory {where}, outside the repository"
        )
    return LockedPackage(pkg.name, pkg.version, "directory", origin=src, repo_path=rel)


def archive(
    pkg: Package, lookups: Sequence[Lookup], repo_root: Path, target: Target
) -> LockedPackage | Problem:
    """An archive: an index file with the same hash if one exists, else a pylock archive entry."""
    src = pkg.source
    algo, _, digest = (src.hash or "").partition("=")
    if digest:
        for lk in lookups:
            same = [f for f in lk.files if f.hashes.get(algo) == digest.lower()]
            if same:
                files = ordered([*same, *rebuild_files(lk.files, target)])
                return LockedPackage(
                    pkg.name,
                    pkg.version,
                    "index",
                    tuple(files),
                    lk.source,
                    installed=same[0].filename,
                )
    local = _file_url_path(src.url)
    if local is not None:
        rel = _inside_repo(local, repo_root)
        if rel is None:
            return Problem(pkg.name, pkg.version, f"installed from the local file {local}")
        if not digest:
            return Problem(pkg.name, pkg.version, f"installed from {rel} with no recorded hash")
        return LockedPackage(pkg.name, pkg.version, "archive", origin=src, repo_path=rel)
    if not digest:
        return Problem(
            pkg.name,
            pkg.version,
            f"installed from {strip_url_credentials(src.url or '?')} with no recorded hash",
        )
    return LockedPackage(pkg.name, pkg.version, "archive", origin=src)


def _missing(pkg: Package, lookups: Sequence[Lookup]) -> Problem:
    has_project = [lk for lk in lookups if lk.project_found]
    if not has_project:
        reason = "no configured index or find-links location has this project"
    else:
        where = ", ".join(lk.source.describe() for lk in has_project)
        verb = "has" if len(has_project) == 1 else "have"
        reason = f"{where} {verb} other versions, not this one"
    if "+" in pkg.version:
        reason += (
            " (a local version such as +cpu comes from its own index or folder, e.g. "
            "https://download.pytorch.org/whl/cpu: add it with "
            "`pip config set global.extra-index-url URL`)"
        )
    if pkg.installer == "conda":
        reason += " (installed by conda, not from a Python package index)"
    return Problem(pkg.name, pkg.version, reason)


def index_package(
    pkg: Package,
    lookups: Sequence[Lookup],
    target: Target,
    machines: Optional[frozenset[str]],
    cross: bool,
    warnings: list[str],
) -> LockedPackage | Problem:
    """Pick the installed file (by WHEEL tags) and the rebuild candidates, from one source."""
    tags = parse_wheel_tags(pkg.wheel_tags) if not cross else frozenset()
    if tags:
        for lk in lookups:
            match = installed_files(lk.files, tags)
            if match:
                files = ordered([*match, *rebuild_files(lk.files, target, machines=machines)])
                _check_same_file(pkg, match[0], lookups, warnings)
                return LockedPackage(
                    pkg.name,
                    pkg.version,
                    "index",
                    tuple(files),
                    lk.source,
                    installed=match[0].filename,
                )
        for lk in lookups:
            sdists = [f for f in lk.files if f.is_sdist]
            if sdists:
                return LockedPackage(
                    pkg.name,
                    pkg.version,
                    "index",
                    tuple(ordered(sdists)),
                    lk.source,
                    built_from_sdist=True,
                )
    for lk in lookups:
        files = rebuild_files(lk.files, target, machines=machines)
        if not cross:
            files += capture_platform_files(lk.files, target)
        if files:
            if tags:
                warnings.append(
                    f"{pkg.name}=={pkg.version}: the installed wheel "
                    f"({', '.join(sorted(pkg.wheel_tags))}) is not on {lk.source.describe()}; "
                    "locked with the files a rebuild could pick"
                )
            return LockedPackage(pkg.name, pkg.version, "index", tuple(ordered(files)), lk.source)
    if any(lk.files for lk in lookups):
        plat = f"{target.sys_platform} {target.machine or ''}".strip()
        return Problem(
            pkg.name,
            pkg.version,
            f"the indexes have this release but no file for Python {target.full_version} on {plat}",
        )
    return _missing(pkg, lookups)


def settled(
    pkg: Package,
    lookups: Sequence[Lookup],
    target: Target,
    machines: Optional[frozenset[str]],
    cross: bool,
) -> bool:
    """Whether the sources asked so far decide the package, so later ones need not be asked.

    Mirrors the choices of :func:`index_package` and :func:`archive`: the first source (in
    pip's order) holding the installed file decides; without a wheel record the first source
    with usable files decides; anything else (a locally built wheel: its sdist may be on any
    source) waits for every source.
    """
    last = lookups[-1]
    if pkg.source.kind == "archive":
        algo, _, digest = (pkg.source.hash or "").partition("=")
        return bool(digest) and any(f.hashes.get(algo) == digest.lower() for f in last.files)
    if pkg.wheel_tags and not cross:
        return bool(installed_files(last.files, parse_wheel_tags(pkg.wheel_tags)))
    return bool(
        rebuild_files(last.files, target, machines=machines)
        or (not cross and capture_platform_files(last.files, target))
    )


def _check_same_file(
    pkg: Package, chosen: DistFile, lookups: Sequence[Lookup], warnings: list[str]
) -> None:
    for lk in lookups:
        for f in lk.files:
            if (
                f.filename == chosen.filename
                and f.sha256
                and chosen.sha256
                and f.sha256 != chosen.sha256
            ):
                warnings.append(
                    f"{pkg.name}=={pkg.version}: {chosen.source.describe()} and "
                    f"{lk.source.describe()} serve different files named {chosen.filename}; "
                    f"the lock names the first (pip's order of the indexes)"
                )
                return


def with_hashes(client: IndexClient, pkg: LockedPackage) -> LockedPackage:
    if all(f.sha256 for f in pkg.files):
        return pkg
    return replace(pkg, files=tuple(client.fill_hash(f) for f in pkg.files))


def source_warnings(locked: Sequence[LockedPackage]) -> list[str]:
    """Packages that only a folder on this machine serves: a build elsewhere needs that folder."""
    by_source: dict[str, list[str]] = {}
    for p in locked:
        if p.source is not None and p.source.is_local:
            by_source.setdefault(p.source.describe(), []).append(f"{p.name}=={p.version}")
    return [
        f"{', '.join(names)} {'comes' if len(names) == 1 else 'come'} from the local {where}: "
        "a build on another machine needs the same folder (the container build forwards it) "
        "or an index that serves the same files"
        for where, names in sorted(by_source.items())
    ]
