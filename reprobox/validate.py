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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ValidationError

if TYPE_CHECKING:
    from .model import Environment, Experiment, PackageSource

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
VCS_SCHEMES = ("https", "http", "ssh", "git", "file", "git+https", "git+http", "git+ssh",
               "git+file", "hg+https", "hg+http", "hg+ssh", "svn+https", "svn+http", "svn+ssh",
               "bzr+https", "bzr+ssh")
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
    from packaging.version import InvalidVersion, Version

    value = _match(field, value, _VERSION_CHARS, MAX_VERSION, "version")
    try:
        Version(value)
    except InvalidVersion:
        raise _fail(field, value, "is not a PEP 440 version") from None
    return value


def installer(value: Any, field: str = "installer") -> str:
    return _match(field, value, re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII), 64,
                  "installer name")


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
        raise _fail(field, value, "is an absolute path; only paths inside the repository are allowed")
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
            raise _fail(field, value, "points into .git/, which holds hooks and config that run code")
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
        raise _fail(field, rel, f"resolves to {target}, outside the checkout {base} "
                    "(a symbolic link points out of the repository)")
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
        raise _fail(field, rel, f"is {size} bytes, over the {max_bytes} byte limit",
                    "an experiment record holds small text files; re-capture it")
    return path


# --------------------------------------------------------------------------- URLs

_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@&+,=%]+", re.ASCII)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.ASCII)
_SCP = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!//)[A-Za-z0-9._~/+-]+", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", re.ASCII)
_SSH_SCHEMES = ("ssh", "git+ssh", "hg+ssh", "svn+ssh", "bzr+ssh")


def url(field: str, value: Any, schemes: Sequence[str] = ARCHIVE_SCHEMES, *,
        allow_scp: bool = False) -> str:
    """A URL with an allowed scheme, no credentials, no whitespace, quotes or shell characters.

    ``&`` is allowed only in the query and the fragment (``#egg=x&subdirectory=y``).

    ``allow_scp`` accepts git's ``git@host:org/repo.git`` form (a user name for ssh is not a
    credential). Percent-encoded control characters are refused too: they decode into paths.
    """
    from urllib.parse import urlsplit

    value = _str(field, value, MAX_URL)
    if allow_scp and "://" not in value and _SCP.fullmatch(value):
        if value.startswith("-"):
            raise _fail(field, value, "starts with '-'")
        return value
    if not _URL_CHARS.fullmatch(value):
        problem = _forbidden_char(value)
        raise _fail(field, value, problem or "contains characters a URL here may not hold "
                    "(whitespace, quotes, shell metacharacters or non-ASCII)")
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
        raise _fail(field, value, "carries credentials", "remove the user name and password; "
                    "reprobox never records credentials")
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
    if (".." in value or "//" in value or "@{" in value or value.endswith((".", "/", ".lock"))
            or "/." in value):
        raise _fail(field, value, "is not a valid git ref name")
    return value


def sha256_hex(value: Any, field: str = "sha256") -> str:
    return _match(field, value, re.compile(r"[0-9a-f]{64}", re.ASCII), 64, "sha256 hex digest")


def digest(value: Any, field: str = "digest") -> str:
    return _match(field, value, re.compile(r"sha256:[0-9a-f]{64}", re.ASCII), 71,
                  "digest (sha256:<64 hex digits>)")


# --------------------------------------------------------------------------- images

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = (rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
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
    for ch in "\"\\$`":
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
    """Debian policy 5.6.1: lowercase letters, digits, ``+ - .``; two or more; starts alphanumeric."""
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
        raise _fail(field, value, problem or "is not a Debian version ([epoch:]upstream[-revision])")
    return value


def apt_arch(value: Any, field: str = "architecture") -> str:
    return _match(field, value, _APT_ARCH, 32, "Debian architecture")


#: An apt source's URI: http(s) only, a host, a plain path; no credentials, no options.
_APT_URI = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(?::[0-9]{1,5})?"
                      r"(?:/[A-Za-z0-9._~+-]{1,128}){0,16}/?", re.ASCII)
