"""Where the lock's cache lives (:mod:`.cache` keeps it): light enough for the lock's early
child (:mod:`.early`) to tell a cold cache before anything heavier imports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

CACHE_VERSION = "v1"


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reprobox" / "index"


def cache_file(cache_dir: Path) -> Path:
    """The SQLite file of the cache under ``cache_dir``."""
    return Path(cache_dir) / CACHE_VERSION / "index.sqlite"
