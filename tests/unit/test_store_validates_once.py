"""A record is validated once, by the store, when it is read: build, run and verify take the
store's word for it (before, ``reprobox build`` walked the record three times and ``run`` four)."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reprobox import api
from reprobox import backends as backends_mod
from reprobox.errors import ValidationError
from reprobox.model import GitInfo, OutputFile, check, sha256_hex
from reprobox.store import Store

from ..factories import make_env, make_exp
from .test_run_plan import TRAIN, HostBackend

PACKAGE = Path(api.__file__).resolve().parent


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Calls of the two record walkers, each still doing its work."""
    calls = {"validate_experiment": 0, "validate_environment": 0}
    for name in calls:
        real = getattr(check, name)

        def counting(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(check, name, counting)
    return calls


@pytest.fixture()
def recorded(tmp_path: Path) -> tuple[Store, str]:
    """A real git repository with a recorded run of its train.py."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    (root / "train.py").write_text(TRAIN)
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    env = make_env()
    exp = replace(
        make_exp(env),
        command=f"{sys.executable} train.py",
        git=GitInfo(commit=_git(root, "rev-parse", "HEAD")),
        metrics={"metrics.json": {"acc": 0.9, "n": 10}},
        outputs=(OutputFile("model.bin", sha256_hex(b"abc"), 3),),
        id="",
    )
    store = Store(root)
    return store, store.save(exp, env).id


def test_a_build_validates_the_record_once(
    recorded: tuple[Store, str], counted: dict[str, int]
) -> None:
    store, exp_id = recorded
    result = api.build("latest", dry_run=True, store=store)  # found by listing: loaded once
    assert "FROM python:3.11.7-slim-bookworm" in result.dockerfile
    assert counted == {"validate_experiment": 1, "validate_environment": 1}


def test_a_run_validates_the_record_once(
    recorded: tuple[Store, str], counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, exp_id = recorded
    backend = HostBackend()
    monkeypatch.setattr(
        backends_mod,
        "choose_backend",
        lambda name, engine=None, limits=None: (backend, "test host backend"),
    )
    record = api.run(exp_id[:6], store=store)
    assert record.reproduced, record.differences
    assert counted == {"validate_experiment": 1, "validate_environment": 1}


def test_a_named_experiment_is_loaded_once(
    recorded: tuple[Store, str], counted: dict[str, int]
) -> None:
    store, exp_id = recorded
    assert store.get("baseline").id == exp_id
    assert counted == {"validate_experiment": 1, "validate_environment": 1}


def test_reading_a_hostile_record_is_refused_by_the_store(tmp_path: Path) -> None:
    env = make_env()
    patch = "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
    exp = replace(
        make_exp(env),
        git=GitInfo(
            "a" * 40, dirty=True, patch="patch.diff", patch_sha256=sha256_hex(patch.encode())
        ),
        id="",
    )
    store = Store(tmp_path)
    written = store.save(exp, env, {"patch.diff": patch})  # as an attacker's commit would hold it
    with pytest.raises(ValidationError) as info:
        store.load(written.id)
    assert info.value.field.startswith("git.patch")
    assert ".git/hooks/post-checkout" in str(info.value)
    good, skipped = store.scan(report=False)
    assert good == [] and [s.id for s in skipped] == [written.id]


def test_nothing_outside_the_store_walks_a_loaded_record_again() -> None:
    """Every call of the record walkers in the package: the store's read, and the check a
    capture makes of what it is about to store (no other module may repeat it)."""
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if name in ("validate_experiment", "validate_environment"):
                    callers.add(path.relative_to(PACKAGE).as_posix())
    assert callers == {"store.py", "pipeline.py", "model/check.py"}
