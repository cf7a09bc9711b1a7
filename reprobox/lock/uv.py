"""The host's uv binary: the lock resolves for another platform with it, and the venv backend
and the image build install with it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional


def find_uv() -> Optional[Path]:
    """The host's uv *binary* (not a pyenv shim or wrapper script), or None."""
    candidates: list[str] = []
    try:
        # lazy: optional, may be absent or broken; the PyPI package ships the binary
        import uv

        candidates.append(uv.find_uv_bin())
    except Exception:  # noqa: BLE001 - not installed as a package, or broken
        pass
    found = shutil.which("uv")
    if found:
        candidates.append(os.path.realpath(found))
    for cand in candidates:
        try:
            with open(cand, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    return Path(cand)
        except OSError:
            continue
    return None
