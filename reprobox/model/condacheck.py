"""The grammar of a record's conda section: what a conda package's name, version, build,
subdir, hashes and URL may be, and the section as a whole (its platform, its channels, one
package per name).

A capture may be untrusted input, and these values reach a fetch (the URL, checked to be
``<channel>/<subdir>/<name>-<version>-<build>.conda|.tar.bz2`` of a channel the record names), a
lock file and a Dockerfile. The store checks a record with :func:`check_conda` when it loads it;
the fetch checks each package again with :func:`check_package` before it downloads.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import ValidationError
from .grammar import MAX_TEXT, clean_text, url

if TYPE_CHECKING:
    from .environment import CondaEnvironment, CondaPackage

#: The platform subdirs of conda channels.
KNOWN_SUBDIRS = (
    "noarch",
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "linux-s390x",
    "linux-32",
    "linux-armv7l",
    "osx-64",
    "osx-arm64",
    "win-64",
    "win-32",
    "win-arm64",
    "emscripten-wasm32",
    "wasi-wasm32",
    "zos-z",
)

_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.+-]{0,199}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.+!*-]{1,128}$")
_BUILD = re.compile(r"^[A-Za-z0-9_.+]{1,200}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SCHEMES = ("https", "http", "file")
#: More packages than any real environment holds: a record past it is not one.
MAX_CONDA_PACKAGES = 20_000


def check_package(pkg: CondaPackage, where: str = "conda package") -> None:
    """Refuse a conda record whose values could steer a fetch or an install elsewhere."""
    field = f"{where} {pkg.name!r}"
    if not _NAME.fullmatch(pkg.name):
        raise ValidationError(f"{where}.name", pkg.name, "not a conda package name")
    if not _VERSION.fullmatch(pkg.version):
        raise ValidationError(f"{field}.version", pkg.version, "not a conda version")
    if not _BUILD.fullmatch(pkg.build):
        raise ValidationError(f"{field}.build", pkg.build, "not a conda build string")
    if pkg.subdir is not None and pkg.subdir not in KNOWN_SUBDIRS:
        raise ValidationError(f"{field}.subdir", pkg.subdir, "not a conda platform subdir")
    if pkg.md5 is not None and not _MD5.fullmatch(pkg.md5):
        raise ValidationError(f"{field}.md5", pkg.md5, "not an md5 in hex")
    if pkg.sha256 is not None and not _SHA256.fullmatch(pkg.sha256):
        raise ValidationError(f"{field}.sha256", pkg.sha256, "not a sha256 in hex")
    if pkg.url is not None:
        check_url(pkg, field)


def check_url(pkg: CondaPackage, field: str) -> None:
    url = pkg.url or ""
    if any(ord(c) < 33 or ord(c) == 127 for c in url) or len(url) > 2048:
        raise ValidationError(f"{field}.url", url, "control characters, spaces or too long")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValidationError(f"{field}.url", url, f"scheme must be one of {', '.join(_SCHEMES)}")
    if parts.username or parts.password or "/t/" in parts.path or parts.query or parts.fragment:
        raise ValidationError(f"{field}.url", url, "credentials, tokens or queries in the URL")
    stem = f"/{pkg.subdir}/{pkg.name}-{pkg.version}-{pkg.build}"
    if not (parts.path.endswith(stem + ".conda") or parts.path.endswith(stem + ".tar.bz2")):
        raise ValidationError(
            f"{field}.url",
            url,
            f"does not name {pkg.name}-{pkg.version}-{pkg.build} in {pkg.subdir}",
        )
    if ".." in unquote(parts.path).split("/"):
        raise ValidationError(f"{field}.url", url, "'..' in the path")
    if not pkg.channel or not url.startswith(pkg.channel.rstrip("/") + "/"):
        raise ValidationError(f"{field}.channel", pkg.channel, "the URL is not in this channel")


def check_conda(conda: CondaEnvironment, where: str = "conda") -> None:
    """Refuse a record's conda section whose values could steer a fetch, a lock file or a
    Dockerfile: every package (:func:`check_package`; once per name), the platform, the
    channels, and the free text the lock file carries (specs, dependencies, libraries)."""
    if len(conda.packages) > MAX_CONDA_PACKAGES:
        raise ValidationError(
            f"{where}.packages", f"{len(conda.packages)} packages", "is more than a record holds"
        )
    if conda.platform is not None and conda.platform not in KNOWN_SUBDIRS:
        raise ValidationError(f"{where}.platform", conda.platform, "not a conda platform subdir")
    for i, channel in enumerate(conda.channels):
        url(f"{where}.channels[{i}]", channel, _SCHEMES)
    if conda.manager is not None:
        _text(f"{where}.manager", conda.manager, 64)
    for i, req in enumerate(conda.requested_specs):
        _text(f"{where}.requested_specs[{i}]", req)
    seen: set[str] = set()
    for pkg in conda.packages:
        check_package(pkg)
        field = f"{where}.packages[{pkg.name}]"
        if pkg.name in seen:
            raise ValidationError(field, pkg.name, "is listed twice (an environment has one each)")
        seen.add(pkg.name)
        if pkg.channel is not None:
            url(f"{field}.channel", pkg.channel, _SCHEMES)
        if pkg.files_sha256 is not None and not _SHA256.fullmatch(pkg.files_sha256):
            raise ValidationError(f"{field}.files_sha256", pkg.files_sha256, "not a sha256 in hex")
        for key in ("requested_spec", "noarch"):
            value = getattr(pkg, key)
            if value is not None:
                _text(f"{field}.{key}", value)
        for j, dep in enumerate(pkg.depends):
            _text(f"{field}.depends[{j}]", dep)
        for j, lib in enumerate(pkg.libraries):
            _text(f"{field}.libraries[{j}]", lib)


def _text(field: str, value: Any, max_len: int = MAX_TEXT) -> None:
    clean_text(field, value, max_len)
