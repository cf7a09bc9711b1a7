"""The package's templates (``templates/``: Dockerfiles, the PR text, the sbatch script) and
the one way they are rendered."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _jinja_env() -> Any:
    # lazy: jinja2 costs 40-80 ms to import, and only rendering commands need it
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reprobox.templates", "."),
        autoescape=False,  # a Dockerfile, not HTML: values are shell- or JSON-quoted explicitly
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
        bytecode_cache=_template_bytecode_cache(jinja2),
    )
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["json"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    return env


#: Where compiled templates are kept first: beside the templates, as Python keeps bytecode.
PACKAGE_CACHE = Path(__file__).resolve().parent / "templates" / "__pycache__"


def _template_bytecode_cache(jinja2):  # type: ignore[no-untyped-def]
    """The templates compiled once (compiling the Dockerfile template costs ~60 ms per
    process), kept as Python keeps bytecode: beside the package's templates
    (``templates/__pycache__``), where that folder is this user's own and no one else may
    write to it, and bytecode may be written (not under ``PYTHONDONTWRITEBYTECODE``); else
    in the user's cache (``XDG_CACHE_HOME``). Jinja checks each entry against its template's
    source digest and its own version; no writable cache, no cache."""
    if not sys.dont_write_bytecode and _own_folder(PACKAGE_CACHE):
        return jinja2.FileSystemBytecodeCache(str(PACKAGE_CACHE))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "reprobox" / "templates"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


def _own_folder(folder: Path) -> bool:
    """Whether ``folder`` is (or could be made) a folder of this user's, not a link, that
    only this user may write to: compiled code is read back from it."""
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and os.access(folder, os.W_OK)
    )


def load_template(name: str) -> Any:
    """One of the package's templates (``templates/<name>``), compiled: jinja2 keeps it, so a
    later :func:`render_template` of it in this process does not compile it again."""
    return _jinja_env().get_template(name)


def render_template(name: str, **context: object) -> str:
    """Render one of the package's templates (``templates/<name>``)."""
    return str(load_template(name).render(**context))
