"""uv is a declared dependency: the venv backend finds the packaged binary."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_venv_backend_finds_the_declared_uv_without_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """uv is a dependency of reprobox: the venv backend uses it even when PATH lacks it (pipx)."""
    import uv

    from reprobox.backends.venv import Installer

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REPROBOX_VENV_INSTALLER", raising=False)
    inst = Installer(tmp_path / "python")
    assert inst.name == "uv" and inst.uv == uv.find_uv_bin()
    monkeypatch.setenv("REPROBOX_VENV_INSTALLER", "pip")
    assert Installer(tmp_path / "python").name == "pip"


def test_an_environments_folder_that_cannot_be_one_is_named(tmp_path, monkeypatch) -> None:
    """A file, a dangling link or a relative path where the venvs go: named, not an internal
    error (and a relative path would put the venvs in whatever folder reprobox runs in)."""
    import pytest as _pytest

    from reprobox.backends.venv import open_cache_lock, venvs_dir
    from reprobox.errors import UsageError

    a_file = tmp_path / "afile"
    a_file.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere" / "deeper")
    for root in (a_file, dangling, a_file / "below"):
        with _pytest.raises(UsageError) as info:
            open_cache_lock(root, "k")
        assert str(root) in info.value.message and "REPROBOX_VENV_DIR" in (info.value.hint or "")
    monkeypatch.setenv("REPROBOX_VENV_DIR", "relative/dir")
    with _pytest.raises(UsageError) as info:
        venvs_dir()
    assert "not an absolute path" in info.value.message
    monkeypatch.setenv("REPROBOX_VENV_DIR", str(tmp_path / "venvs"))
    with open_cache_lock(venvs_dir(), "k") as fh:
        assert fh.name == str(tmp_path / "venvs" / "k.lock")


def test_a_junk_installer_choice_is_refused_even_when_no_venv_is_built(monkeypatch) -> None:
    import pytest as _pytest

    from reprobox.backends.venv import installer_choice
    from reprobox.errors import UsageError

    monkeypatch.setenv("REPROBOX_VENV_INSTALLER", "junk")
    with _pytest.raises(UsageError) as info:
        installer_choice()
    assert "REPROBOX_VENV_INSTALLER" in info.value.message
    monkeypatch.setenv("REPROBOX_VENV_INSTALLER", " PIP ")
    assert installer_choice() == "pip"
