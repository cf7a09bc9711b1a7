"""The three renderings of an :class:`~reprobox.diff.model.EnvDiff`: terminal text, GitHub
markdown (``reprobox diff --format markdown`` and ``reprobox pr``) and JSON.

Every value shown comes from a capture, which may be hostile: the text renderer escapes control
and invisible characters (no terminal escape sequences, :func:`visible`), the markdown renderer
escapes markdown and HTML and defuses autolinks, mentions and references (:func:`md_escape`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Union

from ..model import pretty_json
from ..termsafe import escape_json
from .model import PACKAGE_GROUPS, Change, EnvDiff, PackageDiff

# --------------------------------------------------------------------------- escaping

#: Zero-width space: after :func:`visible`, the only ones left in a value are those inserted here.
_ZWSP = "\u200b"
#: Letters that render as nothing (Hangul fillers, the blank braille pattern): a name made of
#: them would show as blank, so they are written as escapes like the invisible controls.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def visible(value: Any) -> str:
    """A value as one line of terminal text: control and invisible characters shown as escapes."""
    text = value if isinstance(value, str) else str(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp") or ch in _BLANK_LETTERS:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


#: How each character that markdown or HTML may interpret is written: HTML's own as entities,
#: markdown's with a backslash (valid inside table cells too, ``\|`` included), ``$`` (GitHub math)
#: in a span as GitHub's documentation advises, and the zero-width spaces that :func:`_defuse`
#: inserted as an entity.
_MD_REPLACE = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\\": "\\\\",
    "`": "\\`",
    "*": "\\*",
    "_": "\\_",
    "[": "\\[",
    "]": "\\]",
    "|": "\\|",
    "~": "\\~",
    "$": "<span>$</span>",
    _ZWSP: "&#8203;",
}

#: What GitHub turns into a link, a notification or a picture when it meets it in plain text:
#: URLs (``scheme://``, ``www.``), e-mail addresses and ``@mentions`` (at ``@``), issue and pull
#: request references (``#12``, ``owner/repo#12``, ``GH-12``), emoji shortcodes (``:rocket:``).
#: A zero-width space after the character that starts each one breaks the pattern; the text reads
#: the same.
_AUTOLINK_TRIGGERS = re.compile(
    r"(?<=[A-Za-z0-9+.\-]):(?=/)"  # scheme://  (also scheme:/ which some renderers accept)
    r"|(?i:(?<![A-Za-z0-9])www)(?=\.)"  # www.host
    r"|@"  # @mention, user@host
    r"|#(?=\d)"  # #12, owner/repo#12
    r"|(?i:(?<![A-Za-z0-9])gh)(?=-\d)"  # GH-12
    r"|:(?=[A-Za-z0-9_+\-]+:)"  # :emoji:
)


def _defuse(text: str) -> str:
    return _AUTOLINK_TRIGGERS.sub(lambda m: m.group() + _ZWSP, text)


def md_escape(value: Any) -> str:
    """A capture value made inert in GitHub markdown: no HTML, no table break, no formatting,
    no math, no autolinked URL, no @mention, no issue reference, no emoji; control and invisible
    characters shown as escapes.
    """
    return "".join(_MD_REPLACE.get(ch, ch) for ch in _defuse(visible(value)))


def md_code(value: Any) -> str:
    """An escaped value shown in a monospace ``<code>`` element (safe inside table cells)."""
    return f"<code>{md_escape(value)}</code>"


# --------------------------------------------------------------------------- text


_ANSI = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def _style(text: str, color: bool, *styles: str) -> str:
    if not color or not styles:
        return text
    codes = ";".join(_ANSI[s] for s in styles)
    return f"\x1b[{codes}m{text}\x1b[0m"


def _show(value: Any, key: str = "") -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "memory_bytes" and isinstance(value, int):
        return f"{value / 2**30:.1f} GiB"
    if isinstance(value, (list, tuple)):
        return "; ".join(visible(v) for v in value) or "(none)"
    return visible(value)


def _text_changes(lines: list[str], title: str, changes: Sequence[Change], color: bool) -> None:
    if not changes:
        return
    lines.append(_style(title, color, "bold"))
    width = max(len(c.key) for c in changes)
    for c in changes:
        lines.append(f"  {visible(c.key):<{width}}  {_show(c.a, c.key)} -> {_show(c.b, c.key)}")


def _text_packages(lines: list[str], title: str, d: PackageDiff, color: bool) -> None:
    if d.empty:
        return
    counts = d.counts()
    summary = ", ".join(f"{n} {g.replace('_', ' ')}" for g, n in counts.items() if n)
    lines.append(_style(f"{title} ({summary})", color, "bold"))
    rows: list[tuple[str, str, str]] = []
    for c in d.added:
        rows.append(("added", "green", f"{visible(c.name)} {visible(c.b)}"))
    for c in d.removed:
        rows.append(("removed", "red", f"{visible(c.name)} {visible(c.a)}"))
    for c in d.upgraded:
        rows.append(("upgraded", "yellow", f"{visible(c.name)} {visible(c.a)} -> {visible(c.b)}"))
    for c in d.downgraded:
        rows.append(("downgraded", "yellow", f"{visible(c.name)} {visible(c.a)} -> {visible(c.b)}"))
    for c in d.source_changed:
        rows.append(
            (
                "source",
                "yellow",
                f"{visible(c.name)}: {visible(c.a_source)} -> {visible(c.b_source)}",
            )
        )
    for label, col, body in rows:
        lines.append(f"  {_style(f'{label:<10}', color, col)}  {body}")


def _groups(d: EnvDiff) -> list[tuple[str, Union[PackageDiff, Sequence[Change]]]]:
    """The diff's groups in display order, shared by the text and markdown renderers."""
    hw = list(d.hardware)
    if d.cpu_flags_added or d.cpu_flags_removed:
        hw.append(_flags_change(d))
    return [
        ("Interpreter", d.interpreter),
        ("Packages", d.packages),
        *([("Conda packages", d.conda_packages)] if not d.conda_packages.empty else []),
        ("System packages", d.system_packages),
        ("OS", d.os),
        ("Hardware", hw),
        ("Environment variables", d.env),
        ("Git", d.git),
        *(
            [
                (
                    "Installed files",
                    [Change(f"{c.package}: {c.path}", c.a, c.b) for c in d.installed_files],
                )
            ]
            if d.installed_files
            else []
        ),
    ]


