"""Real git repositories and a real DVC project with a local-folder remote.

Git tests need only git; the DVC scenario (markers ``dvc`` and ``slow``) builds a two-stage
pipeline, pushes its data to a folder remote, clones the repository afresh, checks the commit out
in a worktree, pulls the data from the remote only and forces the pipeline to recompute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.workspace import dvc, metrics
from reprobox.workspace import git as g
from reprobox.errors import DvcError, GitError, ToolMissing, ValidationError

from ..conftest import require_tool

CANARY = "ghp_canary_7f3a91"


def run(cwd: Path, *argv: str, env: dict | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    return done.stdout


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", *args)


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit_all(repo: Path, message: str = "commit") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def tree_snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in (".git", ".reprobox", ".dvc") or not p.is_file():
            continue
        out[rel.as_posix()] = p.read_bytes()
    return out


# --------------------------------------------------------------------------- git


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    r = new_repo(tmp_path / "repo")
    (r / "train.py").write_text("print('train')\n")
    (r / "config.yaml").write_text("lr: 0.1\n")
    (r / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (r / "old.txt").write_text("to be deleted\n")
    (r / "sp ace.txt").write_text("a\n")
    (r / ".gitignore").write_text("*.log\n")
    commit_all(r, "initial")
    return r


def test_clean_tree(repo):
    cap = g.git_info(repo)
    assert cap.info.commit == git(repo, "rev-parse", "HEAD").strip()
    assert cap.info.branch == "main"
    assert cap.patch is None and not cap.info.dirty and cap.info.untracked == ()
    assert cap.warnings == []
    assert cap.info.patch is None and cap.info.patch_sha256 is None


def test_dirty_tree_round_trips_through_a_worktree(repo, tmp_path):
    (repo / "train.py").write_text("print('train v2')\n")  # unstaged
    (repo / "config.yaml").write_text("lr: 0.01\n")
    git(repo, "add", "config.yaml")  # staged
    blob = bytearray((repo / "weights.bin").read_bytes())
    blob[100:108] = b"\x00\xff\x00\xff\x13\x37\x00\x00"
    (repo / "weights.bin").write_bytes(bytes(blob))  # binary change
    (repo / "new.bin").write_bytes(b"\x00\x01\x02PNG\x00")
    git(repo, "add", "new.bin")  # new staged binary file
    (repo / "old.txt").unlink()  # deletion
    (repo / "sp ace.txt").write_text("a\nb\n")
    (repo / "notes.txt").write_text("untracked\n")  # untracked: listed, not patched
    (repo / "debug.log").write_text("ignored\n")  # ignored: neither
    (repo / ".reprobox" / "experiments").mkdir(parents=True)
    (repo / ".reprobox" / "experiments" / "x.json").write_text("{}\n")  # the store: excluded

    cap = g.git_info(repo)
    assert cap.info.dirty and cap.patch
    assert b"GIT binary patch" in cap.patch
    assert b".reprobox" not in cap.patch and b"notes.txt" not in cap.patch
    assert cap.info.untracked == ("notes.txt",)
    assert any("notes.txt" in w and "NOT in the recorded patch" in w for w in cap.warnings)
    import hashlib

    assert cap.info.patch_sha256 == hashlib.sha256(cap.patch).hexdigest()

    patch_file = tmp_path / "patch.diff"
    patch_file.write_bytes(cap.patch)
    dest = tmp_path / "wt"
    path = g.make_worktree(repo, cap.info.commit, dest)
    try:
        g.apply_patch(path, patch_file)
        expected = tree_snapshot(repo)
        del expected["notes.txt"], expected["debug.log"]
        assert tree_snapshot(path) == expected  # byte for byte, binary files included
        assert git(path, "rev-parse", "HEAD").strip() == cap.info.commit
    finally:
        g.remove_worktree(repo, dest)
    assert not dest.exists()
    g.remove_worktree(repo, dest)  # a second call is harmless
    assert str(dest) not in git(repo, "worktree", "list")


def test_store_below_the_top_of_the_repository_is_excluded(repo):
    project = repo / "ml"
    (project / ".reprobox").mkdir(parents=True)
    (project / ".reprobox" / "rec.json").write_text("{}\n")
    (project / "model.py").write_text("x = 1\n")
    commit_all(repo, "store committed")
    (project / ".reprobox" / "rec.json").write_text('{"changed": true}\n')
    (repo / "train.py").write_text("print('v2')\n")
    cap = g.git_info(project, exclude=(".reprobox",))
    assert b"train.py" in cap.patch and b"rec.json" not in cap.patch


def test_remote_credentials_never_appear(repo):
    git(repo, "remote", "add", "origin", f"https://oauth2:{CANARY}@git.example.com/team/proj.git")
    (repo / "train.py").write_text("print(2)\n")
    cap = g.git_info(repo)
    assert cap.info.remote == "https://git.example.com/team/proj.git"
    assert CANARY not in repr(cap) and CANARY.encode() not in (cap.patch or b"")


def test_remote_of_the_branch_upstream_wins_over_origin(repo, tmp_path):
    upstream = new_repo(tmp_path / "upstream")
    git(repo, "remote", "add", "origin", "https://example.com/origin.git")
    git(repo, "remote", "add", "fork", f"https://me:{CANARY}@example.com/fork.git")
    git(repo, "config", "branch.main.remote", "fork")
    git(repo, "config", "branch.main.merge", "refs/heads/main")
    assert g.git_info(repo).info.remote == "https://example.com/fork.git"
    assert upstream.exists()


def test_detached_head_has_no_branch(repo):
    git(repo, "checkout", "-q", "--detach")
    assert g.git_info(repo).info.branch is None


def test_repository_without_commit(tmp_path):
    r = new_repo(tmp_path / "empty")
    with pytest.raises(GitError) as info:
        g.git_info(r)
    assert "no commit" in info.value.message and "git commit" in info.value.hint


def test_not_a_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError) as info:
        g.git_info(tmp_path / "plain")
    assert "git init" in info.value.hint


def test_git_missing(repo, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(ToolMissing) as info:
        g.git_info(repo)
    assert "install git" in str(info.value)


def test_missing_commit_says_fetch(repo, tmp_path):
    with pytest.raises(GitError) as info:
        g.make_worktree(repo, "0123456789abcdef0123456789abcdef01234567", tmp_path / "wt")
    assert "git fetch" in info.value.hint
    assert not (tmp_path / "wt").exists()


def test_hostile_patch_is_refused_before_anything_changes(repo, tmp_path):
    commit = git(repo, "rev-parse", "HEAD").strip()
    dest = g.make_worktree(repo, commit, tmp_path / "wt")
    try:
        hook = dest / ".." / "pwned"
        patch = tmp_path / "evil.diff"
        patch.write_bytes(
            b"diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
            b"@@ -1 +1 @@\n-print('train')\n+print('changed')\n"
            b"diff --git a/.git/hooks/post-commit b/.git/hooks/post-commit\nnew file mode 100755\n"
            b"--- /dev/null\n+++ b/.git/hooks/post-commit\n@@ -0,0 +1 @@\n+touch ../pwned\n"
        )
        with pytest.raises(ValidationError) as info:
            g.apply_patch(dest, patch)
        assert info.value.field == "git.patch"
        assert (dest / "train.py").read_text() == "print('train')\n"  # nothing applied
        assert not hook.exists()
    finally:
        g.remove_worktree(repo, tmp_path / "wt")


def test_patch_that_no_longer_applies(repo, tmp_path):
    (repo / "train.py").write_text("print('v2')\n")
    cap = g.git_info(repo)
    patch = tmp_path / "p.diff"
    patch.write_bytes(cap.patch)
    commit_all(repo, "move on")
    (repo / "train.py").write_text("print('v3')\n")
    commit_all(repo, "again")
    dest = g.make_worktree(repo, git(repo, "rev-parse", "HEAD").strip(), tmp_path / "wt")
    try:
        with pytest.raises(GitError, match="applying the recorded patch"):
            g.apply_patch(dest, patch)
    finally:
        g.remove_worktree(repo, dest)


# --------------------------------------------------------------------------- DVC

STAGES = """\
stages:
  prepare:
    cmd: python prepare.py
    deps:
    - prepare.py
    - data/raw.csv
    params:
    - prepare.scale
    outs:
    - out/scaled.csv
    - out/stamp.txt
  evaluate:
    cmd: python evaluate.py
    deps:
    - evaluate.py
    - out/scaled.csv
    params:
    - evaluate.top
    metrics:
    - metrics.json:
        cache: false
