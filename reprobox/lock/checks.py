"""Refuse hostile values of a capture before they reach a requirement line, a URL or a path.

An ``environment.json`` that arrives in a pull request is untrusted. Only what the lock writes or
uses is checked here — names, versions, wheel tags, sources, the interpreter version and platform
— with the project's strict grammars (:mod:`reprobox.model.grammar`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Iterator

from ..model import grammar as v
from ..errors import UsageError, ValidationError
from ..model import Environment
from ..names import canonical_name
from ..store import FILE_NAME_RE

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
                raise ValidationError(
                    f"{where}.source.vcs", src.vcs, "is not one of git, hg, svn, bzr"
                )
            v.url(f"{where}.source.url", src.url, v.VCS_SCHEMES, allow_scp=True)
            if src.commit is not None:
                v.vcs_commit(src.commit, f"{where}.source.commit")
            if src.requested_revision is not None:
                v.git_ref(src.requested_revision, f"{where}.source.requested_revision")
            if src.path is not None:  # a local-path source sealed into the experiment
                if not FILE_NAME_RE.match(src.path):
                    raise ValidationError(
                        f"{where}.source.path", src.path, "is not a file of the experiment"
                    )
            if src.hash is not None:
                v.archive_hash(src.hash, f"{where}.source.hash")
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


# --------------------------------------------------------------------------- the lock to install


class LockRefused(UsageError):
    """A lock file of the capture says something its environment.json does not (exit 2)."""

    def __init__(self, file: str, line: int, what: str, reason: str) -> None:
        super().__init__(
            f"refusing {file} line {line}: {what} {reason}",
            "a lock is installed only as reprobox writes it from environment.json; the capture "
            "was edited by hand or comes from an untrusted source: re-lock it from its "
            "environment with `reprobox lock <exp>`, or re-capture it",
        )
        self.file = file
        self.line = line
        self.what = what


@dataclass(frozen=True)
class Pin:
    """One checked requirement of requirements.lock: a recorded index package, exactly."""

    name: str  # normalized
    version: str
    hashes: tuple[str, ...]  # sha256 hex digests, lower case
    line: int

    @property
    def requirement(self) -> str:
        """The pin as a requirements line that reprobox writes: ``name==version --hash=...``."""
        return f"{self.name}=={self.version} " + " ".join(f"--hash=sha256:{h}" for h in self.hashes)


_PIN_LINE = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9.+!_-]{1,128})",
    re.ASCII,
)
_HASH = re.compile(r"--hash=sha256:(?P<hex>[0-9a-f]{64})", re.ASCII)
MAX_LOCK_BYTES = 8 << 20


def _shown(token: str) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in token)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first physical line number, logical line): backslash continuations joined, comments
    (a ``#`` at the start or after whitespace, as pip reads them) dropped."""
    start, parts = 0, []  # type: tuple[int, list[str]]
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not parts:
            start = number
        stripped = line.strip()
        if stripped.startswith("#"):
            line = ""
        else:
            line = re.sub(r"(^|\s)#.*$", "", line)
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        joined = " ".join(p.strip() for p in parts).strip()
        parts = []
        if joined:
            yield start, joined


