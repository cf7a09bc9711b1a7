"""doctor: each finding says what is there, and what falls short names its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobox import doctor

from ..conftest import require


def test_dead_daemon_is_reported_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from reprobox import engine

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    monkeypatch.setenv("REPROBOX_ENGINE", "docker")  # Docker asked for: no fallback to podman
    monkeypatch.setattr(engine, "_ENGINE", None)  # a fresh connection, not the session's
    checks = doctor.check_engine()
    assert len(checks) == 1
    assert checks[0].name == "docker" and not checks[0].ok
    assert "does not answer" in checks[0].detail and checks[0].fix


def test_dead_daemon_with_podman_here_reports_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from reprobox import engine

    require(engine.PodmanEngine().available(), "podman (scripts/setup-podman.sh)")
    # No daemon answers where Docker looks by default (DOCKER_HOST set would name one: then
    # Docker it is, answering or not).
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(engine.DockerEngine, "available", lambda self: False)
    monkeypatch.delenv("REPROBOX_ENGINE", raising=False)
    monkeypatch.setattr(engine, "_ENGINE", None)
    checks = {c.name: c for c in doctor.check_engine()}
    assert not checks["docker"].ok and "podman is used" in checks["docker"].detail
    assert checks["podman"].ok and "no daemon" in checks["podman"].detail


def test_missing_tools_name_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(doctor.lock_uv, "find_uv", lambda: None)
    for check in (
        doctor.check_git(),
        doctor.check_dvc(),
        doctor.check_uv(),
        doctor.check_debootstrap(),
    ):
        assert not check.ok and check.fix and "install" in check.fix, check


def test_unreachable_index_is_not_fatal(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    check = doctor.check_index()
    assert not check.ok and "unreachable" in check.detail
    assert check.fix and "reprobox lock" in check.fix


def test_diagnose_flattens_and_serialises(monkeypatch: pytest.MonkeyPatch):
    # A check may give one finding or a list (the engine check gives one per engine): diagnose
    # keeps their order and flattens the lists.
    monkeypatch.setattr(
        doctor,
        "CHECKS",
        (
            doctor.check_git,
            lambda: [doctor.Check("a", True, "x"), doctor.Check("b", False, "y", "z")],
            doctor.check_uv,
        ),
    )
    found = doctor.diagnose()
    assert [c.name for c in found] == ["git", "a", "b", "uv"]
    # What a real check finds serialises to the four fields --json prints, and nothing else.
    git = found[0].to_dict()
    assert set(git) == {"name", "ok", "detail", "fix"}
    assert git["ok"] is True and git["fix"] is None and git["detail"].startswith("git version")


def test_uv_is_the_one_installed_with_reprobox_also_off_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # uv is a dependency of reprobox: where reprobox's folder is not on PATH (a venv's
    # bin/reprobox run by its path, pipx), doctor finds the uv that builds use, as they do.
    monkeypatch.setenv("PATH", str(tmp_path))
    found = doctor.lock_uv.find_uv()
    assert found is not None, "the test environment installs reprobox with its uv"
    check = doctor.check_uv()
    assert check.ok and check.detail.startswith("uv ") and str(found) in check.detail
    assert check.fix is None


def test_uv_that_does_not_run_is_reported_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    broken = tmp_path / "uv"
    broken.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(doctor.lock_uv, "find_uv", lambda: broken)
    check = doctor.check_uv()
    assert not check.ok
    assert str(broken) in check.detail and "exit status 3" in check.detail
    assert check.fix and "reinstall reprobox" in check.fix
