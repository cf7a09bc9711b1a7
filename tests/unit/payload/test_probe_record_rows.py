"""The probe reads RECORD files without the csv module where a RECORD has no quoting (one row
per line): the rows must be exactly what csv's reader gives, for every shape a RECORD takes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from reprobox.payload import probe


def _by_csv(path: Path) -> list[tuple[str, str, int | None]]:
    """The reference: csv's reader, as the probe read every RECORD before."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    out = []
    for fields in csv.reader(io.StringIO(text, newline="")):
        if not fields or not fields[0]:
            continue
        digits = fields[2].strip() if len(fields) > 2 else ""
        size = int(digits) if digits.isascii() and digits.isdigit() else None
        out.append((fields[0], fields[1] if len(fields) > 1 else "", size))
    return out


RECORDS = {
    "plain": (
        "pkg/__init__.py,sha256=abc,12\npkg/x.py,sha256=def,3400\npkg-1.0.dist-info/RECORD,,\n"
    ),
    "no final newline": "a.py,sha256=abc,1\nb.py,sha256=def,2",
    "empty lines and commas only": "\na.py,sha256=abc,1\n\n,,\n,\nb.py,,\n",
    "short and long rows": "a.py\nb.py,sha256=x\nc.py,sha256=y,5,extra\nd.py,sha256=z, 7 \n",
    "quoted path with a comma": '"odd,name.py",sha256=abc,10\nplain.py,sha256=def,11\n',
    "quoted quote": '"say ""hi"".py",sha256=abc,1\n',
    "CRLF": "a.py,sha256=abc,1\r\nb.py,sha256=def,2\r\n",
    "lone CR": "a.py,sha256=abc,1\rb.py,sha256=def,2\n",
    "size not a number": "a.py,sha256=abc,-1\nb.py,sha256=def,1e3\nc.py,sha256=g,\n",
    # digits int() refuses ('²') or that no installer writes: no size, never a crash
    "size in other digits": "a.py,sha256=abc,\u00b2\nb.py,sha256=def,\u0661\u0662\nc.py,,3\n",
    "non-UTF-8 name": b"caf\xe9.py,sha256=abc,1\n".decode("latin-1"),
    "unicode separators inside a name": "a\u2028b.py,sha256=abc,1\nc\x0bd.py,,\n",
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_rows_are_what_the_csv_reader_gives(tmp_path: Path, name: str) -> None:
    path = tmp_path / "RECORD"
    text = RECORDS[name]
    data = text.encode("latin-1") if name == "non-UTF-8 name" else text.encode("utf-8")
    path.write_bytes(data)
    got = list(probe._record_fields(str(path)))
    assert got == _by_csv(path)
    assert got  # every case has rows


def test_a_record_that_cannot_be_read_has_no_rows(tmp_path: Path) -> None:
    assert list(probe._record_fields(str(tmp_path / "missing"))) == []


def test_a_record_that_is_not_csv_has_no_rows_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field over csv's size limit: no traceback out of the probe, a warning naming it."""
    warnings: list[str] = []
    monkeypatch.setattr(probe, "_warnings", warnings)
    path = tmp_path / "RECORD"
    path.write_text('"' + "x" * (csv.field_size_limit() + 1) + '",sha256=abc,1\nb.py,,\n')
    assert probe._record_fields(str(path)) == []
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "not a CSV file" in warnings[0]


def test_a_size_in_other_digits_is_no_size(tmp_path: Path) -> None:
    path = tmp_path / "RECORD"
    path.write_text("a.py,sha256=abc,\u00b2\nb.py,sha256=def,\u0661\u0662\nc.py,,3\n")
    assert probe._record_fields(str(path)) == [
        ("a.py", "sha256=abc", None),
        ("b.py", "sha256=def", None),
        ("c.py", "", 3),
    ]