def _flags_change(d: EnvDiff) -> Change:
    """CPU flags shown as what each side has that the other lacks."""
    return Change(
        "cpu_flags (only on this side)", list(d.cpu_flags_removed), list(d.cpu_flags_added)
    )


def render_text(d: EnvDiff, color: bool = False) -> str:
    """The diff for a terminal; ANSI colours only when ``color`` (the CLI decides: TTY,
    NO_COLOR)."""
    lines = [
        f"A: {visible(d.label_a)}",
        f"B: {visible(d.label_b)}",
    ]
    if d.empty:
        lines.append("")
        lines.append(_style("no differences", color, "green"))
    else:
        if d.same_digest:
            lines.append(f"environment digest: {visible(d.digest_a)} (same on both sides)")
        else:
            lines.append(f"environment digest: {visible(d.digest_a)} -> {visible(d.digest_b)}")
        if d.numerics_warnings:
            lines.append("")
            lines.append(_style("may change numerical results:", color, "bold", "yellow"))
            for w in d.numerics_warnings:
                lines.append(f"  ! {visible(w.message)}")
        body: list[str] = []
        for title, group in _groups(d):
            if isinstance(group, PackageDiff):
                _text_packages(body, title.lower(), group, color)
            else:
                _text_changes(body, title.lower(), group, color)
        if body:
            lines.append("")
            lines.extend(body)
    for note in d.notes:
        lines.append(_style(f"note: {visible(note)}", color, "dim"))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- markdown