def check_requirements_lock(
    text: str, env: Environment, file: str = "requirements.lock"
) -> tuple[Pin, ...]:
    """Every line of the lock that will be installed, checked against the recorded environment.

    Allowed: comments, blank lines, and ``name==version --hash=sha256:<hex>...`` where ``name`` is
    a package environment.json records as installed from an index, at its recorded version, each
    at most once, with at least one well-formed sha256. Anything else (an index or find-links
    option, ``-e``, ``-r``, ``-c``, a URL, a marker, an extra, a package the capture does not
    list) is refused, naming the file, the line and what was found there.
    """
    if len(text) > MAX_LOCK_BYTES:
        raise LockRefused(file, 1, "the file", f"is larger than {MAX_LOCK_BYTES >> 20} MiB")
    bad = re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)
    if bad:
        raise LockRefused(
            file,
            text.count("\n", 0, bad.start()) + 1,
            "a control character",
            "is not part of a lock",
        )
    recorded = {canonical_name(p.name): p for p in env.packages}
    pins: dict[str, Pin] = {}
    for number, line in _logical_lines(text):
        tokens = line.split()
        head = tokens[0]
        if head.startswith("-"):
            raise LockRefused(
                file,
                number,
                f"the option {_shown(head)}",
                "is not one reprobox writes (indexes come from this machine's "
                "pip configuration only)",
            )
        m = _PIN_LINE.fullmatch(head)
        if m is None:
            raise LockRefused(
                file,
                number,
                f"the requirement {_shown(head)}",
                "is not an exact `name==version` pin",
            )
        name, version = canonical_name(m.group("name")), m.group("version")
        pkg = recorded.get(name)
        if pkg is None:
            raise LockRefused(
                file, number, f"the package {m.group('name')!r}", "is not in environment.json"
            )
        if pkg.source.kind != "index":
            raise LockRefused(
                file,
                number,
                f"the package {m.group('name')!r}",
                f"was installed from a {pkg.source.kind} source, not an index",
            )
        if version != pkg.version:
            raise LockRefused(
                file,
                number,
                f"the package {m.group('name')!r}",
                f"is pinned at {version!r}, environment.json records {pkg.version!r}",
            )
        if name in pins:
            raise LockRefused(
                file,
                number,
                f"the package {m.group('name')!r}",
                f"is pinned twice (first on line {pins[name].line})",
            )
        hashes: list[str] = []
        for token in tokens[1:]:
            h = _HASH.fullmatch(token)
            if h is None:
                what = "hash" if token.startswith("--hash") else "option"
                raise LockRefused(
                    file,
                    number,
                    f"the {what} {_shown(token)} of {m.group('name')!r}",
                    "is not a well-formed `--hash=sha256:<64 hex digits>`",
                )
            hashes.append(h.group("hex"))
        if not hashes:
            raise LockRefused(file, number, f"the package {m.group('name')!r}", "has no hash")
        pins[name] = Pin(name, version, tuple(dict.fromkeys(hashes)), number)
    return tuple(pins.values())


def check_pylock(text: str, env: Environment, file: str = "pylock.toml") -> None:
    """pylock.toml names only recorded packages at their recorded versions.

    reprobox never installs from pylock.toml's URLs (the host looks every file up on its own
    indexes by name, version and hash), so only its package list is checked: a file that
    disagrees with environment.json is refused, naming the package.
    """
    if len(text) > MAX_LOCK_BYTES:
        raise LockRefused(file, 1, "the file", f"is larger than {MAX_LOCK_BYTES >> 20} MiB")
    if sys.version_info >= (3, 11):
        import tomllib  # lazy: only a build reads pylock.toml, a lock writes it
    else:  # pragma: no cover - older interpreters only
        import tomli as tomllib  # lazy: as above
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockRefused(
            file, getattr(exc, "lineno", 0) or 1, "the file", f"is not valid TOML ({exc})"
        ) from None
    except RecursionError:
        raise LockRefused(file, 1, "the file", "nests too deeply to be read") from None
    recorded = {canonical_name(p.name): p for p in env.packages}
    packages = data.get("packages", [])
    if not isinstance(packages, list):
        raise LockRefused(file, 1, "`packages`", "is not an array of tables")
    for i, pkg in enumerate(packages):
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            raise LockRefused(file, 1, f"packages[{i}]", "has no name")
        rec = recorded.get(canonical_name(pkg["name"]))
        if rec is None:
            raise LockRefused(
                file,
                _line_of(text, pkg["name"]),
                f"the package {pkg['name']!r}",
                "is not in environment.json",
            )
        version = pkg.get("version")
        if version is not None and version != rec.version:
            raise LockRefused(
                file,
                _line_of(text, pkg["name"]),
                f"the package {pkg['name']!r}",
                f"is pinned at {version!r}, environment.json records {rec.version!r}",
            )


def _line_of(text: str, name: str) -> int:
    needle = f"name = {json.dumps(name)}"
    pos = text.find(needle)
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1
