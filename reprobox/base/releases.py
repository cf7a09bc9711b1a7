"""The releases a base image is named by: an exact CPython release and a Debian codename."""

from __future__ import annotations

import re

from ..errors import ValidationError

#: Debian releases, oldest first (codename -> VERSION_ID).
DEBIAN_RELEASES = {
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
}

_PYTHON_RELEASE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:(?:a|b|rc)[0-9]+)?", re.ASCII)
_CODENAME = re.compile(r"[a-z][a-z0-9]{1,30}", re.ASCII)


def check_python_release(value: object, field: str = "interpreter version") -> str:
    """An exact CPython release (``3.11.7``, ``3.13.0rc1``): it names the base image."""
    if not isinstance(value, str) or not _PYTHON_RELEASE.fullmatch(value):
        raise ValidationError(
            field,
            value,
            "is not an exact Python release (X.Y.Z)",
            "a base image needs the interpreter's exact version; pass one with --base-image",
        )
    return value


def check_codename(value: object, field: str = "OS codename") -> str:
    if not isinstance(value, str) or not _CODENAME.fullmatch(value):
        raise ValidationError(field, value, "is not a distribution codename (such as bookworm)")
    return value
