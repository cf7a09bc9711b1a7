"""Text from a capture or a rerun, made safe for a terminal.

A capture may come from a stranger (a pull request), and a rerun prints whatever the recorded
command prints. Either could carry bytes that a terminal obeys instead of showing: colour codes
that paint a fake verdict green, a carriage return or cursor movement that writes over the real
one, an OSC 8 hyperlink whose text lies about its target, a title change, bidi overrides that make
``dlrow`` read as ``world``. Every such string passes through :func:`clean` (a block of lines) or
:func:`field` (one value on one line) before it reaches a terminal.

What is removed:

* escape sequences *whole* — CSI (``ESC [`` … final byte, or C1 ``0x9B``), OSC (``ESC ]`` … BEL or
  ST), DCS / SOS / PM / APC strings, and two-byte ``ESC x`` sequences — so that no parameter bytes
  are left behind to look like text;
* every remaining C0 control except newline and tab (tab only moves the cursor right, over
  nothing); DEL; every C1 control (U+0080–U+009F);
* the bidi controls (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C): they reorder what is
  shown, so the text on screen differs from the text in the record;
* the other invisible format characters (category Cf: zero-width space, word joiner, BOM, soft
  hyphen, tag characters…), which only serve to make two different strings look the same —
  except ZWJ/ZWNJ (U+200D/U+200C), which emoji and several scripts need and which move nothing;
* line and paragraph separators (U+2028/U+2029) become newlines; a lone surrogate (an undecodable
  file name) becomes U+FFFD.

:func:`escape_json` is the ``--json`` counterpart: the same characters written as ``\\uXXXX``
escapes, so the JSON stays exact data while the terminal that shows it sees only ASCII for them.
"""

from __future__ import annotations

import re
import unicodedata

#: Escape sequences, removed whole. OSC and the string controls run to their terminator (BEL or
#: ST, either 7-bit ``ESC \\`` or C1 ``0x9C``), or to the end of the text when unterminated.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"  # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS...
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"  # two-byte (and nF) escapes: ESC c, ESC 7, ESC ( B ...
)

#: Kept although in category Cf: zero-width non-joiner / joiner (emoji sequences, Indic, Persian).
_KEEP_FORMAT = frozenset("\u200c\u200d")


def _drop(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20:
        return ch not in "\n\t"
    if 0x7F <= code <= 0x9F:
        return True
    return unicodedata.category(ch) == "Cf" and ch not in _KEEP_FORMAT


def _is_unsafe(ch: str) -> bool:
    return _drop(ch) or ch in "\u2028\u2029" or 0xD800 <= ord(ch) <= 0xDFFF


#: Candidates for :func:`_is_unsafe`: anything but printable ASCII, newline and tab.
_CANDIDATE = re.compile(r"[^\x20-\x7e\n\t]")


def _replacement(ch: str) -> str:
    if not _is_unsafe(ch):
        return ch
    if ch in "\u2028\u2029":
        return "\n"
    if 0xD800 <= ord(ch) <= 0xDFFF:
        return "\ufffd"
    return ""


#: A colour (SGR) sequence: what ``keep_colors`` lets through.
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def clean(text: object, *, keep_colors: bool = False) -> str:
    """``text`` (any value; ``str()`` of it) with no escape sequence and no control, bidi or
    invisible formatting character left; newlines and tabs are kept.

    ``keep_colors`` keeps SGR colour codes (``ESC [ 1;32 m``) and nothing else: for reprobox's
    own renderers, which escape every value from a capture before they colour anything.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():
        return s  # the common case, fast
    if keep_colors:
        parts = _SGR.split(s)
        colors = _SGR.findall(s)
        out = [clean(parts[0])]
        for color, part in zip(colors, parts[1:]):
            out += [color, clean(part)]
        return "".join(out)
    s = _SEQUENCE.sub("", s)
    return _CANDIDATE.sub(lambda m: _replacement(m.group()), s)


def field(value: object) -> str:
    """One value on one line: :func:`clean`, with newlines and tabs turned into spaces, so that a
    value can never start a line of its own (a fake verdict, a fake table row)."""
    s = clean(value)
    if "\n" in s or "\t" in s or "\r" in s:
        s = s.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return s


def stream_line(line: str) -> str:
    """One line of a rerun's or a build's output, as a terminal would finally show it.

    A carriage return rewinds to the start of the line, so only what follows the last one stays
    visible (progress bars): that part is kept, cleaned, without the carriage return itself.
    """
    line = line.rstrip("\r")
    if "\r" in line:
        line = line.rsplit("\r", 1)[1]
    return clean(line)


def is_clean(text: str) -> bool:
    """True when :func:`clean` would leave ``text`` unchanged (tests, assertions)."""
    return clean(text) == text


def escape_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every character that
    :func:`clean` would remove, and U+2028/U+2029, written as a ``\\uXXXX`` escape.

    Outside strings JSON is ASCII, so these characters can only sit inside strings, where an
    escape means the same character: the data is unchanged, the terminal never sees them.
    """
    if text.isascii() and text.isprintable():
        return text

    def esc(m: re.Match[str]) -> str:
        ch = m.group()
        if not _is_unsafe(ch):
            return ch
        code = ord(ch)
        return f"\\u{code:04x}" if code < 0x10000 else _surrogate_pair(code)

    return _CANDIDATE.sub(esc, text)


def _surrogate_pair(code: int) -> str:
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


__all__ = ["clean", "escape_json", "field", "is_clean", "stream_line"]
