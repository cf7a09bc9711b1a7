"""``pylock.toml`` (PEP 751, lock-version 1.0), written from a lock (pure rendering).

One ``environments`` marker pins the exact interpreter version and platform of the capture. Index
packages list their wheels and sdist with URL, size, upload time and hashes, plus the ``index``
that served them; VCS, directory and archive packages get their own entry kinds. Paths are
relative to the lock file, which lives at ``.reprobox/experiments/<id>/pylock.toml``.

TOML is written by hand (no writer dependency): every string goes through :func:`_s`, a JSON
string literal, which is a valid TOML basic string.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Optional, Sequence

from ..redact import strip_url_credentials
from .dists import DistFile
from .result import LockedPackage
from .select import Target

#: From the lock file up to the repository root: .reprobox/experiments/<id>/pylock.toml
LOCK_TO_REPO = "../../.."
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's); a plain one, as most names, URLs and
    digests are, needs none (a lock writes ~9,000 of them)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def _inline(pairs: Iterable[tuple[str, Optional[str]]]) -> str:
    """An inline table from already-rendered values (``None`` values are left out)."""
    return "{" + ", ".join(f"{k} = {v}" for k, v in pairs if v is not None) + "}"


def _hashes(f: DistFile) -> str:
    keys = [k for k in ("sha256", "sha384", "sha512") if k in f.hashes] or sorted(f.hashes)
    return _inline((k, _s(f.hashes[k])) for k in keys)


def _file_entry(f: DistFile) -> str:
    upload = f.upload_time if f.upload_time and _DATETIME.match(f.upload_time) else None
    return _inline(
        [
            ("name", _s(f.filename)),
            ("url", _s(strip_url_credentials(f.url))),
            ("size", str(f.size) if isinstance(f.size, int) else None),
            ("upload-time", upload),
            ("hashes", _hashes(f)),
        ]
    )


_SCP = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)$")


def vcs_url(url: str, vcs: str) -> str:
    """A VCS URL as PEP 751 wants it: a real URL (git's ``user@host:path`` becomes
    ``ssh://user@host/path``), without the ``git+`` prefix (``type`` says it), no credentials
    (an ssh user name is not one, and the capture refused passwords already)."""
    if url.startswith(f"{vcs}+"):
        url = url[len(vcs) + 1 :]
    if "://" not in url:
        m = _SCP.match(url)
        return f"ssh://{m.group('user') or ''}{m.group('host')}/{m.group('path')}" if m else url
    if url.startswith("ssh://"):
        return url
    return strip_url_credentials(url)


def _repo_relative(path: str) -> str:
    return LOCK_TO_REPO if path in ("", ".") else f"{LOCK_TO_REPO}/{path}"


def _package(p: LockedPackage) -> list[str]:
    out = ["[[packages]]", f"name = {_s(p.name)}"]
    src = p.origin
    if p.kind == "index":
        out.append(f"version = {_s(p.version)}")
        if p.source is not None and p.source.kind == "index":
            out.append(f"index = {_s(p.source.redacted)}")
        sdists = [f for f in p.files if f.filename.endswith((".tar.gz", ".zip"))]
        wheels = [f for f in p.files if f.is_wheel]
        if sdists:
            best = sorted(sdists, key=lambda f: (not f.filename.endswith(".tar.gz"), f.filename))
            out.append(f"sdist = {_file_entry(best[0])}")
        if not sdists and not wheels and p.files:
            # only an old-style sdist (.tar.bz2...): PEP 751 has no sdist entry for it
            f = p.files[0]
            out.append(
                "archive = "
                + _inline([("url", _s(strip_url_credentials(f.url))), ("hashes", _hashes(f))])
            )
        if wheels:
            out.append("wheels = [")
            out += [f"  {_file_entry(f)}," for f in wheels]
            out.append("]")
    elif (
        p.kind == "vcs"
        and src is not None
        and src.path
        and src.hash
        and ((src.url or "").startswith(("file:", f"{src.vcs or 'git'}+file:")))
    ):
        # a repository of the capture machine: its commit is a file of the experiment, next to
        # this lock (PEP 751 paths are relative to the lock's folder)
        algo, _, digest = src.hash.partition("=")
        out.append(f"version = {_s(p.version)}")
        out.append(
            "archive = "
            + _inline(
                [
                    ("path", _s(src.path)),
                    ("hashes", _inline([(algo, _s(digest))])),
                ]
            )
        )
    elif p.kind == "vcs" and src is not None:
        out.append(f"version = {_s(p.version)}")
        out.append(
            "vcs = "
            + _inline(
                [
                    ("type", _s(src.vcs or "git")),
                    ("url", _s(vcs_url(src.url or "", src.vcs or "git"))),
                    (
                        "requested-revision",
                        _s(src.requested_revision) if src.requested_revision else None,
                    ),
                    ("commit-id", _s(src.commit or "")),
                    ("subdirectory", _s(src.subdirectory) if src.subdirectory else None),
                ]
            )
        )
    elif p.kind == "directory":
        out.append(
            "directory = "
            + _inline(
                [
                    ("path", _s(_repo_relative(p.repo_path or "."))),
                    ("editable", "true" if src is not None and src.editable else "false"),
                    (
                        "subdirectory",
                        _s(src.subdirectory) if src is not None and src.subdirectory else None,
                    ),
                ]
            )
        )
    elif p.kind == "archive" and src is not None:
        algo, _, digest = (src.hash or "").partition("=")
        location = (
            ("path", _s(_repo_relative(p.repo_path)))
            if p.repo_path
            else ("url", _s(strip_url_credentials(src.url or "")))
        )
        out.append(f"version = {_s(p.version)}")
        out.append(
            "archive = "
            + _inline(
                [
                    location,
                    ("hashes", _inline([(algo, _s(digest))])),
                    ("subdirectory", _s(src.subdirectory) if src.subdirectory else None),
                ]
            )
        )
    tool = []
    if p.source is not None and p.source.kind == "find-links":
        tool.append(f"find-links = {_s(p.source.redacted)}")
    if p.installed:
        tool.append(f"installed = {_s(p.installed)}")
    if p.built_from_sdist:
        tool.append("built-from-sdist = true")
    if p.kind == "vcs" and src is not None and src.path and src.hash:
        tool.append(f"vcs-url = {_s(vcs_url(src.url or '', src.vcs or 'git'))}")
        tool.append(f"commit-id = {_s(src.commit or '')}")
    if p.kind == "directory":  # PEP 751 keeps a source tree's version out of `version`
        tool.append(f"captured-version = {_s(p.version)}")
    if tool:
        out.append("")
        out.append("[packages.tool.reprobox]")
        out += tool
    return out


def render_pylock(
    packages: Sequence[LockedPackage],
    *,
    target: Target,
    environment_digest: str,
    tool_version: str,
) -> str:
    out = [
        "# PEP 751 lock written by reprobox from the captured environment (not re-resolved).",
        "# Paths are relative to this file, at .reprobox/experiments/<id>/pylock.toml.",
        'lock-version = "1.0"',
        f"environments = [{_s(target.marker())}]",
        f"requires-python = {_s('==' + target.full_version)}",
        f"created-by = {_s('reprobox')}",
        "",
        "[tool.reprobox]",
        f"environment-digest = {_s(environment_digest)}",
        f"version = {_s(tool_version)}",
    ]
    for p in sorted(packages, key=lambda p: p.name):
        out.append("")
        out += _package(p)
    return "\n".join(out) + "\n"