#: A suite (``bookworm``, ``bookworm-security``, ``stable/updates``) or a component (``main``).
_APT_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}(?:/[A-Za-z0-9._+-]{1,64}){0,3}",
                       re.ASCII)
#: A key file's name (never a path, never a key).
_APT_KEYFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.(?:gpg|asc)", re.ASCII)
APT_SNAPSHOT = re.compile(r"[0-9]{8}T[0-9]{6}Z", re.ASCII)
MAX_APT_SOURCES = 64


def apt_source(src: Any, field: str = "apt source") -> None:
    """An apt source from a capture (untrusted): each part against a strict grammar."""
    uri = _str(f"{field}.uri", src.uri, 512)
    if not _APT_URI.fullmatch(uri):
        raise _fail(f"{field}.uri", uri, "is not a plain http(s) archive URI (no credentials, "
                    "no options, letters, digits and ._~+- in the path)")
    for kind, words in (("suites", src.suites), ("components", src.components)):
        if kind == "suites" and not words:
            raise _fail(f"{field}.suites", words, "is empty")
        if len(words) > 16:
            raise _fail(f"{field}.{kind}", words, "lists more than 16 names")
        for w in words:
            if not isinstance(w, str) or not _APT_WORD.fullmatch(w):
                raise _fail(f"{field}.{kind}", w, "is not an apt suite or component name")
    if src.signed_by is not None and not (isinstance(src.signed_by, str)
                                          and _APT_KEYFILE.fullmatch(src.signed_by)):
        raise _fail(f"{field}.signed_by", src.signed_by, "is not a key file name (*.gpg, *.asc)")
    if src.snapshot is not None and not (isinstance(src.snapshot, str)
                                         and APT_SNAPSHOT.fullmatch(src.snapshot)):
        raise _fail(f"{field}.snapshot", src.snapshot, "is not an archive time "
                    "(YYYYMMDDTHHMMSSZ)")


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
        raise _fail(f"{field}.{name}", name, "changes which code the loader, shell, git or the "
                    "installer runs, so a capture may not set it on a replay")
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
        raise _fail(field, value, f"contains {bad!r}; a name uses letters, digits, spaces and "
                    ". _ - + = @ , : ( ) [ ] # % ~ ^ !")
    if value == "latest":
        raise _fail(field, value, "is reserved: `latest` always means the newest experiment")
    return value


def experiment_id(value: Any, field: str = "id") -> str:
    return _match(field, value, re.compile(r"[0-9a-f]{12}", re.ASCII), 12, "experiment id")


# --------------------------------------------------------------------------- patches

_QUOTED_OR_WORD = r'("(?:[^"\\]|\\.)*"|\S+)'
_DIFF_GIT_QUOTED = re.compile(rf"diff --git {_QUOTED_OR_WORD} {_QUOTED_OR_WORD}")
_HEADER = re.compile(r"(---|\+\+\+) ([^\t]+)(?:\t.*)?")
_RENAME = re.compile(r"(rename from|rename to|copy from|copy to) (.+)")
_MODE = re.compile(r"(new file mode|new mode|old mode|deleted file mode) ([0-7]+)")
_HUNK = re.compile(r"@@ -[0-9]+(?:,([0-9]+))? \+[0-9]+(?:,([0-9]+))? @@.*")
_C_ESCAPES = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
              '"': '"', "\\": "\\"}


def _unquote_git(path: str) -> str:
    """Undo git's C-style quoting of unusual path names (``"a/t\\303\\251st"``)."""
    if not (len(path) >= 2 and path.startswith('"') and path.endswith('"')):
        return path
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            octal = body[i + 1:i + 4]
            if re.fullmatch(r"[0-7]{3}", octal):
                out.append(int(octal, 8) & 0xFF)
                i += 4
                continue
            out.extend(_C_ESCAPES.get(body[i + 1], "\\" + body[i + 1]).encode())
            i += 2
            continue
        out.extend(ch.encode("utf-8", "surrogatepass"))
        i += 1
    return out.decode("utf-8", "replace")


def _strip_prefix(path: str) -> str | None:
    if path == "/dev/null":
        return None
    return path[2:] if path.startswith(("a/", "b/")) else path


