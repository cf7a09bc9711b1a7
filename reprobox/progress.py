"""How a long operation reports its steps: one line of text at a time (the CLI prints them on
stderr; the library's caller may pass its own)."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]
