"""Assertions shared by the tests.

A refusal test says WHAT was refused, not only that something was: ``refuses`` / ``refused`` check
the exception's type, the ``field`` a :class:`~reprobox.errors.ValidationError` names, and the
file, package or value the message names. Each check fails if a different field or thing were
refused, so a test cannot pass because some other input tripped first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from reprobox.errors import ValidationError

E = TypeVar("E", bound=BaseException)


def refused(
    excinfo: pytest.ExceptionInfo[E],
    error: type[BaseException] = ValidationError,
    *,
    field: str | None = None,
    field_prefix: str | None = None,
    names: str | Iterable[str] = (),
) -> E:
    """Check a caught refusal and return it.

    ``error``: the exact class raised (a subclass does not pass: say which one is promised).
    ``field``: the ``field`` attribute of a ValidationError, exactly; ``field_prefix``: its start
    (for a field that carries an index or a name computed by the code). ``names``: strings the
    message (with its hint) must contain: the file, package, value or reason it names.
    """
    err = excinfo.value
    assert type(err) is error, f"expected {error.__name__}, got {type(err).__name__}: {err}"
    wanted = [names] if isinstance(names, str) else list(names)
    assert field is not None or field_prefix is not None or wanted, (
        "a refusal test names what was refused: give field=, field_prefix= or names="
    )
    got_field = getattr(err, "field", None)
    if field is not None:
        assert got_field == field, f"refused field {got_field!r}, expected {field!r}: {err}"
        # The field is in the message the user reads, too.
        assert f"{field}=" in str(err), str(err)
    if field_prefix is not None:
        assert isinstance(got_field, str) and got_field.startswith(field_prefix), (
            f"refused field {got_field!r}, expected one under {field_prefix!r}: {err}"
        )
    text = str(err)
    for name in wanted:
        assert name in text, f"{name!r} not named in: {text}"
    return err


@contextmanager
def refuses(
    error: type[E] = ValidationError,  # type: ignore[assignment]
    *,
    field: str | None = None,
    field_prefix: str | None = None,
    names: str | Iterable[str] = (),
) -> Iterator[pytest.ExceptionInfo[E]]:
    """``with refuses(ValidationError, field="git.remote"): ...``: the block must raise exactly
    ``error``, naming ``field`` (and every string of ``names``) — see :func:`refused`."""
    wanted = [names] if isinstance(names, str) else list(names)
    with pytest.raises(error) as excinfo:
        yield excinfo
    refused(excinfo, error, field=field, field_prefix=field_prefix, names=wanted)


def assert_tables_keep_their_columns(md: str) -> None:
    """Every row of every markdown table has as many unescaped pipes as its header.

    (A renderer pads or drops cells to the header's count, so the HTML cannot show a broken row.)
    """
    table: list[int] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            table.append(len(re.findall(r"(?<!\\)\|", line)))
        elif table:
            assert set(table) == {table[0]}, md
            table = []