def _diff_git_names(rest: str) -> list[str]:
    """The two names of a ``diff --git`` line, as git reads them (quoted, or equal halves)."""
    if rest.startswith('"') or rest.endswith('"'):
        m = _DIFF_GIT_QUOTED.fullmatch("diff --git " + rest)
        return [m.group(1), m.group(2)] if m else [rest]
    for i, ch in enumerate(rest):  # "a/NAME b/NAME": the split where both halves name one file
        if ch == " " and rest[:i][2:] == rest[i + 1:][2:]:
            return [rest[:i], rest[i + 1:]]
    # A rename: git takes the names from the rename / --- / +++ lines; check every plausible split.
    return [part for part in re.split(r" (?=b/)", rest)] if " b/" in rest else [rest]


def patch_targets(text: Any, field: str = "git patch") -> tuple[str, ...]:
    """Every path a ``git diff`` patch touches, each checked with :func:`relpath`.

    A patch from a capture is applied to a checkout before the command runs, so it must not write
    into ``.git/`` (hooks), leave the tree (``../``, absolute paths), or create a symbolic link
    (which a later write could follow out of the checkout). Hunks are skipped by their line counts,
    as ``git apply`` reads them, so a removed line that starts with ``--`` is not taken for a
    header and a header hidden after a hunk is not missed.
    """
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_PATCH_BYTES:
            raise _fail(field, f"<{len(text)} bytes>", f"is over the {MAX_PATCH_BYTES} byte limit")
        text = bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str):
        raise _fail(field, text, f"expected text, got {type(text).__name__}")
    if len(text) > MAX_PATCH_BYTES:
        raise _fail(field, f"<{len(text)} characters>", f"is over the {MAX_PATCH_BYTES} byte limit")
    targets: list[str] = []

    def add(raw: str, line_no: int) -> None:
        path = _strip_prefix(_unquote_git(raw.strip()))
        if path is not None:
            targets.append(relpath(f"{field} (line {line_no}) path", path, allow_dot=False))

    old_left = new_left = 0
    for no, line in enumerate(text.split("\n"), 1):
        if old_left > 0 or new_left > 0:  # inside a hunk
            tag = line[:1]
            if tag == "\\":
                continue
            if tag in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                old_left -= 1
            elif tag == "+":
                new_left -= 1
            else:
                raise _fail(f"{field} (line {no})", line, "is not a hunk line; the patch is malformed")
            continue
        hunk = _HUNK.fullmatch(line)
        if hunk:
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            continue
        if line.startswith("diff --git "):
            for name in _diff_git_names(line[len("diff --git "):]):
                add(name, no)
            continue
        for pattern in (_HEADER, _RENAME):
            m = pattern.fullmatch(line)
            if m:
                add(m.group(2), no)
                break
        m = _MODE.fullmatch(line)
        if m and m.group(2) == "120000":
            raise _fail(f"{field} (line {no})", line, "creates a symbolic link; a patch from a "
                        "capture may change files only")
    return tuple(dict.fromkeys(targets))


# --------------------------------------------------------------------------- a whole capture


