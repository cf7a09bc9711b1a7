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
