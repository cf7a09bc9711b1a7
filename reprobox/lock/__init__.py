"""lock: hashed, installable lock files from a captured environment, without re-resolving.

A captured environment is already resolved; its lock is its exact set of distributions with the
hashes of their files, looked up on the indexes the host's pip is configured with:

    read_index_config() -> IndexConfig          pip's files + PIP_* variables (config.py)
    IndexClient.lookup_many()                   PEP 691 / 503 pages, in parallel, cached (index.py)
    installed_files() / rebuild_files()         which files, from WHEEL tags (select.py)
    render_requirements() / render_pylock()     the two files (requirements.py, pylock.py)

``lock_environment`` runs the whole pipeline (locker.py); ``--platform`` re-resolves a macOS or
Windows capture for Linux first (crossplatform.py).
"""

from __future__ import annotations

from .config import IndexConfig, read_index_config
from .locker import lock_environment
from .result import LockedPackage, LockResult, Problem, UnlockablePackages, VersionChange

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