def validate_environment(env: Environment) -> None:
    """Every value of an ``environment.json`` that reaches pip, a Dockerfile or a path."""
    interp = env.interpreter
    _match("interpreter.implementation", interp.implementation, re.compile(r"[a-z][a-z0-9_]*"),
           32, "implementation name (cpython, pypy)")
    _match("interpreter.version", interp.version,
           re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:(?:a|b|rc)[0-9]+)?\+?", re.ASCII), 32,
           "Python version (X.Y.Z)")
    for key in ("abi", "soabi", "platform"):
        val = getattr(interp, key)
        if val is not None:
            _match(f"interpreter.{key}", val, re.compile(r"[A-Za-z0-9_.-]+", re.ASCII), 128, key)
    for key in ("build", "compiler", "kind", "executable"):
        val = getattr(interp, key)
        if val is not None:
            clean_text(f"interpreter.{key}", val, MAX_TEXT)
    for i, tag in enumerate(interp.platform_tags):
        platform_tag(tag, f"interpreter.platform_tags[{i}]")

    for i, pkg in enumerate(env.packages):
        where = f"packages[{i}]"
        package_name(pkg.name, f"{where}.name")
        where = f"packages[{pkg.name}]"
        version(pkg.version, f"{where}.version")
        if pkg.display_name is not None:
            package_name(pkg.display_name, f"{where}.display_name")
        if pkg.installer is not None:
            installer(pkg.installer, f"{where}.installer")
        for j, tag in enumerate(pkg.wheel_tags):
            wheel_tag(tag, f"{where}.wheel_tags[{j}]")
        _source(pkg.source, f"{where}.source")

    for i, spkg in enumerate(env.system_packages):
        where = f"system_packages[{i}]"
        system_package(spkg.manager, spkg.name, spkg.version, where)
        if spkg.arch is not None:
            apt_arch(spkg.arch, f"{where}.arch")
        for j, lib in enumerate(spkg.libraries):
            local_path(f"{where}.libraries[{j}]", lib)
    for key in ("unowned_libraries", "missing_libraries"):
        for j, lib in enumerate(getattr(env, key)):
            local_path(f"{key}[{j}]", lib)
    if len(env.apt_sources) > MAX_APT_SOURCES:
        raise _fail("apt_sources", f"{len(env.apt_sources)} sources",
                    f"lists more than {MAX_APT_SOURCES}")
    for i, asrc in enumerate(env.apt_sources):
        apt_source(asrc, f"apt_sources[{i}]")

    osi = env.os
    if osi.codename is not None:  # goes into the base image tag: python:3.11.7-slim-<codename>
        _match("os.codename", osi.codename, re.compile(r"[a-z][a-z0-9]*", re.ASCII), 32,
               "release codename")
    for key in ("id", "version_id", "glibc", "arch"):
        val = getattr(osi, key)
        if val is not None:
            _match(f"os.{key}", val, re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*", re.ASCII), 64, key)
    for key in ("pretty_name", "kernel", "system"):
        val = getattr(osi, key)
        if val is not None:
            clean_text(f"os.{key}", val, 256)
    for j, like in enumerate(osi.id_like):
        _match(f"os.id_like[{j}]", like, re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII), 64, "id")

    hw = env.hardware
    for key in ("cuda_runtime", "cudnn"):  # select the CUDA base image tag
        val = getattr(hw, key)
        if val is not None:
            _match(f"hardware.{key}", val, re.compile(r"[0-9]+(?:\.[0-9]+){0,3}", re.ASCII), 32,
                   "version (digits and dots)")
    for key in ("cpu_model", "cpu_vendor", "cuda_source"):
        val = getattr(hw, key)
        if val is not None:
            clean_text(f"hardware.{key}", val, 256)
    for j, flag in enumerate(hw.cpu_flags):
        _match(f"hardware.cpu_flags[{j}]", flag, re.compile(r"[a-z0-9_.]+", re.ASCII), 32, "flag")
    for j, gpu in enumerate(hw.gpus):
        clean_text(f"hardware.gpus[{j}].name", gpu.name, 256)
        for key in ("driver", "cuda_driver", "compute_capability"):
            val = getattr(gpu, key)
            if val is not None:
                _match(f"hardware.gpus[{j}].{key}", val,
                       re.compile(r"[0-9]+(?:\.[0-9]+){0,3}", re.ASCII), 32, "version")


def _source(src: PackageSource, where: str) -> None:
    if src.kind == "index":
        return
    if src.kind == "vcs":
        if src.vcs not in ("git", "hg", "svn", "bzr"):
            raise _fail(f"{where}.vcs", src.vcs, "is not one of git, hg, svn, bzr")
        url(f"{where}.url", src.url, VCS_SCHEMES)
        vcs_commit(src.commit, f"{where}.commit")
        if src.requested_revision is not None:
            git_ref(src.requested_revision, f"{where}.requested_revision")
    elif src.kind == "archive":
        url(f"{where}.url", src.url, ARCHIVE_SCHEMES)
        if src.hash is not None:
            archive_hash(src.hash, f"{where}.hash")
    elif src.kind == "directory":
        if src.path is not None:
            if src.in_repo:
                relpath(f"{where}.path", src.path)
            else:
                local_path(f"{where}.path", src.path)
        if src.url is not None:
            url(f"{where}.url", src.url, ("file",))
    else:
        raise _fail(f"{where}.kind", src.kind, "is not one of index, vcs, directory, archive")
    if src.subdirectory is not None:
        relpath(f"{where}.subdirectory", src.subdirectory)


