"""The paths a recorded ``git diff`` patch touches, each checked against the path grammar.

A patch from a capture is applied to a checkout before the command runs: :func:`patch_targets`
reads it as ``git apply`` does and refuses one that would write outside the work tree.
"""

from __future__ import annotations

import re
from typing import Any

from .grammar import MAX_PATCH_BYTES, _fail, relpath

_QUOTED_OR_WORD = r'("(?:[^"\\]|\\.)*"|\S+)'
_DIFF_GIT_QUOTED = re.compile(rf"diff --git {_QUOTED_OR_WORD} {_QUOTED_OR_WORD}")
_HEADER = re.compile(r"(---|\+\+\+) ([^\t]+)(?:\t.*)?")
_RENAME = re.compile(r"(rename from|rename to|copy from|copy to) (.+)")
_MODE = re.compile(r"(new file mode|new mode|old mode|deleted file mode) ([0-7]+)")
_HUNK = re.compile(r"@@ -[0-9]+(?:,([0-9]+))? \+[0-9]+(?:,([0-9]+))? @@.*")
_C_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    '"': '"',
    "\\": "\\",
}


def _unquote_git(path: str) -> str:
    """Undo git's C-style quoting of unusual path names (``"a/t\\303\\251st"``)."""
    if not (len(path) >= 2 and path.startswith('"') and path.endswith('"')):
        return path
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            octal = body[i + 1 : i + 4]
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
        if ch == " " and rest[:i][2:] == rest[i + 1 :][2:]:
            return [rest[:i], rest[i + 1 :]]
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
                raise _fail(
                    f"{field} (line {no})", line, "is not a hunk line; the patch is malformed"
                )
            continue
        hunk = _HUNK.fullmatch(line)
        if hunk:
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            continue
        if line.startswith("diff --git "):
            for name in _diff_git_names(line[len("diff --git ") :]):
                add(name, no)
            continue
        for pattern in (_HEADER, _RENAME):
            m = pattern.fullmatch(line)
            if m:
                add(m.group(2), no)
                break
        m = _MODE.fullmatch(line)
        if m and m.group(2) == "120000":
            raise _fail(
                f"{field} (line {no})",
                line,
                "creates a symbolic link; a patch from a capture may change files only",
            )
    return tuple(dict.fromkeys(targets))