def _md_value(value: Any, key: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return "<br>".join(md_code(v) for v in value) or "—"
    return md_code(_show(value, key))


def _md_table(lines: list[str], header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")


def _md_changes(lines: list[str], title: str, changes: Sequence[Change], h: str) -> None:
    if not changes:
        return
    lines.append(f"{h} {title}")
    lines.append("")
    _md_table(
        lines,
        ("", "A", "B"),
        [(md_escape(c.key), _md_value(c.a, c.key), _md_value(c.b, c.key)) for c in changes],
    )


def _md_packages(lines: list[str], title: str, d: PackageDiff, h: str) -> None:
    if d.empty:
        return
    summary = ", ".join(f"{n} {g.replace('_', ' ')}" for g, n in d.counts().items() if n)
    lines.append(f"{h} {title} ({summary})")
    lines.append("")
    rows = []
    for group in PACKAGE_GROUPS:
        for c in getattr(d, group):
            if group == "source_changed":
                a = _md_value(f"{c.a} from {c.a_source}")
                b = _md_value(f"{c.b} from {c.b_source}")
            else:
                a, b = _md_value(c.a), _md_value(c.b)
            rows.append((group.replace("_", " "), md_code(c.name), a, b))
    _md_table(lines, ("change", "package", "A", "B"), rows)


def render_warnings_markdown(d: EnvDiff) -> str:
    """The numerics warnings as a GitHub alert block (empty string when there are none)."""
    if not d.numerics_warnings:
        return ""
    lines = ["> [!WARNING]", "> **These changes may move numerical results:**"]
    for w in d.numerics_warnings:
        lines.append(f"> - {md_escape(w.message)}")
    return "\n".join(lines) + "\n"


def render_markdown(d: EnvDiff, *, heading_level: int = 3, include_warnings: bool = True) -> str:
    """The diff as GitHub markdown: one table per group, every capture value escaped."""
    h = "#" * max(1, min(heading_level, 6))
    sub = "#" * max(1, min(heading_level + 1, 6))
    lines = [f"{h} Environment diff", ""]
    lines.append(f"**A**: {md_code(d.label_a)}  ")
    lines.append(f"**B**: {md_code(d.label_b)}")
    lines.append("")
    if d.empty:
        lines.append("No differences.")
        lines.append("")
    else:
        digest = (
            f"Environment digest unchanged: {md_code(d.digest_a)}"
            if d.same_digest
            else f"Environment digest: {md_code(d.digest_a)} → {md_code(d.digest_b)}"
        )
        lines.append(digest)
        lines.append("")
        if include_warnings and d.numerics_warnings:
            lines.append(render_warnings_markdown(d))
        for title, group in _groups(d):
            if isinstance(group, PackageDiff):
                _md_packages(lines, title, group, sub)
            else:
                _md_changes(lines, title, group, sub)
    for note in d.notes:
        lines.append(f"_{md_escape(note)}_")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- json


def render_json(d: EnvDiff) -> str:
    """The diff as JSON: sorted keys, two-space indent, trailing newline.

    Non-ASCII text is written as is, unless a value holds a lone surrogate (an undecodable file
    name read from the current environment): then everything is ``\\u``-escaped, so that the
    output is still valid JSON that any terminal or pipe can carry. Characters a terminal would
    obey (DEL, C1, bidi and invisible ones) are always ``\\u``-escaped: same data, inert text.
    """
    text = pretty_json(d.to_dict())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(d.to_dict(), sort_keys=True, indent=2, ensure_ascii=True) + "\n"
    return escape_json(text)


__all__ = [
    "md_code",
    "md_escape",
    "render_json",
    "render_markdown",
    "render_text",
    "render_warnings_markdown",
    "visible",
]
