"""Names that capture, lock and build must spell alike: a project's PEP 503 name, and the file
a VCS package's source is sealed, fetched and copied as."""

from __future__ import annotations

from typing import Optional


def canonical_name(name: str) -> str:
    """PEP 503's normalized name, ``re.sub(r"[-_.]+", "-", name).lower()`` (as
    ``packaging.utils.canonicalize_name`` computes it, without a regular expression)."""
    value = name.lower().replace("_", "-").replace(".", "-")
    while "--" in value:
        value = value.replace("--", "-")
    return value


def vcs_archive_name(name: str, version: str, commit: Optional[str]) -> str:
    """The file name of a VCS package's source at its commit: sealed into the experiment, in the
    wheelhouse and in the build context alike."""
    return f"{canonical_name(name)}-{version}-{(commit or '')[:12]}.tar.gz"
