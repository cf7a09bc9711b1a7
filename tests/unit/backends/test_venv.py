"""uv is a declared dependency: the venv backend finds the packaged binary."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_venv_backend_finds_the_declared_uv_without_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """uv is a dependency of reprobox: the venv backend uses it even when PATH lacks it (pipx)."""
    import uv

    from reprobox.backends.venv import _Installer

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REPROBOX_VENV_INSTALLER", raising=False)
    inst = _Installer(tmp_path / "python")
    assert inst.name == "uv" and inst.uv == uv.find_uv_bin()
    monkeypatch.setenv("REPROBOX_VENV_INSTALLER", "pip")
    assert _Installer(tmp_path / "python").name == "pip"