"""

PREPARE = """\
import os, time, yaml
scale = yaml.safe_load(open("params.yaml"))["prepare"]["scale"]
os.makedirs("out", exist_ok=True)
rows = [int(x) * scale for x in open("data/raw.csv").read().split()]
open("out/scaled.csv", "w").write("\\n".join(map(str, rows)) + "\\n")
open("out/stamp.txt", "w").write(str(time.time_ns()) + "\\n")
with open(os.environ["RUN_COUNTER"], "a") as fh:
    fh.write("prepare\\n")
"""

EVALUATE = "\n".join(
    [
        "import json, yaml",
        'top = yaml.safe_load(open("params.yaml"))["evaluate"]["top"]',
        'rows = sorted((int(x) for x in open("out/scaled.csv").read().split()), reverse=True)',
        'json.dump({"sum": sum(rows), "top": {"mean": sum(rows[:top]) / top, "n": top}}, '
        'open("metrics.json", "w"))',
        "",
    ]
)


@pytest.mark.dvc
@pytest.mark.slow
def test_dvc_pipeline_capture_clone_pull_and_forced_rerun(tmp_path, monkeypatch):
    require_tool("dvc", "DVC on PATH (`pip install 'reprobox[dvc]'`)")
    counter = tmp_path / "counter.txt"
    monkeypatch.setenv("RUN_COUNTER", str(counter))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    remote = tmp_path / "dvc-remote"
    remote.mkdir()

    # -- a real project: dvc add'ed raw data, a 2-stage pipeline with params and metrics
    proj = new_repo(tmp_path / "proj")
    run(proj, "dvc", "init", "-q")
    (proj / "data").mkdir()
    (proj / "data" / "raw.csv").write_text("\n".join(str(i) for i in range(1, 101)) + "\n")
    run(proj, "dvc", "add", "-q", "data/raw.csv")
    (proj / "params.yaml").write_text("prepare:\n  scale: 3\nevaluate:\n  top: 10\n")
    (proj / "prepare.py").write_text(PREPARE)
    (proj / "evaluate.py").write_text(EVALUATE)
    (proj / "dvc.yaml").write_text(STAGES)
    run(proj, "dvc", "repro", "-q")
    assert counter.read_text() == "prepare\n"
    run(proj, "dvc", "remote", "add", "-q", "-d", "localstore", str(remote))
    run(proj, "dvc", "push", "-q")
    commit = commit_all(proj, "pipeline")

    # -- what capture records
    assert dvc.is_dvc_project(proj)
    info = dvc.dvc_info(proj)
    assert info.stages == ("prepare", "evaluate")
    assert info.remote == "localstore"
    assert info.metrics_files == ("metrics.json",)
    assert info.params == {"params.yaml": {"evaluate.top": 10, "prepare.scale": 3}}
    outs = {o.path: o for o in info.outputs}
    assert set(outs) == {"data/raw.csv", "out/scaled.csv", "out/stamp.txt", "metrics.json"}
    assert (
        outs["out/stamp.txt"].stage == "prepare"
        and outs["data/raw.csv"].stage == "data/raw.csv.dvc"
    )
    assert all(o.hash_name == "md5" for o in info.outputs)
    import hashlib

    assert info.lock_digest == hashlib.sha256((proj / "dvc.lock").read_bytes()).hexdigest()
    recorded = metrics.read_metrics(proj / "metrics.json")
    assert recorded == {"sum": 15150, "top.mean": 286.5, "top.n": 10}
    stamp_before = (proj / "out" / "stamp.txt").read_text()
    git_cap = g.git_info(proj)
    assert not git_cap.info.dirty  # dvc outputs are git-ignored, the store is not involved

    # -- another machine: a fresh clone, no DVC cache, the data only on the remote
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(proj), str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    shared = tmp_path / "shared-cache"
    wt1 = g.make_worktree(clone, commit, tmp_path / "runs" / "one")
    try:
        first = dvc.pull(wt1, cache_dir=shared)
        assert first.fetched == 3  # raw.csv, scaled.csv, stamp.txt from the remote
        assert (wt1 / "data" / "raw.csv").read_bytes() == (proj / "data" / "raw.csv").read_bytes()
        assert (wt1 / "out" / "stamp.txt").read_text() == stamp_before
        assert "cache" in (wt1 / ".dvc" / "config.local").read_text()
        assert (
            git(wt1, "status", "--porcelain") == ""
        )  # config.local is ignored by DVC's .gitignore

        # -- forced rerun: recomputes, never restores from the run cache
        argv = dvc.repro_forced(wt1, dict(os.environ))
        assert argv[-2:] == ["repro", "--force"]  # reprobox's own DVC: no `dvc` on PATH needed
        subprocess.run(argv, cwd=wt1, check=True, capture_output=True)
        assert counter.read_text() == "prepare\nprepare\n"
        assert (wt1 / "out" / "stamp.txt").read_text() != stamp_before
        assert metrics.read_metrics(wt1 / "metrics.json") == recorded
        after = {o.path: o for o in dvc.dvc_info(wt1).outputs}
        assert after["out/scaled.csv"].hash == outs["out/scaled.csv"].hash
        assert after["out/stamp.txt"].hash != outs["out/stamp.txt"].hash
    finally:
        g.remove_worktree(clone, tmp_path / "runs" / "one")

    # -- a second run downloads nothing: the remote is gone, the shared cache answers
    remote.rename(tmp_path / "remote-offline")
    wt2 = g.make_worktree(clone, commit, tmp_path / "runs" / "two")
    try:
        second = dvc.pull(wt2, cache_dir=shared)
        assert second.fetched == 0
        assert (wt2 / "out" / "scaled.csv").read_bytes() == (
            proj / "out" / "scaled.csv"
        ).read_bytes()
    finally:
        g.remove_worktree(clone, tmp_path / "runs" / "two")

    # -- without the remote and without a cache: a clear error that names the fix
    wt3 = g.make_worktree(clone, commit, tmp_path / "runs" / "three")
    try:
        with pytest.raises(DvcError) as err:
            dvc.pull(wt3, cache_dir=tmp_path / "empty-cache")
        assert "dvc push" in err.value.hint and "reachable" in err.value.hint
    finally:
        g.remove_worktree(clone, tmp_path / "runs" / "three")


@pytest.mark.parametrize("relative", [False, True])
def test_capture_of_a_repository_whose_remote_is_a_local_path(tmp_path, relative):
    """`/srv/git/x.git` or `../x.git` as origin: recorded as a file:// URL (capture used to exit
    2 with a hint about renaming files); the stored record reads back and validates."""
    from reprobox.pipeline import capture_experiment
    from reprobox.store import Store

    bare = tmp_path / "srv" / "x.git"
    bare.parent.mkdir()
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work = new_repo(tmp_path / "work")
    (work / "train.py").write_text("print('ok')\n")
    commit_all(work)
    git(work, "remote", "add", "origin", "../srv/x.git" if relative else str(bare))
    outcome = capture_experiment(
        work, command="python train.py", cwd=work, lock=False, python=sys.executable
    )
    stored = Store(work).get(outcome.id)
    assert stored.experiment.git.remote == f"file://{bare}"
    assert not [w for w in outcome.warnings if "remote" in w]
