"""Strict grammars for every value of a capture that reaches a Dockerfile, a shell, a path or pip.

A capture that arrives in a pull request is untrusted input: anyone can edit the JSON under
``.reprobox/``. Before anything is built, checked out or run from it, each value that will end up
in a Dockerfile line, a shell command, a pip requirement line or a file-system path is checked
against the narrowest grammar that real captures satisfy. A value that does not match is refused
with :class:`~reprobox.errors.ValidationError` naming the field; nothing is "cleaned up", because a
hostile value silently repaired is still a hostile capture.

Every validator takes the value and the name of the field it came from (so the message can say
``packages[3].version``), returns the value unchanged when it is acceptable and raises
``ValidationError`` otherwise, whatever the type of what it was given. Anything accepted contains no
control characters (C0, C1, DEL), no Unicode format characters (bidi overrides, zero-width
characters), no line or paragraph separators and no lone surrogates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from ..errors import ValidationError

# --------------------------------------------------------------------------- limits

MAX_NAME = 200  # package names, apt names, env var names
MAX_VERSION = 128
MAX_PATH = 1024  # characters in a repo-relative path
MAX_COMPONENT_BYTES = 255  # one path component, in UTF-8 bytes (ext4, xfs, apfs)
MAX_URL = 2048
MAX_COMMAND = 16 * 1024
MAX_ENV_VALUE = 32 * 1024
MAX_LABEL = 1024
MAX_EXPERIMENT_NAME = 100
MAX_TEXT = 4096  # free, display-only text (CPU model, GPU name, metric keys)
MAX_PATCH_BYTES = 16 * 1024 * 1024
MAX_JSON_BYTES = 8 * 1024 * 1024

#: Unicode categories never accepted anywhere: control, format (bidi overrides, zero-width
#: joiners...), surrogates, line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

#: URL schemes a capture may name, by use.
VCS_SCHEMES = (
    "https",
    "http",
    "ssh",
    "git",
    "file",
    "git+https",
    "git+http",
    "git+ssh",
    "git+file",
    "hg+https",
    "hg+http",
    "hg+ssh",
    "svn+https",
    "svn+http",
    "svn+ssh",
    "bzr+https",
    "bzr+ssh",
)
ARCHIVE_SCHEMES = ("https", "http", "file")
REMOTE_SCHEMES = ("https", "http", "ssh", "git", "file")

#: Environment variables a capture may never set on a replay: they change which code the dynamic
#: loader, the shell, git or the package installer runs or fetches, behind the recorded command.
_DANGEROUS_ENV = re.compile(
    r"(LD_[A-Z0-9_]*|DYLD_[A-Z0-9_]*|BASH_ENV|ENV|BASH_FUNC_.*|SHELLOPTS|BASHOPTS|PS4|"
    r"PROMPT_COMMAND|IFS|PATH|PYTHONSTARTUP|PYTHONHOME|PYTHONEXECUTABLE|PYTHONUSERBASE|"
    r"PERL5OPT|PERL5LIB|NODE_OPTIONS|RUBYOPT|GIT_[A-Z0-9_]*|PIP_[A-Z0-9_]*|UV_[A-Z0-9_]*|"
    r"CONDA_[A-Z0-9_]*|DOCKER_[A-Z0-9_]*|HTTPS?_PROXY|ALL_PROXY|NO_PROXY|SSL_CERT_[A-Z_]*|"
    r"REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- building blocks


def _fail(field: str, value: object, reason: str, hint: str | None = None) -> ValidationError:
    return ValidationError(field, value, reason, hint)


def _str(field: str, value: Any, max_len: int, *, empty: bool = False) -> str:
    """The value as a non-empty ``str`` within ``max_len`` characters, or a refusal."""
    if not isinstance(value, str):
        raise _fail(field, value, f"expected a string, got {type(value).__name__}")
    if not value and not empty:
        raise _fail(field, value, "is empty")
    if len(value) > max_len:
        raise _fail(field, value, f"is {len(value)} characters long (the limit is {max_len})")
    return value


def _forbidden_char(value: str, allow: str = "") -> str | None:
    """The first character that may never appear in an accepted value, described; else None."""
    for i, ch in enumerate(value):
        if ch in allow:
            continue
        cat = unicodedata.category(ch)
        if cat in _FORBIDDEN_CATEGORIES:
            name = unicodedata.name(ch, "") if cat != "Cs" else "surrogate"
            what = {
                "Cc": "a control character",
                "Cf": "an invisible formatting character",
                "Cs": "a lone surrogate",
                "Zl": "a line separator",
                "Zp": "a paragraph separator",
            }[cat]
            label = f"U+{ord(ch):04X}" + (f" {name}" if name else "")
            return f"contains {what} ({label}) at position {i}"
    return None


def clean_text(field: str, value: Any, max_len: int = MAX_TEXT, *, allow: str = "") -> str:
    """Display-only text: any printable characters, nothing that rewrites a terminal or a line."""
    value = _str(field, value, max_len)
    problem = _forbidden_char(value, allow)
    if problem:
        raise _fail(field, value, problem)
    return value


def _match(field: str, value: Any, pattern: re.Pattern[str], max_len: int, what: str) -> str:
    value = _str(field, value, max_len)
    if not pattern.fullmatch(value):
        problem = _forbidden_char(value)
        raise _fail(field, value, problem or f"is not a valid {what}")
    return value


# --------------------------------------------------------------------------- Python packages

_PEP508_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
_VERSION_CHARS = re.compile(r"[A-Za-z0-9.!+_-]+", re.ASCII)


def package_name(value: Any, field: str = "package name") -> str:
    """A distribution name as PEP 508 allows it (what follows goes into ``name==version``)."""
    return _match(field, value, _PEP508_NAME, MAX_NAME, "Python package name (PEP 508)")


def version(value: Any, field: str = "version") -> str:
    """A PEP 440 version (local labels allowed), with no surrounding or inner whitespace.

    ``packaging`` itself tolerates leading and trailing whitespace, newlines included; a version
    lands after ``==`` on a requirement line, so the character set is checked first.
    """
    value = _match(field, value, _VERSION_CHARS, MAX_VERSION, "version")
    try:
        Version(value)
    except InvalidVersion:
        raise _fail(field, value, "is not a PEP 440 version") from None
    return value


def installer(value: Any, field: str = "installer") -> str:
    return _match(
        field, value, re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII), 64, "installer name"
    )


_WHEEL_TAG = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+", re.ASCII)


def wheel_tag(value: Any, field: str = "wheel tag") -> str:
    """``cp311-cp311-manylinux_2_17_x86_64`` (compressed tag sets use dots)."""
    return _match(field, value, _WHEEL_TAG, 512, "wheel tag")


_PLATFORM_TAG = re.compile(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+)?", re.ASCII)


def platform_tag(value: Any, field: str = "platform tag") -> str:
    """A compatible tag of the interpreter: a platform (``manylinux_2_36_x86_64``) or a whole
    wheel tag (``cp311-cp311-manylinux_2_36_x86_64``); probes have recorded both."""
    return _match(field, value, _PLATFORM_TAG, 128, "platform tag")


_ARCHIVE_HASH = re.compile(r"[a-z0-9]{3,16}=[0-9a-f]{32,128}", re.ASCII)


def archive_hash(value: Any, field: str = "hash") -> str:
    """PEP 610 ``archive_info.hash``: ``sha256=<hex>``."""
    return _match(field, value, _ARCHIVE_HASH, 160, "archive hash (algorithm=hex)")


# --------------------------------------------------------------------------- paths

_PATH_PUNCT = frozenset("._-+@=,~ ")


def relpath(field: str, value: Any, *, max_len: int = MAX_PATH, allow_dot: bool = True) -> str:
    """A repository-relative POSIX path that stays in the checkout and out of ``.git``.

    Accepted: letters and digits (any script), ``. _ - + @ = , ~`` and inner spaces, ``/`` between
    components, one trailing ``/``. Refused: absolute paths, ``..``, empty components, backslashes,
    shell metacharacters, control and invisible characters, a leading ``-`` (it would read as an
    option on a command line) and any ``.git`` component (hooks and config there run code).
    ``"."`` alone (the root) is accepted unless ``allow_dot`` is false.
    """
    value = _str(field, value, max_len)
    problem = _forbidden_char(value)
    if problem:
        raise _fail(field, value, problem)
    if value.startswith("/"):
        raise _fail(
            field, value, "is an absolute path; only paths inside the repository are allowed"
        )
    if "\\" in value:
        raise _fail(field, value, "contains a backslash; paths are POSIX, separated by '/'")
    if value.startswith("-"):
        raise _fail(field, value, "starts with '-', which a command line would read as an option")
    if value.startswith("~"):
        raise _fail(field, value, "starts with '~', which a shell would expand to a home folder")
    if value == ".":
        if not allow_dot:
            raise _fail(field, value, "names the repository root itself, not a file in it")
        return value
    body = value.removesuffix("/")
    for part in body.split("/"):
        if part == "":
            raise _fail(field, value, "has an empty path component ('//' or a leading '/')")
        if part == "..":
            raise _fail(field, value, "contains '..', which leaves the repository")
        if part.rstrip(". ").casefold() == ".git":
            raise _fail(
                field, value, "points into .git/, which holds hooks and config that run code"
            )
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise _fail(field, value, f"has a path component over {MAX_COMPONENT_BYTES} bytes")
        if part != part.strip(" "):
            raise _fail(field, value, "has a path component that starts or ends with a space")
        for ch in part:
            if not (ch.isalnum() or ch in _PATH_PUNCT):
                raise _fail(field, value, f"contains {ch!r}, which is not allowed in a path here")
    return value


def path_inside(root: Path, rel: Any, field: str) -> Path:
    """``root / rel`` resolved, refused unless it stays inside ``root`` after following symlinks.

    The grammar check (:func:`relpath`) keeps ``..`` and absolute paths out; this catches the other
    way out of a checkout: a symbolic link (committed in the repository, or created by a patch)
    that points elsewhere. The path need not exist; the part that exists is resolved.
    """
    rel = relpath(field, rel)
    try:
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise _fail(field, rel, f"the checkout {root} cannot be resolved ({exc})") from None
    try:
        target = (base / rel).resolve(strict=False)
    except (OSError, RuntimeError):  # symlink loop
        raise _fail(field, rel, "goes through a symbolic link loop") from None
    if target != base and base not in target.parents:
        raise _fail(
            field,
            rel,
            f"resolves to {target}, outside the checkout {base} "
            "(a symbolic link points out of the repository)",
        )
    return target


def local_path(field: str, value: Any) -> str:
    """An informational path outside the repository (an editable install elsewhere)."""
    value = clean_text(field, value, MAX_PATH)
    if any(ch in value for ch in "\\`$;|&<>\"'*?"):
        raise _fail(field, value, "contains shell metacharacters")
    return value


def checked_file(root: Path, rel: Any, field: str, max_bytes: int) -> Path:
    """A regular file inside ``root`` (no symlink out), no larger than ``max_bytes``."""
    path = path_inside(root, rel, field)
    if not path.is_file():
        raise _fail(field, rel, "is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise _fail(
            field,
            rel,
            f"is {size} bytes, over the {max_bytes} byte limit",
            "an experiment record holds small text files; re-capture it",
        )
    return path


# --------------------------------------------------------------------------- URLs

_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@&+,=%]+", re.ASCII)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.ASCII)
_SCP = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!//)[A-Za-z0-9._~/+-]+", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", re.ASCII)
_SSH_SCHEMES = ("ssh", "git+ssh", "hg+ssh", "svn+ssh", "bzr+ssh")


def url(
    field: str, value: Any, schemes: Sequence[str] = ARCHIVE_SCHEMES, *, allow_scp: bool = False
) -> str:
    """A URL with an allowed scheme, no credentials, no whitespace, quotes or shell characters.

    ``&`` is allowed only in the query and the fragment (``#egg=x&subdirectory=y``).

    ``allow_scp`` accepts git's ``git@host:org/repo.git`` form (a user name for ssh is not a
    credential). Percent-encoded control characters are refused too: they decode into paths.
    """
    value = _str(field, value, MAX_URL)
    if allow_scp and "://" not in value and _SCP.fullmatch(value):
        if value.startswith("-"):
            raise _fail(field, value, "starts with '-'")
        return value
    if not _URL_CHARS.fullmatch(value):
        problem = _forbidden_char(value)
        raise _fail(
            field,
            value,
            problem
            or "contains characters a URL here may not hold "
            "(whitespace, quotes, shell metacharacters or non-ASCII)",
        )
    if "&" in re.split(r"[?#]", value, maxsplit=1)[0]:
        raise _fail(field, value, "has '&' outside its query or fragment")
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise _fail(field, value, "has a malformed percent escape")
    if re.search(r"%(?:[01][0-9A-Fa-f]|7[Ff])", value):
        raise _fail(field, value, "encodes a control character (%00-%1F or %7F)")
    scheme, sep, _ = value.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise _fail(field, value, "has no scheme (expected one of " + ", ".join(schemes) + ")")
    if scheme not in schemes:
        raise _fail(field, value, f"uses the scheme {scheme!r}; allowed: " + ", ".join(schemes))
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _fail(field, value, f"is not a well-formed URL ({exc})") from None
    if parts.password is not None or (parts.username is not None and scheme not in _SSH_SCHEMES):
        raise _fail(
            field,
            value,
            "carries credentials",
            "remove the user name and password; reprobox never records credentials",
        )
    if scheme.endswith("file"):
        if parts.netloc not in ("", "localhost"):
            raise _fail(field, value, "is a file URL on another host")
    else:
        host = parts.netloc.rsplit("@", 1)[-1]
        if parts.port is not None:
            host = host.rsplit(":", 1)[0]
        if not host or not _HOST.fullmatch(host):
            raise _fail(field, value, "has no valid host name")
    return value


# --------------------------------------------------------------------------- git

_COMMIT = re.compile(r"[0-9a-f]{7,64}", re.ASCII)
# git check-ref-format, restricted to characters real branch names use.
_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+/-]*", re.ASCII)


def vcs_commit(value: Any, field: str = "commit") -> str:
    """A commit id: 7 to 64 lowercase hex digits (SHA-1 or SHA-256 git, Mercurial)."""
    return _match(field, value, _COMMIT, 64, "commit id (7-64 lowercase hex digits)")


def git_ref(value: Any, field: str = "branch") -> str:
    """A branch or tag name that git would accept and a command line cannot mistake for more."""
    value = _match(field, value, _REF, 255, "git branch or tag name")
    if (
        ".." in value
        or "//" in value
        or "@{" in value
        or value.endswith((".", "/", ".lock"))
        or "/." in value
    ):
        raise _fail(field, value, "is not a valid git ref name")
    return value


def sha256_hex(value: Any, field: str = "sha256") -> str:
    return _match(field, value, re.compile(r"[0-9a-f]{64}", re.ASCII), 64, "sha256 hex digest")


def digest(value: Any, field: str = "digest") -> str:
    return _match(
        field,
        value,
        re.compile(r"sha256:[0-9a-f]{64}", re.ASCII),
        71,
        "digest (sha256:<64 hex digits>)",
    )


# --------------------------------------------------------------------------- images

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)


def image_tag(value: Any, field: str = "image") -> str:
    """An image reference in the grammar of distribution/reference (``name[:tag][@digest]``).

    The domain is only recognised before the first ``/``; the name part is at most 255 characters.
    """
    value = _str(field, value, 512)
    m = _REFERENCE.fullmatch(value)
    if not m:
        problem = _forbidden_char(value)
        raise _fail(field, value, problem or "is not a valid image reference (name[:tag][@digest])")
    if len(m.group("name")) > 255:
        raise _fail(field, value, "has an image name longer than 255 characters")
    return value


def label_value(value: Any, field: str = "label") -> str:
    """A value placed in a Dockerfile ``LABEL`` or image label: printable, no quote or ``$``."""
    value = clean_text(field, value, MAX_LABEL)
    for ch in '"\\$`':
        if ch in value:
            raise _fail(field, value, f"contains {ch!r}, which a Dockerfile would interpret")
    return value


# --------------------------------------------------------------------------- system packages

_APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+", re.ASCII)
_APT_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*", re.ASCII)
_RPM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*", re.ASCII)
_RPM_VERSION = re.compile(r"(?:[0-9]+:)?[A-Za-z0-9._+~^]+(?:-[A-Za-z0-9._+~^]+)?", re.ASCII)
_APK_VERSION = re.compile(r"[0-9][A-Za-z0-9._]*(?:-r[0-9]+)?", re.ASCII)
SYSTEM_MANAGERS = ("dpkg", "rpm", "apk")


def apt_package_name(value: Any, field: str = "system package") -> str:
    """Debian policy 5.6.1: lowercase letters, digits, ``+ - .``; two or more; starts
    alphanumeric."""
    return _match(field, value, _APT_NAME, MAX_NAME, "Debian package name")


def apt_version(value: Any, field: str = "system package version") -> str:
    """Debian policy 5.6.12: ``[epoch:]upstream_version[-debian_revision]``.

    The upstream version starts with a digit and holds ``A-Za-z0-9 . + ~`` (and ``-`` only when a
    revision follows); the revision holds ``A-Za-z0-9 + . ~``.
    """
    value = _str(field, value, MAX_VERSION)
    rest = value
    epoch, sep, tail = rest.partition(":")
    if sep:
        if not re.fullmatch(r"[0-9]+", epoch, re.ASCII):
            raise _fail(field, value, "has an epoch that is not a number")
        rest = tail
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    upstream_re = r"[0-9][A-Za-z0-9.+~-]*" if dash else r"[0-9][A-Za-z0-9.+~]*"
    ok = re.fullmatch(upstream_re, upstream, re.ASCII) and (
        not dash or re.fullmatch(r"[A-Za-z0-9+.~]+", revision, re.ASCII)
    )
    if not ok:
        problem = _forbidden_char(value)
        raise _fail(
            field, value, problem or "is not a Debian version ([epoch:]upstream[-revision])"
        )
    return value


_CODENAME = re.compile(r"[a-z][a-z0-9]*", re.ASCII)


def codename(value: Any, field: str = "os.codename") -> str:
    """A release codename (``bookworm``): it goes into a base image tag and a Dockerfile."""
    return _match(field, value, _CODENAME, 32, "release codename")


def apt_arch(value: Any, field: str = "architecture") -> str:
    return _match(field, value, _APT_ARCH, 32, "Debian architecture")


#: An apt source's URI: http(s) only, a host, a plain path; no credentials, no options.
_APT_URI = re.compile(
    r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~+-]{1,128}){0,16}/?",
    re.ASCII,
)
#: A suite (``bookworm``, ``bookworm-security``, ``stable/updates``) or a component (``main``).
_APT_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}(?:/[A-Za-z0-9._+-]{1,64}){0,3}", re.ASCII)
#: A key file's name (never a path, never a key).
_APT_KEYFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.(?:gpg|asc)", re.ASCII)
APT_SNAPSHOT = re.compile(r"[0-9]{8}T[0-9]{6}Z", re.ASCII)
MAX_APT_SOURCES = 64


def apt_source(src: Any, field: str = "apt source") -> None:
    """An apt source from a capture (untrusted): each part against a strict grammar."""
    uri = _str(f"{field}.uri", src.uri, 512)
    if not _APT_URI.fullmatch(uri):
        raise _fail(
            f"{field}.uri",
            uri,
            "is not a plain http(s) archive URI (no credentials, "
            "no options, letters, digits and ._~+- in the path)",
        )
    for kind, words in (("suites", src.suites), ("components", src.components)):
        if kind == "suites" and not words:
            raise _fail(f"{field}.suites", words, "is empty")
        if len(words) > 16:
            raise _fail(f"{field}.{kind}", words, "lists more than 16 names")
        for w in words:
            if not isinstance(w, str) or not _APT_WORD.fullmatch(w):
                raise _fail(f"{field}.{kind}", w, "is not an apt suite or component name")
    if src.signed_by is not None and not (
        isinstance(src.signed_by, str) and _APT_KEYFILE.fullmatch(src.signed_by)
    ):
        raise _fail(f"{field}.signed_by", src.signed_by, "is not a key file name (*.gpg, *.asc)")
    if src.snapshot is not None and not (
        isinstance(src.snapshot, str) and APT_SNAPSHOT.fullmatch(src.snapshot)
    ):
        raise _fail(f"{field}.snapshot", src.snapshot, "is not an archive time (YYYYMMDDTHHMMSSZ)")


def system_package(manager: Any, name: Any, ver: Any, field: str = "system package") -> None:
    """A system package of the given manager: its name and version in that manager's grammar."""
    if manager not in SYSTEM_MANAGERS:
        raise _fail(f"{field}.manager", manager, "is not one of " + ", ".join(SYSTEM_MANAGERS))
    if manager == "dpkg":
        apt_package_name(name, f"{field}.name")
        apt_version(ver, f"{field}.version")
    elif manager == "rpm":
        _match(f"{field}.name", name, _RPM_NAME, MAX_NAME, "RPM package name")
        _match(f"{field}.version", ver, _RPM_VERSION, MAX_VERSION, "RPM version")
    else:
        _match(f"{field}.name", name, _RPM_NAME, MAX_NAME, "Alpine package name")
        _match(f"{field}.version", ver, _APK_VERSION, MAX_VERSION, "Alpine version")