_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def validate_experiment(exp: Experiment, env: Environment, *, folder: Path | None = None) -> None:
    """Apply the grammars to every field of a loaded capture; raise on the first hostile value.

    ``exp`` is a :class:`~reprobox.model.Experiment`, ``env`` its
    :class:`~reprobox.model.Environment`. With ``folder`` (the experiment's folder in the store),
    the files next to the JSON are checked too: plain files only (no symbolic links), sizes under
    the limits, and the targets of ``patch.diff``.
    """
    from .model import INLINE_METRICS

    if exp.id:
        experiment_id(exp.id, "id")
    experiment_name(exp.name, "name")
    if exp.command_kind not in ("shell", "dvc", "none"):
        raise _fail("command_kind", exp.command_kind, "is not one of shell, dvc, none")
    if exp.command is not None:
        command(exp.command, "command")
    relpath("cwd", exp.cwd)
    digest(exp.environment_digest, "environment_digest")
    _match("created", exp.created, _TIMESTAMP, 40, "UTC timestamp (2026-01-31T12:00:00Z)")
    if exp.tool_version != "unknown":
        version(exp.tool_version, "tool_version")
    if exp.supersedes is not None:
        experiment_id(exp.supersedes, "supersedes")
    for fname, fdigest in exp.files.items():
        _match("files", fname, re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", re.ASCII), 100,
               "file name")
        digest(fdigest, f"files[{fname}]")

    git = exp.git
    vcs_commit(git.commit, "git.commit")
    if git.branch is not None:
        git_ref(git.branch, "git.branch")
    if git.remote is not None:
        url("git.remote", git.remote, REMOTE_SCHEMES, allow_scp=True)
    if git.patch is not None:
        relpath("git.patch", git.patch, allow_dot=False)
        if "/" in git.patch.rstrip("/") or git.patch.startswith("."):
            raise _fail("git.patch", git.patch, "must be a file name in the experiment folder")
    if git.patch_sha256 is not None:
        sha256_hex(git.patch_sha256, "git.patch_sha256")
    for i, path in enumerate(git.untracked):
        relpath(f"git.untracked[{i}]", path, allow_dot=False)

    if exp.dvc is not None:
        dvc = exp.dvc
        if dvc.lock_digest is not None:
            _match("dvc.lock_digest", dvc.lock_digest,
                   re.compile(r"(?:sha256:)?[0-9a-f]{64}", re.ASCII), 71, "digest")
        for i, dout in enumerate(dvc.outputs):
            relpath(f"dvc.outputs[{i}].path", dout.path, allow_dot=False)
            _match(f"dvc.outputs[{i}].hash_name", dout.hash_name,
                   re.compile(r"[a-z0-9_-]+", re.ASCII), 32, "hash name")
            if dout.hash_name.startswith("md5"):
                _match(f"dvc.outputs[{i}].hash", dout.hash,
                       re.compile(r"[0-9a-f]{32}(?:\.dir)?", re.ASCII), 36, "md5 hash")
            else:  # etag / checksum / version_id of cloud-versioned outputs: compared, never run
                clean_text(f"dvc.outputs[{i}].hash", dout.hash, 256)
            if dout.stage is not None:
                clean_text(f"dvc.outputs[{i}].stage", dout.stage, 256)
        for i, stage in enumerate(dvc.stages):
            clean_text(f"dvc.stages[{i}]", stage, 256)
        if dvc.remote is not None:
            _match("dvc.remote", dvc.remote, re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII),
                   128, "DVC remote name")
        for i, path in enumerate(dvc.metrics_files):
            relpath(f"dvc.metrics_files[{i}]", path, allow_dot=False)
        _check_tree("dvc.params", dvc.params)

    for mfile, values in exp.metrics.items():
        if mfile != INLINE_METRICS:
            relpath("metrics file", mfile, allow_dot=False)
        _check_tree(f"metrics[{mfile}]", values)
    for i, out in enumerate(exp.outputs):
        relpath(f"outputs[{i}].path", out.path, allow_dot=False)
        sha256_hex(out.sha256, f"outputs[{i}].sha256")
        if not isinstance(out.size, int) or isinstance(out.size, bool) or out.size < 0:
            raise _fail(f"outputs[{i}].size", out.size, "is not a non-negative integer")
    for name, value in exp.env.items():
        env_var(name, value, "env")
    from .capture.envvars import check_replayable

    check_replayable(exp.env, "env")  # and only the variables reprobox itself would record
    if exp.run is not None:
        run_usage(exp.run)

    validate_environment(env)

    if folder is not None:
        _check_folder(Path(folder), exp)


