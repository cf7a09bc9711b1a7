"""lock_environment: a captured environment -> requirements.lock + pylock.toml, without resolving.

A pipeline of plain steps: check the (possibly untrusted) environment (:mod:`.checks`) -> for a
cross-platform lock, re-resolve the versions for the target with uv (:mod:`.crossplatform`) ->
look the index packages up on the configured indexes and find-links locations, in parallel, in
pip's order (:mod:`.index`) -> decide per package which files, from where (:mod:`.decide`) ->
render both files (:mod:`.requirements`, :mod:`.pylock`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

from .. import __version__
from ..model import Environment, Package
from ..progress import Progress
from .cache import default_cache_dir
from .config import IndexConfig, read_index_config
from .checks import check_environment
from .crossplatform import reresolve
from .early import Pending
from .decide import archive, index_package, separate, settled, source_warnings, with_hashes
from .index import IndexClient
from .pylock import render_pylock
from .requirements import render_requirements
from .result import LockedPackage, LockResult, Problem, UnlockablePackages, VersionChange
from .select import Target, capture_target, linux_machine, platform_target


def lock_environment(
    env: Environment,
    *,
    repo_root: Path,
    config: Optional[IndexConfig] = None,
    cache_dir: Optional[Path] = None,
    platform: Optional[str] = None,
    progress: Optional[Progress] = None,
    ahead: Optional[Pending] = None,
) -> LockResult:
    """Lock exactly the distributions of ``env`` with their hashes; nothing is re-resolved.

    Raises :class:`~reprobox.errors.IndexUnavailable` when an index cannot be reached (a
    capture records the environment anyway and ``reprobox lock`` finishes later), and
    :class:`~reprobox.lock.result.UnlockablePackages` (a ``LockError``) naming every package
    that no configured source serves.

    ``ahead``: lookups :mod:`.early` started for this lock into the cache, waited for where
    the lock looks up and counted as its own; closed here.
    """
    try:
        config = config if config is not None else read_index_config()
        cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        client = IndexClient(config, cache_dir)
        try:
            return _lock(
                env, client, Path(repo_root), platform, progress or (lambda _msg: None), ahead
            )
        finally:
            client.close()
    finally:
        if ahead is not None:
            ahead.close()


def _lock(
    env: Environment,
    client: IndexClient,
    repo_root: Path,
    platform: Optional[str],
    say: Progress,
    ahead: Optional[Pending],
) -> LockResult:
    config = client.config
    cache_dir = client.cache_dir
    if ahead is None:
        # connect to the configured indexes while the environment is checked: only the host's
        # own configuration decides where these go, nothing from the (untrusted) capture
        client.prewarm(
            [(p.name, p.version) for p in env.packages if p.source.kind in ("index", "archive")],
            then_start=platform is None,
        )

    check_environment(env)
    if platform is None and ahead is None:
        # the queries go out now
        client.start(_lookup_keys(env.packages))
    base = capture_target(env)
    target, machines, cross = base, None, False
    changes: tuple[VersionChange, ...] = ()
    packages = list(env.packages)
    if platform is not None:
        target = platform_target(env, platform)
        machines = frozenset({target.machine}) if target.machine else None
        if (target.sys_platform, target.machine) != (base.sys_platform, linux_machine(base)):
            cross = True
            say(f"re-resolving for {platform} with the captured versions as preferences")
            pins, changes = reresolve(
                env, target, config=config, repo_root=repo_root, cache_dir=cache_dir
            )
            packages = [p for p in packages if p.source.kind != "index"]
            packages += [Package(name, version) for name, version in sorted(pins.items())]

    warnings: list[str] = []
    locked: list[LockedPackage] = []
    problems: list[Problem] = []
    looked_up = [p for p in packages if p.source.kind in ("index", "archive")]
    t0 = time.monotonic()
    sources = client.sources()
    if looked_up:
        say(
            f"looking up {len(looked_up)} packages on {len(sources)} package "
            f"source{'s' if len(sources) != 1 else ''}"
        )
    done_ahead = None
    if ahead is not None and cache_dir:
        # the child's answers are read as it stores them, not all after its end
        first = sources[0] if sources and not sources[0].is_local else None
        keys = _lookup_keys(looked_up)
        done_ahead = ahead.wait(
            config, cache_dir, None if first is None else lambda: client.read_ahead(first, keys)
        )
    if done_ahead is not None:  # its answers are in the cache: counted, and timed from its start
        t0 = done_ahead.started
        client.requests += done_ahead.requests
    by_key = {(p.name, p.version): p for p in looked_up}
    found = client.lookup_many(
        _lookup_keys(looked_up),
        done=lambda key, lookups: settled(by_key[key], lookups, target, machines, cross),
    )
    for pkg in packages:
        kind = pkg.source.kind
        outcome: LockedPackage | Problem
        if kind == "index":
            outcome = index_package(
                pkg, found[(pkg.name, pkg.version)], target, machines, cross, warnings
            )
        elif kind == "archive":
            outcome = archive(pkg, found[(pkg.name, pkg.version)], repo_root, target)
        else:
            outcome = separate(pkg, repo_root)
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        if outcome.kind == "index":
            outcome = with_hashes(client, outcome)
        locked.append(outcome)
    requests = client.requests
    if looked_up:
        say(
            f"looked up {len(looked_up)} packages in {time.monotonic() - t0:.1f} s "
            f"({requests} request{'s' if requests != 1 else ''})"
        )

    warnings += source_warnings(locked)
    for p in locked:
        for f in p.files:
            if f.yanked is not None and f.filename == p.installed:
                why = f": {f.yanked}" if f.yanked else ""
                warnings.append(f"{p.name}=={p.version} is yanked on {f.source.describe()}{why}")

    result = _render(env, locked, target, config, tuple(warnings), changes, platform, requests)
    if problems:
        raise UnlockablePackages(tuple(sorted(problems, key=lambda p: p.name)), result)
    return result


def _lookup_keys(packages: Sequence[Package]) -> list[tuple[str, str]]:
    """``(name, version)`` of the packages an index serves, compiled ones first: their pages
    are the large ones, the long poles of the lookup."""
    looked_up = [p for p in packages if p.source.kind in ("index", "archive")]
    looked_up.sort(key=lambda p: (all(t.endswith("-any") for t in p.wheel_tags), p.name))
    return [(p.name, p.version) for p in looked_up]


def _render(
    env: Environment,
    locked: list[LockedPackage],
    target: Target,
    config: IndexConfig,
    warnings: tuple[str, ...],
    changes: tuple[VersionChange, ...],
    platform: Optional[str],
    requests: int,
) -> LockResult:
    req = render_requirements(
        locked,
        target=target,
        environment_digest=env.digest,
        config=config,
        tool_version=__version__,
    )
    pylock = render_pylock(
        locked, target=target, environment_digest=env.digest, tool_version=__version__
    )
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
