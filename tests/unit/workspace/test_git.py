"""Patch safety: the paths a patch names, read the way git reads them, and the refusal rules.

Patches here are produced by real git in a scratch repository, or written by hand to be hostile.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprobox.workspace import git as g
from reprobox.errors import ValidationError

from ...asserts import refuses


def sh(cwd: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True).stdout


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    sh(tmp_path, "init", "-q")
    sh(tmp_path, "config", "user.email", "t@example.com")
    sh(tmp_path, "config", "user.name", "t")
    return tmp_path


DIFF_ARGS = [
    "diff",
    "HEAD",
    "--binary",
    "--full-index",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
]


def test_paths_of_a_real_patch_with_odd_names_and_binary(repo):
    (repo / "sp ace.txt").write_text("a\n")
    (repo / "tab\tname.txt").write_text("x")
    (repo / "ünï.txt").write_text("u\n")
    (repo / "gone.txt").write_text("bye\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "init")
    (repo / "sp ace.txt").write_text("a\nb\n")
    (repo / "tab\tname.txt").write_text("xy")
    (repo / "ünï.txt").write_text("v\n")
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (repo / "gone.txt").unlink()
    sh(repo, "add", "-A")
    patch = sh(repo, *DIFF_ARGS)
    assert set(g.patch_paths(patch)) == {
        "sp ace.txt",
        "tab\tname.txt",
        "ünï.txt",
        "blob.bin",
        "gone.txt",
    }
    for p in g.patch_paths(patch):
        g.check_patch_path(p)


def test_hunk_content_that_looks_like_headers_is_not_a_path(repo):
    (repo / "notes.md").write_text("-- ../../etc/passwd\n++ /root/.ssh/x\nkeep\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "init")
    (repo / "notes.md").write_text(
        "keep\n++ /root/.ssh/y\ndiff --git a/.git/config b/.git/config\n"
    )
    patch = sh(repo, *DIFF_ARGS)
    assert b"--- ../../etc/passwd" in patch  # the removed line renders like a header
    assert b"+++ /root/.ssh/y" in patch
    assert list(g.patch_paths(patch)) == ["notes.md"] * 3


def test_rename_headers_are_read(repo):
    (repo / "old name.py").write_text("print(1)\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "init")
    sh(repo, "mv", "old name.py", "new name.py")
    patch = sh(repo, "diff", "HEAD", "-M", "--cached")
    assert {"old name.py", "new name.py"} <= set(g.patch_paths(patch))


HOSTILE = {
    "traditional diff climbing out": b"--- a/../../etc/cron.d/x\n+++ b/../../etc/cron.d/x\n"
    b"@@ -0,0 +1 @@\n+* * * * * root sh\n",
    "git hook": b"diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
    b"new file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+evil\n",
    "nested .git": b"diff --git a/sub/.GIT/config b/sub/.GIT/config\n--- a/sub/.GIT/config\n"
    b"+++ b/sub/.GIT/config\n@@ -1 +1 @@\n-x\n+y\n",
    "quoted climb": b'diff --git "a/..\\057x" "b/..\\057x"\n--- "a/..\\057x"\n+++ "b/..\\057x"\n'
    b"@@ -0,0 +1 @@\n+x\n",
    "absolute": b"--- /dev/null\n+++ b//etc/passwd\n@@ -0,0 +1 @@\n+x\n",
    "rename out": b"diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to ../y\n",
    "binary to hook": b"diff --git a/.git/index b/.git/index\nGIT binary patch\nliteral 2\n"
    b"JcmZQz1ONa700IC2\n\nliteral 0\nHcmV?d00001\n\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_patches_are_refused(name):
    with pytest.raises(ValidationError) as info:
        for p in g.patch_paths(HOSTILE[name]):
            g.check_patch_path(p)
    assert info.value.field == "git.patch"


@pytest.mark.parametrize(
    "path",
    [
        "a.txt",
        "dir/b.py",
        "...",
        "..x/y",
        "x..",
        ".github/workflows/ci.yml",
        ".gitignore",
        "data/.gitkeep",
    ],
)
def test_ordinary_paths_pass(path):
    g.check_patch_path(path)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/x", "absolute"),
        ("C:/x", "absolute"),
        ("a/../../b", "'..'"),
        ("..", "'..'"),
        (".git", "(.git)"),
        ("x/.git/y", "(.git)"),
        ("a\\..\\b", "'..'"),
    ],
)
def test_bad_paths_fail(path, reason):
    with refuses(ValidationError, field="git.patch", names=[repr(path), reason]):
        g.check_patch_path(path)


@pytest.mark.parametrize(
    "commit", ["", "HEAD", "main", "--upload-pack=x", "abc", "g" * 40, "a" * 41]
)
def test_commit_ids_are_validated(commit):
    with refuses(ValidationError, field="git.commit", names=repr(commit)):
        g.validate_commit(commit)


def test_commit_ids_accepted():
    assert g.validate_commit("a" * 40) == "a" * 40
    assert g.validate_commit("0123abc") == "0123abc"
    assert g.validate_commit("f" * 64) == "f" * 64


# --------------------------------------------------------------------------- local-path remotes


@pytest.mark.parametrize("relative", [False, True])
def test_a_local_path_remote_is_recorded_as_a_file_url(tmp_path, relative):
    from reprobox.model import grammar as validate

    bare = tmp_path / "srv" / "x.git"
    bare.mkdir(parents=True)
    sh(bare, "init", "-q", "--bare")
    work = tmp_path / "work"
    work.mkdir()
    sh(work, "init", "-q")
    sh(work, "config", "user.email", "t@example.com")
    sh(work, "config", "user.name", "t")
    (work / "a.txt").write_text("a\n")
    sh(work, "add", "a.txt")
    sh(work, "commit", "-q", "-m", "one")
    sh(work, "remote", "add", "origin", "../srv/x.git" if relative else str(bare))
    got = g.git_info(work)
    assert got.info.remote == f"file://{bare}"
    # what capture records passes the record's own URL check (capture used to exit 2 here)
    assert (
        validate.url("git.remote", got.info.remote, validate.REMOTE_SCHEMES, allow_scp=True)
        == got.info.remote
    )


@pytest.mark.parametrize(
    "raw", ["https://example.com/x.git", "git@github.com:org/x.git", "ssh://git@host/x.git"]
)
def test_urls_and_scp_forms_are_not_local_paths(raw, tmp_path):
    assert g.local_remote_url(raw, tmp_path) is None


def test_a_local_path_with_a_space_is_percent_encoded(tmp_path):
    assert g.local_remote_url("/srv/my repos/x.git", tmp_path) == "file:///srv/my%20repos/x.git"


def test_a_local_path_remote_with_a_control_character_is_dropped_with_a_warning(repo):
    (repo / "a.txt").write_text("a\n")
    sh(repo, "add", "a.txt")
    sh(repo, "commit", "-q", "-m", "one")
    sh(repo, "remote", "add", "origin", "/srv/x\x01.git")
    got = g.git_info(repo)
    assert got.info.remote is None
    assert any("'origin'" in w and "control character" in w for w in got.warnings)


# --------------------------------------------------------------------------- capture


def _committed(repo: Path) -> Path:
    (repo / "train.py").write_text("print(1)\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "init")
    return repo


@pytest.mark.parametrize("change", ["new link", "name with a newline", "name with ESC"])
def test_an_uncommitted_change_no_rerun_could_apply_is_refused_at_capture(repo, change):
    """The record of such a change was refused by every command that read it, and the hint
    there (re-capture) led back to the same record: the capture names the path and the fix."""
    from reprobox.errors import GitError

    _committed(repo)
    if change == "new link":
        (repo / "link.py").symlink_to("train.py")
        sh(repo, "add", "link.py")
        named = "symbolic link"
    else:
        odd = "a\nb.py" if change == "name with a newline" else "a\x1b[31mb.py"
        (repo / odd).write_text("x\n")
        sh(repo, "add", "--", odd)
        sh(repo, "commit", "-qm", "odd name")
        (repo / odd).write_text("y\n")
        named = "uncommitted change"
    with refuses(GitError, names=[named, "git diff HEAD"]) as info:
        g.git_info(repo)
    assert "commit that change" in (info.value.hint or "")


def test_capture_runs_no_fsmonitor_the_repository_names(repo, tmp_path):
    marker = tmp_path / "fsmonitor-ran"
    _committed(repo)
    sh(repo, "config", "core.fsmonitor", f"touch {marker}; false")
    (repo / "train.py").write_text("print(2)\n")
    (repo / "new.txt").write_text("untracked\n")
    got = g.git_info(repo)
    assert got.patch and b"print(2)" in got.patch
    assert any("new.txt" in w for w in got.warnings)
    assert not marker.exists()
