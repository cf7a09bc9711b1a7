"""Refuse hostile values of a capture before they reach a requirement line, a URL or a path.

An ``environment.json`` that arrives in a pull request is untrusted. Only what the lock writes or
uses is checked here — names, versions, wheel tags, sources, the interpreter version and platform
— with the project's strict grammars (:mod:`reprobox.validate`).
"""

from __future__ import annotations

import re

from ..errors import ValidationError
from ..model import Environment

_PY_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:(?:a|b|rc)[0-9]+)?\+?", re.ASCII)
_WORD = re.compile(r"[A-Za-z0-9_.]+", re.ASCII)
_PLATFORM = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


def _match(field: str, value: object, pattern: re.Pattern[str], max_len: int, what: str) -> None:
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        raise ValidationError(field, value, f"is not a valid {what}")


def check_environment(env: Environment) -> None:
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
