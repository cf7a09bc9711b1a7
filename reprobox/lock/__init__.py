"""lock: hashed, installable lock files from a captured environment, without re-resolving.

A captured environment is already resolved; its lock is its exact set of distributions with the
hashes of their files, looked up on the indexes the host's pip is configured with:

* config.py — ``read_index_config() -> IndexConfig``: pip's files and ``PIP_*`` variables;
* index.py, pages.py, transport.py, cache.py — PEP 691 / 503 pages fetched in parallel over a
  keep-alive pool, parsed for one release, cached;
* decide.py, select.py — per package, the installed file (from its WHEEL tags), the files a
  Linux rebuild could pick, and the source that serves them;
* requirements.py, pylock.py — the two files.

``lock_environment`` runs the pipeline (locker.py) after checking the capture (checks.py);
``platform=`` re-resolves a macOS or Windows capture for Linux first (crossplatform.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .config import IndexConfig, read_index_config
    from .locker import lock_environment
    from .result import LockedPackage, LockResult, Problem, UnlockablePackages, VersionChange

#: Each name and the module that defines it, imported on first use: ``reprobox lock`` imports
#: the index client (``.index``) before the rest of the lock to send its first queries early
#: (:mod:`.early`), which importing the whole package here would defeat.
_WHERE = {
    "IndexConfig": ".config",
    "read_index_config": ".config",
    "lock_environment": ".locker",
    "LockedPackage": ".result",
    "LockResult": ".result",
    "Problem": ".result",
    "UnlockablePackages": ".result",
    "VersionChange": ".result",
}


__getattr__ = exports(__name__, _WHERE)


__all__ = [
    "IndexConfig",
    "LockResult",
    "LockedPackage",
    "Problem",
    "UnlockablePackages",
    "VersionChange",
    "lock_environment",
    "read_index_config",
]
