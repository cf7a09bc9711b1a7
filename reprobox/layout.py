"""Where a project's records and local state lie: the project root and ``.reprobox/local``.

Importable without the rest of reprobox (the record model, the store): the command line finds
them before it loads, to start a first capture's probe early (:mod:`reprobox.capture.early`) and
a lock's first index queries (:mod:`reprobox.lock.early`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import StoreError
from .safefs import SafeDir

STORE_DIR = ".reprobox"
EXPERIMENTS = "experiments"
ENVIRONMENT_FILE = "environment.json"
#: An experiment's id, its folder's name; a reference may give a prefix of at least MIN_PREFIX.
ID_RE = re.compile(r"^[0-9a-f]{12}$")
MIN_PREFIX = 4
#: The largest experiment.json, environment.json or lock file the store reads.
MAX_RECORD_BYTES = 8 * 1024 * 1024
LOCAL = "local"
#: local/ ignores itself (``*``), so a clone whose .reprobox/.gitignore was never committed stays
#: clean too.
LOCAL_GITIGNORE = "# written by reprobox: nothing here is committed\n*\n"


def find_root(start: Optional[Path] = None) -> Path:
    """The project root: the enclosing git work tree, else the nearest folder with ``.reprobox``."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    for folder in (start, *start.parents):
        if (folder / STORE_DIR).is_dir():
            return folder
    raise StoreError(
        f"{start} is not inside a git repository",
        "run reprobox from your project's git repository (or create one with `git init`)",
    )


def open_local(root: Path, *parts: str) -> SafeDir:
    """``.reprobox/local/<parts>`` of the project at ``root``, created, every component a real
    folder (never a link); the top-level ignore file is only written with the first capture."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)  # the root itself is trusted
    with SafeDir.open(root, [STORE_DIR], create=True) as top, top.sub(LOCAL, create=True) as local:
        local.create_new(".gitignore", LOCAL_GITIGNORE)
        return local.walk(parts, create=True)


def local_dir(root: Path, *parts: str) -> Path:
    """The path of :func:`open_local`'s folder."""
    with open_local(root, *parts) as d:
        return d.path