_LIB_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*", re.ASCII)
_LIB_OWNER = re.compile(r"(?:package|system):[A-Za-z0-9][A-Za-z0-9._+-]*|python|driver|unowned",
                        re.ASCII)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_MODULE_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*|<repo>|<unknown>", re.ASCII)


def run_usage(run: Any) -> None:
    """``run`` of experiment.json (what a recorded command used): display-only names."""
    if run.source not in ("recorded", "declared"):
        raise _fail("run.source", run.source, "is not one of recorded, declared")
    if run.exit_status is not None and not -255 <= run.exit_status <= 255:
        raise _fail("run.exit_status", run.exit_status, "is not an exit status (-255..255)")
    for i, lib in enumerate(run.libraries):
        _match(f"run.libraries[{i}].name", lib.name, _LIB_FILE, 255, "library file name")
        _match(f"run.libraries[{i}].owner", lib.owner, _LIB_OWNER, 255,
               "owner (package:NAME, system:NAME, python, driver, unowned)")
    for owner, modules in run.modules.items():
        _match("run.modules key", owner, _MODULE_OWNER, 255, "distribution name")
        for m in modules:
            _match(f"run.modules[{owner}]", m, _MODULE, 255, "module name")
    for i, name in enumerate(run.dlopen_failed):
        clean_text(f"run.dlopen_failed[{i}]", name, 255)


def _check_tree(field: str, data: Any, depth: int = 0) -> None:
    """Keys and string leaves of metrics / params: display-only, but they reach terminals and PRs."""
    if depth > 32:
        raise _fail(field, "...", "is nested more than 32 levels deep")
    if isinstance(data, Mapping):
        for key, value in data.items():
            clean_text(f"{field} key", key, MAX_TEXT)
            _check_tree(f"{field}.{key}", value, depth + 1)
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            _check_tree(f"{field}[{i}]", value, depth + 1)
    elif isinstance(data, str):
        if data:
            clean_text(field, data, MAX_TEXT)
    elif data is not None and not isinstance(data, (int, float, bool)):
        raise _fail(field, data, f"holds a {type(data).__name__}, not a number, string or boolean")


def _check_folder(folder: Path, exp: Experiment) -> None:
    """The experiment folder holds plain, small files; its patch touches only the work tree."""
    if folder.is_symlink():
        raise _fail("experiment folder", str(folder), "is a symbolic link")
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            raise _fail(f"file {entry.name}", entry.name, "is a symbolic link; the store holds "
                        "plain files only")
        if not entry.is_file():
            raise _fail(f"file {entry.name}", entry.name, "is not a plain file")
        limit = MAX_PATCH_BYTES if entry.name == exp.git.patch else MAX_JSON_BYTES
        size = entry.stat().st_size
        if size > limit:
            raise _fail(f"file {entry.name}", entry.name,
                        f"is {size} bytes, over the {limit} byte limit")
    if exp.git.patch is not None:
        patch = folder / exp.git.patch
        if not patch.is_file():
            raise _fail("git.patch", exp.git.patch, "is recorded but the file is missing",
                        "restore the experiment folder from git or re-capture it")
        patch_targets(patch.read_bytes(), "git.patch")