# --------------------------------------------------------------------------- commands, env, names

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def env_var(name: Any, value: Any, field: str = "env") -> None:
    """A replayable environment variable: POSIX name, printable value, not a loader/shell hook."""
    name = _match(f"{field} name", name, _ENV_NAME, MAX_NAME, "environment variable name")
    if _DANGEROUS_ENV.fullmatch(name):
        raise _fail(
            f"{field}.{name}",
            name,
            "changes which code the loader, shell, git or the "
            "installer runs, so a capture may not set it on a replay",
        )
    if not isinstance(value, str):
        raise _fail(f"{field}.{name}", value, f"expected a string, got {type(value).__name__}")
    if value:
        clean_text(f"{field}.{name}", value, MAX_ENV_VALUE)


def command(value: Any, field: str = "command") -> str:
    """The recorded shell command line.

    It runs on purpose (it is what the experiment is), so its syntax is free; what is refused is
    what hides it from a reviewer or splits it into several: NUL, newlines and every other control
    character except tab, bidi overrides and other invisible characters.
    """
    return clean_text(field, value, MAX_COMMAND, allow="\t")


_EXP_NAME_PUNCT = frozenset("._-+=@,:()[]#%~^! ")


def experiment_name(value: Any, field: str = "name") -> str:
    """An experiment name: at most 100 characters, starting with a letter or a digit, made of
    letters, digits, inner spaces and ``. _ - + = @ , : ( ) [ ] # % ~ ^ !``; not ``latest``
    (which always names the newest experiment). No quotes, ``$``, ``;``, ``|``, ``&``, ``<``,
    ``>``, backslash, backtick or ``/``: a name may end up in a tag, a file name or a terminal.
    """
    value = clean_text(field, value, MAX_EXPERIMENT_NAME)
    if not value[0].isalnum():
        raise _fail(field, value, "must start with a letter or a digit")
    if value != value.rstrip(" "):
        raise _fail(field, value, "ends with a space")
    bad = next((ch for ch in value if not (ch.isalnum() or ch in _EXP_NAME_PUNCT)), None)
    if bad is not None:
        raise _fail(
            field,
            value,
            f"contains {bad!r}; a name uses letters, digits, spaces and "
            ". _ - + = @ , : ( ) [ ] # % ~ ^ !",
        )
    if value == "latest":
        raise _fail(field, value, "is reserved: `latest` always means the newest experiment")
    return value


def experiment_id(value: Any, field: str = "id") -> str:
    return _match(field, value, re.compile(r"[0-9a-f]{12}", re.ASCII), 12, "experiment id")
