"""The names capture, lock and build share (reprobox.names)."""

from __future__ import annotations

import pytest
from packaging.utils import canonicalize_name

from reprobox.names import canonical_name, vcs_archive_name

NAMES = [
    "Django",
    "zope.interface",
    "typing_extensions",
    "Foo__Bar--baz..Qux",
    "a-_.-b",
    "ruamel.yaml.clib",
    "-leading.and.trailing_",
    "Ünïcode_Name",
    "\u0130stanbul.pkg",  # lowercases to two code points
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_canonical_name_is_pep_503s(name: str) -> None:
    assert canonical_name(name) == canonicalize_name(name)


def test_the_archive_name_carries_the_canonical_name_and_twelve_digits_of_the_commit() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert vcs_archive_name("My_Pkg", "1.0", commit) == "my-pkg-1.0-0123456789ab.tar.gz"
    assert vcs_archive_name("My_Pkg", "1.0", None) == "my-pkg-1.0-.tar.gz"
