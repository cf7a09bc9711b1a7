"""The rerun's own repository (git inside the container), the container's mounts, image
substitutions in the verdict, and DVC inputs missing from a local remote (real git, real DVC)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reprobox.backends.docker import (
    CONTAINER_GIT_DIR,
    checkout_mounts,
    git_env,
    parse_substitutions,
    run_git_folder,
)
from reprobox.workspace import dvc
from reprobox.workspace import git as g
from reprobox.outcome import Tolerance
from reprobox.errors import GitError
from reprobox.run import RunRecord
from reprobox.render import run_text

from ..asserts import refuses


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str]:
    top = tmp_path / "repo"
    top.mkdir()
    sh(top, "git", "init", "-q", "-b", "main")
    sh(top, "git", "config", "user.email", "t@example.com")
    sh(top, "git", "config", "user.name", "t")
    (top / "a.txt").write_text("one\n")
    sh(top, "git", "add", "a.txt")
    sh(top, "git", "commit", "-q", "-m", "one")
    recorded = sh(top, "git", "rev-parse", "HEAD").strip()
    (top / "a.txt").write_text("two\n")
    sh(top, "git", "commit", "-q", "-am", "two")
    sh(top, "git", "branch", "secret-branch")
    sh(top, "git", "remote", "add", "origin", "https://user:tok3n-canary@example.com/x.git")
    return top, recorded


def test_the_run_repository_holds_the_recorded_commit_alone(repo, tmp_path):
    top, recorded = repo
    checkout = tmp_path / "scratch" / "checkout"
    g.make_worktree(top, recorded, checkout)
    folder = run_git_folder(checkout)
    made, dotgit = g.make_run_repository(top, recorded, folder)
    assert dotgit.read_text() == f"gitdir: {CONTAINER_GIT_DIR}\n"
    git = ["git", "--git-dir", str(made)]
    assert sh(tmp_path, *git, "rev-parse", "HEAD").strip() == recorded
    assert sh(tmp_path, *git, "rev-list", "--all").split() == [recorded]  # no other commit
    assert sh(tmp_path, *git, "for-each-ref").strip() == ""  # no branch, tag or remote ref
    config = (made / "config").read_text()
    assert "tok3n-canary" not in config and "remote" not in config and "bare = false" in config
    assert not (made / "hooks").exists() and not (made / "FETCH_HEAD").exists()
    # the index is the recorded commit's: seen from the checkout, nothing is changed
    status = sh(
        checkout,
        "git",
        "--git-dir",
        str(made),
        "--work-tree",
        str(checkout),
        "status",
        "--porcelain",
    )
    assert status == ""


def test_the_container_sees_the_run_repository_read_only(repo, tmp_path):
    top, recorded = repo
    checkout = tmp_path / "scratch" / "checkout"
    g.make_worktree(top, recorded, checkout)
    before = {m.target: m for m in checkout_mounts(checkout)}
    assert before["/workspace/.git"].source == checkout.resolve() / ".git"
    assert git_env(checkout) == {}
    made, dotgit = g.make_run_repository(top, recorded, run_git_folder(checkout))
    mounts = {m.target: m for m in checkout_mounts(checkout)}
    assert mounts["/workspace/.git"].source == dotgit and mounts["/workspace/.git"].read_only
    assert mounts[CONTAINER_GIT_DIR].source == made and mounts[CONTAINER_GIT_DIR].read_only
    assert mounts["/workspace"].read_only is False
    # beside the checkout, never inside it (the command could rewrite it there)
    assert not str(made).startswith(str(checkout.resolve()) + "/")
    env = git_env(checkout)
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert {env["GIT_CONFIG_VALUE_0"], env["GIT_CONFIG_VALUE_1"]} == {
        "/workspace",
        CONTAINER_GIT_DIR,
    }


def test_a_commit_the_repository_lacks_is_an_error_naming_it(repo, tmp_path):
    top, _ = repo
    with refuses(GitError, names=["fetch of the recorded commit", "f" * 40]):
        g.make_run_repository(top, "f" * 40, tmp_path / "x")


# --------------------------------------------------------------------------- substitutions


def test_substitutions_file_is_parsed_strictly():
    text = (
        "git 1:2.0.0-0reprobox1 1:2.39.5-0+deb12u2\n"
        "libfoo 1.0-1 -\n"
        "unpinned - 2.3-1\n"
        "evil;rm -rf / 1 2\n"
        "\x1b[31mred 1 2\n"
    )
    subs = parse_substitutions(text)
    assert [s.name for s in subs] == ["git", "libfoo", "unpinned"]
    assert subs[0].describe() == (
        "system package git=1:2.0.0-0reprobox1: no longer in the "
        "archive, 1:2.39.5-0+deb12u2 installed"
    )
    assert subs[1].describe() == (
        "system package libfoo=1.0-1: not available in the archive, not installed"
    )
    assert subs[2].recorded is None and subs[2].describe().startswith("system package unpinned:")


def _record(**kw: Any) -> RunRecord:
    base: dict[str, Any] = dict(
        experiment_id="0123456789ab",
        experiment_name="train",
        started="2026-01-01T00:00:00Z",
        backend="docker",
        backend_reason="--backend docker",
        environment="image x",
        command="python train.py",
        command_kind="shell",
        exit_code=0,
        tolerance=Tolerance(),
    )
    base.update(kw)
    return RunRecord(**base)


def test_substitutions_make_the_verdict_say_so_and_strict_fail():
    sub = "system package git=1:2.0: no longer in the archive, 1:2.39 installed"
    plain = _record(substitutions=(sub,))
    assert plain.reproduced and plain.ok
    assert plain.verdict == "reproduced with substitutions"
    text = run_text(plain).splitlines()
    assert text[0] == "REPRODUCED WITH SUBSTITUTIONS: experiment 0123456789ab (train)"
    assert f"  ~ {sub}" in text
    assert plain.to_dict()["substitutions"] == [sub]
    strict = _record(substitutions=(sub,), strict=True)
    assert strict.reproduced and not strict.ok
    assert "(--strict: the run fails)" in run_text(strict)
    assert _record(strict=True).ok and _record().verdict == "reproduced"


# --------------------------------------------------------------------------- DVC inputs


def _dvc(cwd: Path, *args: str) -> None:
    sh(cwd, sys.executable, "-m", "dvc", *args)


@pytest.mark.dvc
def test_capture_warns_about_inputs_the_local_remote_lacks(tmp_path):
    top = tmp_path / "p"
    top.mkdir()
    sh(top, "git", "init", "-q")
    _dvc(top, "init", "-q")
    remote = tmp_path / "remote"
    _dvc(top, "remote", "add", "-d", "store", str(remote))
    (top / "pushed.csv").write_text("a\n1\n")
    (top / "kept.csv").write_text("b\n2\n")
    (top / "folder").mkdir()
    (top / "folder" / "x.txt").write_text("x")
    for name in ("pushed.csv", "kept.csv", "folder"):
        _dvc(top, "add", "-q", name)
    _dvc(top, "push", "-q", "pushed.csv.dvc")
    warnings = dvc.inputs_missing_from_remote(top)
    assert len(warnings) == 1
    assert "'store'" in warnings[0] and "kept.csv" in warnings[0] and "folder" in warnings[0]
    assert "pushed.csv" not in warnings[0].replace("kept.csv", "")
    _dvc(top, "push", "-q")
    assert dvc.inputs_missing_from_remote(top) == []
    # a folder pushed but one of its files removed from the remote is named
    shutil.rmtree(
        remote
        / "files"
        / "md5"
        / dvc.read_dir_manifest(dvc.object_path(remote, _dir_hash(top / "folder.dvc")))["x.txt"][:2]
    )
    assert "x.txt" in dvc.inputs_missing_from_remote(top)[0]
    assert sorted(dvc.data_files(top)) == ["folder.dvc", "kept.csv.dvc", "pushed.csv.dvc"]


def _dir_hash(dvc_file: Path) -> str:
    import yaml

    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


# --------------------------------------------------------------------------- declared outputs


def test_declared_outputs_are_compared_by_value_and_file_by_file(tmp_path):
    """The recorded copy is the user's own working tree file when its sha256 is the recorded
    one: a CSV within the tolerance is CLOSE, a folder names its differing file."""
    from reprobox.workspace.metrics import hash_output
    from reprobox.outcome import DIFFERS, OutputCheck
    from reprobox.run import refine_output_checks
    from reprobox.store import Store

    user = tmp_path / "user"
    (user / "figs").mkdir(parents=True)
    sh(user, "git", "init", "-q")
    (user / "preds.csv").write_text("id,p\n1,0.25\n")
    (user / "figs" / "a.txt").write_text("a")
    (user / "figs" / "b.txt").write_text("b")
    checkout = tmp_path / "checkout"
    (checkout / "figs").mkdir(parents=True)
    (checkout / "preds.csv").write_text("id,p\n1,0.2500001\n")
    (checkout / "figs" / "a.txt").write_text("a")
    (checkout / "figs" / "b.txt").write_text("B")
    checks = []
    for rel in ("preds.csv", "figs"):
        want, got = hash_output(user, rel), hash_output(checkout, rel)
        checks.append(OutputCheck(rel, want.sha256, got.sha256, DIFFERS, want.size, got.size))
    store = Store(user)
    close, _ = refine_output_checks(store, checkout, tuple(checks), (), Tolerance(rtol=1e-5), ())
    by = {c.path: c for c in close}
    assert by["preds.csv"].status == "close" and "row 2, column p" in by["preds.csv"].detail
    assert [(f.path, f.status) for f in by["figs"].files] == [("b.txt", "differs")]
    exact, _ = refine_output_checks(store, checkout, tuple(checks), (), Tolerance(), ())
    assert {c.path: c.status for c in exact} == {"preds.csv": "differs", "figs": "differs"}
    assert "recorded 0.25, now 0.2500001" in {c.path: c for c in exact}["preds.csv"].describe()
    # once the user's copy changed, it is not the recorded one: nothing is claimed
    (user / "preds.csv").write_text("id,p\n1,0.9\n")
    later, _ = refine_output_checks(store, checkout, tuple(checks), (), Tolerance(rtol=1), ())
    assert {c.path: c for c in later}["preds.csv"].detail == ""
