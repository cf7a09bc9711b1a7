"""diff/render.visible: one value as one line, nothing that hides."""

from __future__ import annotations

from reprobox.diff.render import visible


def test_blank_letters_and_invisible_controls_are_written_as_escapes() -> None:
    """A name of Hangul fillers or blank braille showed as nothing at all."""
    assert visible("\u3164\u3164") == "\\u3164\\u3164"
    assert visible("a\u2800b\uffa0") == "a\\u2800b\\uffa0"
    assert visible("x\u202ey\n") == "x\\u202ey\\x0a"
    assert visible("caf\u00e9 \u00b2 \u4e2d") == "caf\u00e9 \u00b2 \u4e2d"  # letters as they are
