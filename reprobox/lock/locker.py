"""lock_environment: a captured environment -> requirements.lock + pylock.toml, without resolving.

A pipeline of plain steps: validate the (possibly untrusted) environment -> sort its packages by
source -> look every index package up on every configured index and find-links location, in
parallel -> pick, per package, the file that was installed and the files a Linux rebuild could
pick -> render both files. A cross-platform lock (``platform=``) first re-resolves the versions for
the target with uv (:mod:`.crossplatform`), then continues the same way.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import __version__
from ..errors import UsageError, ValidationError
from ..model import Environment, Package
from ..secrets import strip_url_credentials
from .config import IndexConfig, read_index_config
from .dists import DistFile
from .cache import default_cache_dir
from .dists import Lookup
from .index import IndexClient
from .pages import file_url_path
from .pylock import render_pylock
from .requirements import render_requirements
from .result import LockedPackage, LockResult, Problem, UnlockablePackages, VersionChange
from .select import (
    DOCKER_PLATFORMS,
    Target,
    capture_platform_files,
    installed_files,
    ordered,
    parse_wheel_tags,
    rebuild_files,
)

Progress = Callable[[str], None]

_PY_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:(?:a|b|rc)[0-9]+)?\+?", re.ASCII)
_WORD = re.compile(r"[A-Za-z0-9_.]+", re.ASCII)
_PLATFORM = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


# --------------------------------------------------------------------------- targets


def capture_target(env: Environment) -> Target:
    """The interpreter and platform the environment was captured on."""
    interp = env.interpreter
    plat = (interp.platform or "").lower()
    system = (env.os.system or "").lower()
    if system == "darwin" or plat.startswith("macosx"):
        sys_platform = "darwin"
    elif system == "windows" or plat.startswith("win"):
        sys_platform = "win32"
    else:
        sys_platform = "linux"
    machine = env.os.arch or (interp.platform.rsplit("-", 1)[-1] if interp.platform else None)
    return Target(
        full_version=interp.version,
        implementation=interp.implementation.lower(),
        abi=interp.abi,
        sys_platform=sys_platform,
        machine=machine,
    )


def platform_target(env: Environment, platform: str) -> Target:
    """The Linux container platform asked for with ``--platform``."""
    key = platform.strip().lower()
    if key not in DOCKER_PLATFORMS:
        raise UsageError(
            f"unknown platform {platform!r}",
            "use one of: " + ", ".join(k for k in DOCKER_PLATFORMS if k.count("/") == 1),
        )
    sys_platform, machine = DOCKER_PLATFORMS[key]
    base = capture_target(env)
    return Target(base.full_version, base.implementation, base.abi, sys_platform, machine)


# --------------------------------------------------------------------------- non-index sources


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


def _separate(pkg: Package, repo_root: Path) -> LockedPackage | Problem:
    """A VCS / directory package: its pylock entry, or why it cannot be locked."""
    src = pkg.source
    if src.kind == "vcs":
        if not src.commit:
            return Problem(pkg.name, pkg.version,
                           f"installed from {strip_url_credentials(src.url or '?')} with no "
                           "recorded commit")
        return LockedPackage(pkg.name, pkg.version, "vcs", origin=src)
    # directory
    rel = src.path if (src.in_repo and src.path) else None
    if rel is None:
        rel = _inside_repo(src.path or _file_url_path(src.url), repo_root)
    if rel is None:
        where = src.path or _file_url_path(src.url) or src.url or "?"
        return Problem(pkg.name, pkg.version,
                       f"installed from the directory {where}, outside the repository")
    return LockedPackage(pkg.name, pkg.version, "directory", origin=src, repo_path=rel)


def _archive(pkg: Package, lookups: Sequence[Lookup], repo_root: Path,
             target: Target) -> LockedPackage | Problem:
    """An archive: an index file with the same hash if one exists, else a pylock archive entry."""
    src = pkg.source
    algo, _, digest = (src.hash or "").partition("=")
    if digest:
        for lk in lookups:
            same = [f for f in lk.files if f.hashes.get(algo) == digest.lower()]
            if same:
                files = ordered([*same, *rebuild_files(lk.files, target)])
                return LockedPackage(pkg.name, pkg.version, "index", tuple(files), lk.source,
                                     installed=same[0].filename)
    local = _file_url_path(src.url)
    if local is not None:
        rel = _inside_repo(local, repo_root)
        if rel is None:
            return Problem(pkg.name, pkg.version, f"installed from the local file {local}")
        if not digest:
            return Problem(pkg.name, pkg.version, f"installed from {rel} with no recorded hash")
        return LockedPackage(pkg.name, pkg.version, "archive", origin=src, repo_path=rel)
    if not digest:
        return Problem(pkg.name, pkg.version,
                       f"installed from {strip_url_credentials(src.url or '?')} with no recorded "
                       "hash")
    return LockedPackage(pkg.name, pkg.version, "archive", origin=src)


# --------------------------------------------------------------------------- index packages


def _missing(pkg: Package, lookups: Sequence[Lookup]) -> Problem:
    has_project = [lk for lk in lookups if lk.project_found]
    if not has_project:
        reason = "no configured index or find-links location has this project"
    else:
        where = ", ".join(lk.source.describe() for lk in has_project)
        verb = "has" if len(has_project) == 1 else "have"
        reason = f"{where} {verb} other versions, not this one"
    if "+" in pkg.version:
        reason += (" (a local version such as +cpu comes from its own index or folder, e.g. "
                   "https://download.pytorch.org/whl/cpu: add it with "
                   "`pip config set global.extra-index-url URL`)")
    if pkg.installer == "conda":
        reason += " (installed by conda, not from a Python package index)"
    return Problem(pkg.name, pkg.version, reason)


def _index_package(pkg: Package, lookups: Sequence[Lookup], target: Target,
                   machines: Optional[frozenset[str]], cross: bool,
                   warnings: list[str]) -> LockedPackage | Problem:
    """Pick the installed file (by WHEEL tags) and the rebuild candidates, from one source."""
    tags = parse_wheel_tags(pkg.wheel_tags) if not cross else frozenset()
    if tags:
        for lk in lookups:
            match = installed_files(lk.files, tags)
            if match:
                files = ordered([*match, *rebuild_files(lk.files, target, machines=machines)])
                _check_same_file(pkg, match[0], lookups, warnings)
                return LockedPackage(pkg.name, pkg.version, "index", tuple(files), lk.source,
                                     installed=match[0].filename)
        for lk in lookups:
            sdists = [f for f in lk.files if f.is_sdist]
            if sdists:
                return LockedPackage(pkg.name, pkg.version, "index", tuple(ordered(sdists)),
                                     lk.source, built_from_sdist=True)
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
        return Problem(pkg.name, pkg.version,
                       "the indexes have this release but no file for Python "
                       f"{target.full_version} on {plat}")
    return _missing(pkg, lookups)


def _settled(pkg: Package, lookups: Sequence[Lookup], target: Target,
             machines: Optional[frozenset[str]], cross: bool) -> bool:
    """Whether the sources asked so far decide the package, so later ones need not be asked.

    Mirrors the choices of :func:`_index_package` and :func:`_archive`: the first source (in
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
    return bool(rebuild_files(last.files, target, machines=machines)
                or (not cross and capture_platform_files(last.files, target)))


def _check_same_file(pkg: Package, chosen: DistFile, lookups: Sequence[Lookup],
                     warnings: list[str]) -> None:
    for lk in lookups:
        for f in lk.files:
            if f.filename == chosen.filename and f.sha256 and chosen.sha256 \
                    and f.sha256 != chosen.sha256:
                warnings.append(
                    f"{pkg.name}=={pkg.version}: {chosen.source.describe()} and "
                    f"{lk.source.describe()} serve different files named {chosen.filename}; "
                    f"the lock names the first (pip's order of the indexes)"
                )
                return


# --------------------------------------------------------------------------- the pipeline


def _match(field: str, value: object, pattern: re.Pattern[str], max_len: int, what: str) -> None:
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        raise ValidationError(field, value, f"is not a valid {what}")


def _validate(env: Environment) -> None:
    """Refuse a hostile value before it reaches a requirement line or a TOML string.

    An environment.json that arrives in a pull request is untrusted. Only what the lock writes is
    checked here (names, versions, tags, sources, the interpreter version), with the project's
    strict grammars.
    """
    from .. import validate as v

    interp = env.interpreter
    _match("interpreter.version", interp.version, _PY_VERSION, 32, "Python version (X.Y.Z)")
    _match("interpreter.implementation", interp.implementation, _WORD, 32, "implementation")
    if interp.abi is not None:
        _match("interpreter.abi", interp.abi, _WORD, 64, "ABI tag")
    if interp.platform is not None:
        _match("interpreter.platform", interp.platform, _PLATFORM, 128, "platform")
    if env.os.arch is not None:
        _match("os.arch", env.os.arch, _WORD, 64, "architecture")
    for pkg in env.packages:
        where = f"packages[{pkg.name}]"
        v.package_name(pkg.name, f"{where}.name")
        v.version(pkg.version, f"{where}.version")
        for j, tag in enumerate(pkg.wheel_tags):
            v.wheel_tag(tag, f"{where}.wheel_tags[{j}]")
        src = pkg.source
        if src.kind == "vcs":
            if src.vcs not in ("git", "hg", "svn", "bzr"):
                raise ValidationError(f"{where}.source.vcs", src.vcs,
                                      "is not one of git, hg, svn, bzr")
            v.url(f"{where}.source.url", src.url, v.VCS_SCHEMES, allow_scp=True)
            if src.commit is not None:
                v.vcs_commit(src.commit, f"{where}.source.commit")
            if src.requested_revision is not None:
                v.git_ref(src.requested_revision, f"{where}.source.requested_revision")
        elif src.kind == "archive":
            v.url(f"{where}.source.url", src.url, v.ARCHIVE_SCHEMES)
            if src.hash is not None:
                v.archive_hash(src.hash, f"{where}.source.hash")
        elif src.kind == "directory":
            if src.path is not None:
                if src.in_repo:
                    v.relpath(f"{where}.source.path", src.path)
                else:
                    v.local_path(f"{where}.source.path", src.path)
            if src.url is not None:
                v.url(f"{where}.source.url", src.url, ("file",))
        if src.subdirectory is not None:
            v.relpath(f"{where}.source.subdirectory", src.subdirectory)


def lock_environment(
    env: Environment,
    *,
    repo_root: Path,
    config: Optional[IndexConfig] = None,
    cache_dir: Optional[Path] = None,
    platform: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> LockResult:
    """Lock exactly the distributions of ``env`` with their hashes; nothing is re-resolved.

    Raises :class:`~reprobox.errors.IndexUnavailable` when an index cannot be reached (a
    capture records the environment anyway and ``reprobox lock`` finishes later), and
    :class:`~reprobox.lock.result.UnlockablePackages` (a ``LockError``) naming every package
    that no configured source serves.
    """
    config = config if config is not None else read_index_config()
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    client = IndexClient(config, cache_dir)
    try:
        return _lock(env, client, Path(repo_root), platform, progress or (lambda _msg: None))
    finally:
        client.close()


def _lock(env: Environment, client: IndexClient, repo_root: Path, platform: Optional[str],
          say: Progress) -> LockResult:
    config = client.config
    cache_dir = client.cache_dir
    # connect to the configured indexes while the environment is checked: only the host's own
    # configuration decides where these go, nothing from the (untrusted) capture
    client.prewarm([(p.name, p.version) for p in env.packages
                    if p.source.kind in ("index", "archive")])
    _validate(env)

    base = capture_target(env)
    target, machines, cross = base, None, False
    changes: tuple[VersionChange, ...] = ()
    packages = list(env.packages)
    if platform is not None:
        target = platform_target(env, platform)
        machines = frozenset({target.machine}) if target.machine else None
        if (target.sys_platform, target.machine) != (base.sys_platform, _linux_machine(base)):
            from .crossplatform import reresolve

            cross = True
            say(f"re-resolving for {platform} with the captured versions as preferences")
            pins, changes = reresolve(env, target, config=config, repo_root=repo_root,
                                      cache_dir=cache_dir)
            packages = [p for p in packages if p.source.kind != "index"]
            packages += [Package(name, version) for name, version in sorted(pins.items())]

    warnings: list[str] = []
    locked: list[LockedPackage] = []
    problems: list[Problem] = []
    looked_up = [p for p in packages if p.source.kind in ("index", "archive")]
    t0 = time.perf_counter()
    sources = client.sources()
    if looked_up:
        say(f"looking up {len(looked_up)} packages on {len(sources)} package "
            f"source{'s' if len(sources) != 1 else ''}")
    # compiled packages first: their pages are the large ones, the long poles of the lookup
    order = sorted(looked_up, key=lambda p: (not _compiled(p), p.name))
    by_key = {(p.name, p.version): p for p in order}
    found = client.lookup_many(
        [(p.name, p.version) for p in order],
        done=lambda key, lookups: _settled(by_key[key], lookups, target, machines, cross),
    )
    for pkg in packages:
        kind = pkg.source.kind
        outcome: LockedPackage | Problem
        if kind == "index":
            outcome = _index_package(pkg, found[(pkg.name, pkg.version)], target, machines,
                                     cross, warnings)
        elif kind == "archive":
            outcome = _archive(pkg, found[(pkg.name, pkg.version)], repo_root, target)
        else:
            outcome = _separate(pkg, repo_root)
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        if outcome.kind == "index":
            outcome = _with_hashes(client, outcome)
        locked.append(outcome)
    requests = client.requests
    if looked_up:
        say(f"looked up {len(looked_up)} packages in {time.perf_counter() - t0:.1f} s "
            f"({requests} request{'s' if requests != 1 else ''})")

    warnings += _source_warnings(locked)
    for p in locked:
        for f in p.files:
            if f.yanked is not None and f.filename == p.installed:
                why = f": {f.yanked}" if f.yanked else ""
                warnings.append(f"{p.name}=={p.version} is yanked on {f.source.describe()}{why}")

    result = _render(env, locked, target, config, tuple(warnings), changes, platform, requests)
    if problems:
        raise UnlockablePackages(tuple(sorted(problems, key=lambda p: p.name)), result)
    return result


def _compiled(pkg: Package) -> bool:
    return any(not tag.endswith("-any") for tag in pkg.wheel_tags)


def _linux_machine(t: Target) -> Optional[str]:
    """Capture machines named the way Linux wheels name them (macOS arm64 is aarch64)."""
    return {"arm64": "aarch64", "amd64": "x86_64"}.get((t.machine or "").lower(), t.machine)


def _with_hashes(client: IndexClient, pkg: LockedPackage) -> LockedPackage:
    from dataclasses import replace

    if all(f.sha256 for f in pkg.files):
        return pkg
    return replace(pkg, files=tuple(client.fill_hash(f) for f in pkg.files))


def _source_warnings(locked: Sequence[LockedPackage]) -> list[str]:
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


def _render(env: Environment, locked: list[LockedPackage], target: Target, config: IndexConfig,
            warnings: tuple[str, ...], changes: tuple[VersionChange, ...],
            platform: Optional[str], requests: int) -> LockResult:
    req = render_requirements(locked, target=target, environment_digest=env.digest,
                              config=config, tool_version=__version__)
    pylock = render_pylock(locked, target=target, environment_digest=env.digest,
                           tool_version=__version__)
    return LockResult(
        requirements_lock=req,
        pylock_toml=pylock,
        warnings=warnings,
        changed_versions=changes,
        files={"requirements.lock": req, "pylock.toml": pylock},
        packages=tuple(sorted(locked, key=lambda p: p.name)),
        platform=platform,
        requests=requests,
    )
