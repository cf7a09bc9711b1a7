"""Version order: PEP 440 for Python packages, dpkg's rules for system packages.

Used to tell an upgrade from a downgrade. Two different version strings never compare equal here:
a difference in what was recorded is never reported as "no change".
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as PEP 440 orders ``a`` and ``b``; plain string order when either is invalid.

    Two spellings of one version (``1.0`` and ``1.0.0``) are ordered by their text, so that a
    difference in the recorded string is never reported as "no change".
    """
    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion:
        return (a > b) - (a < b)
    if va != vb:
        return 1 if va > vb else -1
    return (a > b) - (a < b)


def _deb_order(ch: str) -> int:
    if "A" <= ch <= "Z" or "a" <= ch <= "z":
        return ord(ch)
    if ch == "~":
        return -1
    return ord(ch) + 256


def _is_digit(s: str, i: int) -> bool:
    return i < len(s) and "0" <= s[i] <= "9"


def _deb_part_cmp(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (letters before symbols, ``~`` first) and
    numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not _is_digit(a, i)) or (j < len(b) and not _is_digit(b, j)):
            ac = _deb_order(a[i]) if i < len(a) and not _is_digit(a, i) else 0
            bc = _deb_order(b[j]) if j < len(b) and not _is_digit(b, j) else 0
            if ac != bc:
                return 1 if ac > bc else -1
            i += 0 if _is_digit(a, i) else 1
            j += 0 if _is_digit(b, j) else 1
        ni, nj = i, j
        while _is_digit(a, ni):
            ni += 1
        while _is_digit(b, nj):
            nj += 1
        # Compare the numbers as digit strings: no int() on hostile, arbitrarily long runs.
        na, nb = a[i:ni].lstrip("0"), b[j:nj].lstrip("0")
        if (len(na), na) != (len(nb), nb):
            return 1 if (len(na), na) > (len(nb), nb) else -1
        i, j = ni, nj
    return 0


def compare_system_versions(a: str, b: str) -> int:
    """-1, 0 or 1 in dpkg's order (``[epoch:]upstream[-revision]``); also sensible for rpm/apk."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, sep, rest = v.partition(":")
        if not sep or not epoch.isdigit() or not epoch.isascii():
            epoch, rest = "0", v
        upstream, dash, revision = rest.rpartition("-")
        if not dash:
            upstream, revision = rest, ""
        return int(epoch[:18]), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return 1 if ea > eb else -1
    result = _deb_part_cmp(ua, ub) or _deb_part_cmp(ra, rb)
    if result == 0 and a != b:
        return (a > b) - (a < b)
    return result


__all__ = ["compare_system_versions", "compare_versions"]
