"""A stranger's checkout never reaches the host's files, credentials or privileges.

Every scenario is a real attack on the real tools: a repository whose committed files (``.dvc/``,
``dvc.yaml``, ``.gitmodules``, symbolic links) were written by an attacker, an experiment record
sealed for it (its id matches, as anyone holding the folder can do), and ``reprobox run`` with
real git, real DVC (a local folder remote) and the real Docker daemon. Each test first shows the
attack works against the bare tool (so the test can fail), then that reprobox refuses it, naming
the remote, file or path, and that the canary is nowhere: not in the checkout, the store, the
DVC cache, the report or the output.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from reprobox.model import DvcInfo, Environment, Experiment, GitInfo, Interpreter
from reprobox.store import Store

from ..asserts import refuses
from ..conftest import git

PYTHON_IMAGE = "python:3.11.7-slim-bookworm"
ENV = Environment(interpreter=Interpreter("cpython", "3.11.7"))
CANARY = "canary-7f3e9c1d-never-leaves-the-host"


# --------------------------------------------------------------------------- helpers


def seal_hostile(repo: Path, **fields: Any) -> str:
    """Record an experiment of ``repo``'s HEAD with ``fields``, sealed so its id matches.

    What an attacker does after editing a capture by hand: the record is internally consistent,
    only its content is hostile.
    """
    base: dict[str, Any] = dict(
        name="hostile",
        command="true",
        cwd=".",
        git=GitInfo(commit=git(repo, "rev-parse", "HEAD").strip()),
        environment_digest=ENV.digest,
        created="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        env={},
    )
    base.update(fields)
    exp = Experiment(**base).with_id()
    return Store(repo).save(exp, ENV).id


def cli(cwd: Path, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", message)


def dvc(cwd: Path, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("dvc") or "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=600,
    )


def canary_anywhere(*roots: Path) -> list[str]:
    """Files under ``roots`` (links not followed) whose bytes hold the canary."""
    hits = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink():
                    continue
                try:
                    if CANARY.encode() in path.read_bytes():
                        hits.append(str(path))
                except OSError:
                    pass
    return hits


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("project\n")
    commit_all(path, "init")
    return path


@pytest.fixture
def isolated_dvc_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DVC's global and system configuration in empty folders of the test's own."""
    glob, system = tmp_path / "dvc-global", tmp_path / "dvc-system"
    glob.mkdir()
    system.mkdir()
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(glob))
    monkeypatch.setenv("DVC_SYSTEM_CONFIG_DIR", str(system))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    return glob


@pytest.fixture
def host_secret_remote(tmp_path: Path, isolated_dvc_config: Path) -> tuple[Path, Path]:
    """A DVC remote folder on the host that holds a secret (pushed there by another project),
    and that project's ``.dvc`` file for it (its hash is all an attacker needs)."""
    remote = tmp_path / "host-private-remote"
    victim = new_repo(tmp_path / "victim")
    assert dvc(victim, "init", "-q").returncode == 0
    (victim / "secret.txt").write_text(f"token={CANARY}\n")
    assert dvc(victim, "add", "-q", "secret.txt").returncode == 0
    assert dvc(victim, "remote", "add", "-q", "-d", "private", str(remote)).returncode == 0
    assert dvc(victim, "push", "-q").returncode == 0
    return remote, victim / "secret.txt.dvc"


def attacker_dvc_repo(tmp_path: Path, remote: Path, dvc_file: Path) -> Path:
    """The pull request: its .dvc/config names the host's private folder as the remote, and a
    .dvc file asks for the secret's hash as ``loot.txt``."""
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    assert dvc(repo, "remote", "add", "-q", "-d", "attacker", str(remote)).returncode == 0
    (repo / "loot.txt.dvc").write_text(dvc_file.read_text().replace("secret.txt", "loot.txt"))
    commit_all(repo, "data")
    return repo


# --------------------------------------------------------------------------- DVC remotes


@pytest.mark.dvc
def test_checkout_remote_pointing_at_a_host_folder_is_refused(tmp_path: Path, host_secret_remote):
    remote, dvc_file = host_secret_remote
    repo = attacker_dvc_repo(tmp_path, remote, dvc_file)
    exp = seal_hostile(repo, dvc=DvcInfo(remote="attacker"), command="cat loot.txt")

    # The attack is real: the bare tool copies the host's secret into the clone.
    clone = tmp_path / "bare-clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert dvc(clone, "pull").returncode == 0
    assert CANARY in (clone / "loot.txt").read_text()
    shutil.rmtree(clone)

    done = cli(repo, "run", exp, "--backend", "venv", "--keep")
    assert done.returncode == 2, done.stderr
    assert "'attacker'" in done.stderr and ".dvc/config" in done.stderr
    assert str(remote) in done.stderr and "--dvc-remote" in done.stderr
    assert CANARY not in done.stdout + done.stderr
    assert canary_anywhere(repo / ".reprobox") == []
    kept = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"reprobox-run-{exp}-*")]
    for scratch in kept:  # --keep leaves the refused checkout to look at: no loot in it
        assert not (scratch / "checkout" / "loot.txt").exists()
        assert canary_anywhere(scratch) == []
        git(repo, "worktree", "remove", "--force", "--force", str(scratch / "checkout"))
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.dvc
def test_a_remote_the_user_trusts_is_pulled(
    tmp_path: Path, host_secret_remote, isolated_dvc_config: Path
):
    """The same remote, trusted by the user (global DVC config, or --dvc-remote): pulled."""
    from reprobox.workspace import git as g
    from reprobox.run import pull_data

    remote, dvc_file = host_secret_remote
    repo = attacker_dvc_repo(tmp_path, remote, dvc_file)
    store = Store(repo)
    commit = git(repo, "rev-parse", "HEAD").strip()

    wt = g.make_worktree(repo, commit, tmp_path / "wt1")
    try:
        detail = pull_data(store, wt, dvc_remote=str(remote))
        assert "--dvc-remote" in detail and "1 file(s) downloaded" in detail
        assert CANARY in (wt / "loot.txt").read_text()
        # no credential file stays where the container can read it
        assert (wt / ".dvc" / "config.local").read_text().strip().startswith("[cache]")
    finally:
        g.remove_worktree(repo, wt)

    (isolated_dvc_config / "config").write_text(f"['remote \"mine\"']\n    url = {remote}/\n")
    wt = g.make_worktree(repo, commit, tmp_path / "wt2")
    try:
        detail = pull_data(store, wt)
        assert "'mine'" in detail
        assert (wt / ".dvc" / "config").read_text() == "[core]\n    remote = mine\n"
    finally:
        g.remove_worktree(repo, wt)


@pytest.mark.dvc
def test_committed_config_local_symlink_is_refused(tmp_path: Path, isolated_dvc_config: Path):
    secrets = tmp_path / "home" / ".aws"
    secrets.mkdir(parents=True)
    (secrets / "credentials").write_text(
        f"['remote \"attacker\"']\n    url = {tmp_path / 'drop'}\n# {CANARY}\n"
    )
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    os.symlink(secrets / "credentials", repo / ".dvc" / "config.local")
    commit_all(repo, "config.local as a link")
    assert git(repo, "ls-files", ".dvc/config.local").strip() == ".dvc/config.local"
    exp = seal_hostile(repo, dvc=DvcInfo(), command="true")

    done = cli(repo, "run", exp, "--backend", "venv")
    assert done.returncode == 2, done.stderr
    assert ".dvc/config.local" in done.stderr and "symbolic link" in done.stderr
    assert CANARY not in done.stdout + done.stderr
    assert not (tmp_path / "drop").exists()
    assert canary_anywhere(repo / ".reprobox") == []


@pytest.mark.dvc
def test_a_committed_config_local_is_never_used(tmp_path: Path, host_secret_remote):
    """A regular ``.dvc/config.local`` committed by force names the host folder: ignored, the
    checkout's DVC configuration is reprobox's own."""
    from reprobox.workspace import git as g
    from reprobox.errors import DvcError
    from reprobox.run import pull_data

    remote, dvc_file = host_secret_remote
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / ".dvc" / "config.local").write_text(
        f"[core]\n    remote = sneaky\n['remote \"sneaky\"']\n    url = {remote}\n"
    )
    (repo / "loot.txt.dvc").write_text(dvc_file.read_text().replace("secret.txt", "loot.txt"))
    commit_all(repo, "config.local committed")
    assert git(repo, "ls-files", ".dvc/config.local").strip() == ".dvc/config.local"
    empty = tmp_path / "trusted-empty-remote"
    empty.mkdir()
    wt = g.make_worktree(repo, git(repo, "rev-parse", "HEAD").strip(), tmp_path / "wt")
    try:
        # The trusted remote does not have it: nothing pulled, and the fix says where to push.
        with refuses(DvcError, names=["pull", "loot.txt", "dvc push"]):
            pull_data(Store(repo), wt, dvc_remote=str(empty))
        assert not (wt / "loot.txt").exists()
        assert "sneaky" not in (wt / ".dvc" / "config.local").read_text()
        assert canary_anywhere(wt, repo / ".reprobox") == []
    finally:
        g.remove_worktree(repo, wt)


VARS_ATTACKS = [
    (
        "vars absolute",
        "vars:\n  - {secret}\nstages:\n  leak:\n    cmd: echo ${{token}} > out.txt\n"
        "    outs:\n      - out.txt\n",
        "{secret}",
        "dvc.yaml",
    ),
    (
        "vars climbing out",
        "vars:\n  - ../../../../../../..{secret}:token\nstages:\n  leak:\n"
        "    cmd: echo ${{token}} > out.txt\n",
        "../../../../../../..{secret}",
        "dvc.yaml",
    ),
    (
        "dep outside",
        "stages:\n  leak:\n    cmd: cat /dev/null\n    deps:\n      - {secret}\n",
        "{secret}",
        "dvc.yaml",
    ),
    (
        "out outside",
        "stages:\n  leak:\n    cmd: cat /dev/null\n    outs:\n      - ../../escaped.txt\n",
        "../../escaped.txt",
        "dvc.yaml",
    ),
    (
        "params file outside",
        "stages:\n  leak:\n    cmd: cat /dev/null\n    params:\n"
        "      - {secret}:\n        - token\n",
        "{secret}",
        "dvc.yaml",
    ),
    (
        "stage vars in a subfolder",
        "stages:\n  leak:\n    wdir: sub\n    vars:\n"
        "      - ../../x.yaml\n    cmd: echo ${{token}}\n",
        "../../x.yaml",
        "dvc.yaml",
    ),
    (
        "dep is a URL",
        "stages:\n  leak:\n    cmd: cat /dev/null\n    deps:\n"
        "      - s3://someone-elses-bucket/data.csv\n",
        "s3://someone-elses-bucket/data.csv",
        "dvc.yaml",
    ),
]


@pytest.mark.dvc
@pytest.mark.parametrize(
    "label,dvc_yaml,named,file", VARS_ATTACKS, ids=[a[0] for a in VARS_ATTACKS]
)
def test_dvc_paths_outside_the_checkout_are_refused(
    tmp_path: Path, isolated_dvc_config: Path, label: str, dvc_yaml: str, named: str, file: str
):
    secret = tmp_path / "host-secret.yaml"
    secret.write_text(f"token: {CANARY}\n")
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / "sub").mkdir()
    (repo / "sub" / "keep.txt").write_text("x\n")
    (repo / "dvc.yaml").write_text(dvc_yaml.format(secret=secret))
    commit_all(repo, label)
    exp = seal_hostile(repo, command_kind="dvc", command="dvc repro", dvc=DvcInfo(stages=("leak",)))

    done = cli(repo, "run", exp, "--backend", "venv", "--dvc-remote", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    assert named.format(secret=secret) in done.stderr and f"refusing {file}" in done.stderr
    assert CANARY not in done.stdout + done.stderr
    assert canary_anywhere(repo / ".reprobox") == []
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.dvc
def test_the_bare_tool_reads_absolute_vars(tmp_path: Path, isolated_dvc_config: Path):
    """The attack of the first case works against DVC alone: the secret lands in the output."""
    secret = tmp_path / "host-secret.yaml"
    secret.write_text(f"token: {CANARY}\n")
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / "dvc.yaml").write_text(VARS_ATTACKS[0][1].format(secret=secret))
    assert dvc(repo, "repro", "-q").returncode == 0
    assert CANARY in (repo / "out.txt").read_text()


TEMPLATED = (
    "stages:\n  s:\n    cmd: echo hi\n    deps:\n      - params.yaml\n    outs:\n"
    "      - ${victim}\n"
)


@pytest.mark.dvc
def test_a_templated_output_resolving_to_a_host_file_is_refused(
    tmp_path: Path, isolated_dvc_config: Path
):
    """``outs: [${victim}]`` with ``victim`` an absolute path in params.yaml: DVC removes a stage's
    outputs before running it, so the bare tool deletes the host file."""
    victim = tmp_path / "host" / "authorized_keys"
    victim.parent.mkdir()

    def project(where: Path) -> Path:
        repo = new_repo(where)
        assert dvc(repo, "init", "-q").returncode == 0
        (repo / "params.yaml").write_text(f"victim: {victim}\n")
        (repo / "dvc.yaml").write_text(TEMPLATED)
        commit_all(repo, "templated")
        return repo

    victim.write_text(CANARY)
    bare = project(tmp_path / "bare")
    dvc(bare, "repro")
    assert not victim.exists()  # the attack is real

    victim.write_text(CANARY)
    repo = project(tmp_path / "pr")
    exp = seal_hostile(repo, command_kind="dvc", command="dvc repro", dvc=DvcInfo(stages=("s",)))
    done = cli(repo, "run", exp, "--backend", "venv", "--dvc-remote", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    assert f"the out (resolved) '{victim}'" in done.stderr and "refusing dvc.yaml" in done.stderr
    assert victim.read_text() == CANARY


@pytest.mark.dvc
def test_an_import_from_another_repository_is_refused(tmp_path: Path, isolated_dvc_config: Path):
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / "data.dvc").write_text(
        "deps:\n- path: data\n  repo:\n    url: https://git.example.com/private/repo.git\n"
        "    rev_lock: " + "a" * 40 + "\nouts:\n- path: data\n  md5: " + "b" * 32 + ".dir\n"
    )
    commit_all(repo, "import")
    exp = seal_hostile(repo, dvc=DvcInfo(), command="true")
    done = cli(repo, "run", exp, "--backend", "venv", "--dvc-remote", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    assert "refusing data.dvc" in done.stderr and "imported from another repository" in (
        done.stderr
    )


# ------------------------------------------------------------------- writes into the checkout


@pytest.mark.parametrize("kind", ["symlink", "prefilled"])
def test_a_committed_run_folder_is_refused(tmp_path: Path, kind: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = new_repo(tmp_path / "pr")
    if kind == "symlink":
        os.symlink(outside, repo / ".reprobox-run")
    else:
        (repo / ".reprobox-run").mkdir()
        (repo / ".reprobox-run" / "metrics.json").write_text('{"acc": 1.0}')
    commit_all(repo, "run folder")
    exp = seal_hostile(repo, command="true")
    done = cli(repo, "run", exp, "--backend", "venv")
    assert done.returncode == 2, done.stderr
    assert ".reprobox-run" in done.stderr and "refusing the checkout" in done.stderr
    assert list(outside.iterdir()) == []


def test_a_committed_link_out_of_the_checkout_is_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text(CANARY)
    repo = new_repo(tmp_path / "pr")
    os.symlink(outside / "id_rsa", repo / "metrics.json")
    os.symlink(outside, repo / "results")
    commit_all(repo, "links")
    exp = seal_hostile(repo, command="true", metrics={"metrics.json": {"acc": 1.0}})
    done = cli(repo, "run", exp, "--backend", "venv")
    assert done.returncode == 2, done.stderr
    assert "metrics.json -> " in done.stderr and "results -> " in done.stderr
    assert CANARY not in done.stdout + done.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["id_rsa"]
    assert canary_anywhere(repo / ".reprobox") == []


# --------------------------------------------------------------------------- submodules


class _AuthServer(http.server.BaseHTTPRequestHandler):
    """A git host on 127.0.0.1 that asks for credentials and records what it was sent."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(
            {"path": self.path, "authorization": self.headers.get("Authorization", "")}
        )
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="private"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[str]:
    _AuthServer.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def credential_canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose git configuration has a credential helper that records each call."""
    home = tmp_path / "home"
    home.mkdir()
    called = tmp_path / "helper-called"
    helper = tmp_path / "helper.sh"
    helper.write_text(
        f'#!/bin/sh\necho "$@" >> {called}\necho username=ci\necho password={CANARY}\n'
    )
    helper.chmod(0o755)
    (home / ".gitconfig").write_text(
        f'[credential]\n    helper = {helper}\n[protocol "file"]\n    allow = always\n'
        "[user]\n    name = t\n    email = t@example.com\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    return called


def _with_submodule(repo: Path, url: str, commit: str) -> None:
    (repo / ".gitmodules").write_text(f'[submodule "lib"]\n\tpath = lib\n\turl = {url}\n')
    git(repo, "add", ".gitmodules")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{commit},lib")
    git(repo, "commit", "-q", "-m", "submodule")


def test_submodule_fetch_never_calls_the_credential_helper(
    tmp_path: Path, auth_server: str, credential_canary: Path
):
    from reprobox.workspace import git as g
    from reprobox.errors import GitError

    url = f"{auth_server}/private/lib.git"
    # The attack is real: a bare git clone hands the helper's password to the server.
    bare = subprocess.run(
        ["git", "clone", "-q", url, str(tmp_path / "bare")],
        capture_output=True,
        text=True,
        env=dict(os.environ, GIT_TERMINAL_PROMPT="0"),
    )
    assert bare.returncode != 0 and credential_canary.exists()
    assert any(s["authorization"] for s in _AuthServer.seen)
    credential_canary.unlink()
    _AuthServer.seen.clear()

    repo = new_repo(tmp_path / "pr")
    git(repo, "config", "credential.helper", str(tmp_path / "helper.sh"))  # repo-local too
    _with_submodule(repo, url, "c" * 40)
    exp_commit = git(repo, "rev-parse", "HEAD").strip()
    with pytest.raises(GitError) as err:
        g.make_worktree(repo, exp_commit, tmp_path / "checkout")
    g.remove_worktree(repo, tmp_path / "checkout")
    assert "submodule" in err.value.message and "without your credentials" in err.value.message
    assert not credential_canary.exists()
    assert _AuthServer.seen, "git never reached the server"
    assert all(s["authorization"] == "" for s in _AuthServer.seen)
    assert CANARY not in str(err.value)


def test_submodule_from_a_host_path_is_not_cloned(tmp_path: Path, credential_canary: Path):
    from reprobox.workspace import git as g
    from reprobox.errors import GitError

    private = new_repo(tmp_path / "host-private")
    (private / "key.pem").write_text(CANARY)
    commit_all(private, "secret")
    head = git(private, "rev-parse", "HEAD").strip()
    repo = new_repo(tmp_path / "pr")
    _with_submodule(repo, str(private), head)
    commit = git(repo, "rev-parse", "HEAD").strip()

    # With the permissive configuration of this home, bare git copies the host repository in.
    bare = tmp_path / "bare"
    git(tmp_path, "clone", "-q", str(repo), str(bare))
    git(bare, "submodule", "update", "--init")
    assert CANARY in (bare / "lib" / "key.pem").read_text()

    dest = tmp_path / "checkout"
    try:
        with pytest.raises(GitError) as err:
            g.make_worktree(repo, commit, dest)
        assert "submodule" in err.value.message
        assert canary_anywhere(dest) == []
    finally:
        g.remove_worktree(repo, dest)


# --------------------------------------------------------------------------- the container


@pytest.fixture(scope="module")
def python_image(docker_daemon: None) -> str:
    from reprobox.base import build_base

    build_base("3.11.7", "bookworm")
    return PYTHON_IMAGE


INSPECT_SH = (
    "id -u; id -g; grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status; "
    "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; "
    "echo written > out.txt; mkdir -p made; "
    "(echo 'gitdir: evil' > .git) 2>/dev/null; (echo '[core]' >> .dvc/config) 2>/dev/null; "
    "(rm -f .git; mv .dvc moved) 2>/dev/null; true"
)


@pytest.mark.docker
def test_rerun_container_is_unprivileged_and_confined(
    tmp_path: Path, python_image: str, monkeypatch: pytest.MonkeyPatch
):
    import docker.models.containers as containers

    from reprobox.backends import ContainerLimits, Prepared
    from reprobox.backends.docker import DockerBackend
    from reprobox.engine import get_engine

    seen: list[dict] = []
    original = containers.ContainerCollection.run

    def spy(self: Any, image: str, command: Any = None, **kw: Any) -> Any:
        container = original(self, image, command, **kw)
        container.reload()
        seen.append(container.attrs)
        return container

    monkeypatch.setattr(containers.ContainerCollection, "run", spy)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "committed.txt").write_text("x\n")
    (checkout / ".git").write_text("gitdir: /srv/repo/.git/worktrees/checkout\n")
    (checkout / ".dvc").mkdir()
    (checkout / ".dvc" / "config").write_text("")
    backend = DockerBackend(get_engine(), ContainerLimits(pids_limit=128, memory="256m"))
    prepared = Prepared("docker", python_image, "image", True, "python")
    done = backend.execute(
        prepared, ["/bin/sh", "-c", INSPECT_SH], checkout=checkout, env={}, capture=True, gpus=True
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.split()
    expected_uid = 65534 if os.getuid() == 0 else os.getuid()
    assert int(lines[0]) == expected_uid and int(lines[0]) != 0 and int(lines[1]) != 0
    status = dict(line.split(":\t") for line in done.stdout.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert "128" in done.stdout.splitlines()
    host = seen[0]["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 128 and host["Memory"] == 256 * 1024 * 1024
    assert not host.get("DeviceRequests")  # gpus=True without --gpus: still no GPU
    assert seen[0]["Config"]["User"] == f"{expected_uid}:{lines[1]}"
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in seen[0]["Mounts"]}
    base = checkout.resolve()
    assert mounts == {
        "/workspace": (str(base), True),
        "/workspace/.git": (str(base / ".git"), False),
        "/workspace/.dvc": (str(base / ".dvc"), False),
    }
    # git's pointer and DVC's configuration came out as they went in
    assert (checkout / ".git").read_text() == "gitdir: /srv/repo/.git/worktrees/checkout\n"
    assert (checkout / ".dvc" / "config").read_text() == ""
    assert not (checkout / "moved").exists()
    # The command could write into the checkout, and what it wrote is the caller's again.
    assert (checkout / "out.txt").read_text() == "written\n"
    for path in (checkout, checkout / "out.txt", checkout / "made", checkout / "committed.txt"):
        assert path.stat().st_uid == os.getuid()


@pytest.mark.docker
def test_default_pids_limit_and_no_memory_limit(tmp_path: Path, python_image: str):
    from reprobox.backends import Prepared
    from reprobox.backends.docker import DockerBackend
    from reprobox.engine import get_engine

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    done = DockerBackend(get_engine()).execute(
        Prepared("docker", python_image, "image", True, "python"),
        [
            "/bin/sh",
            "-c",
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
        ],
        checkout=checkout,
        env={},
        capture=True,
    )
    assert done.stdout.split() == ["4096"]


@pytest.mark.docker
def test_a_link_the_command_makes_out_of_the_checkout_is_refused(tmp_path: Path, python_image: str):
    from reprobox.backends import Prepared
    from reprobox.backends.docker import DockerBackend
    from reprobox.engine import get_engine
    from reprobox.errors import UsageError

    secret = tmp_path / "shadow"
    secret.write_text(CANARY)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    with pytest.raises(UsageError) as err:
        DockerBackend(get_engine()).execute(
            Prepared("docker", python_image, "image", True, "python"),
            ["/bin/sh", "-c", f"ln -s {secret} metrics.json"],
            checkout=checkout,
            env={},
            capture=True,
        )
    assert f"metrics.json -> {secret}" in err.value.message
    assert CANARY not in str(err.value)


@pytest.mark.docker
@pytest.mark.dvc
def test_a_stage_that_links_its_output_to_a_host_file_is_stopped(
    tmp_path: Path, python_image: str, isolated_dvc_config: Path, monkeypatch: pytest.MonkeyPatch
):
    """The stage runs in the container and leaves ``model.pkl -> <host secret>``: the host's
    DVC must not hash or cache the secret through it."""
    from reprobox import backends as backends_mod
    from reprobox.backends import Prepared
    from reprobox.backends.docker import DockerBackend
    from reprobox.engine import get_engine
    from reprobox.errors import UsageError
    from reprobox.run import run_experiment

    secret = tmp_path / "host" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text(CANARY)
    repo = new_repo(tmp_path / "pr")
    assert dvc(repo, "init", "-q").returncode == 0
    remote = tmp_path / "remote"
    stage = "stages:\n  train:\n    cmd: {cmd}\n    outs:\n      - model.pkl\n"
    (repo / "dvc.yaml").write_text(stage.format(cmd="echo model > model.pkl"))
    assert dvc(repo, "repro", "-q").returncode == 0
    assert dvc(repo, "remote", "add", "-q", "-d", "storage", str(remote)).returncode == 0
    assert dvc(repo, "push", "-q").returncode == 0
    git(repo, "add", "-A")  # model.pkl is DVC's (git-ignored)
    git(repo, "commit", "-q", "-m", "pipeline")
    (repo / "dvc.yaml").write_text(stage.format(cmd=f"ln -s {secret} model.pkl"))
    git(repo, "commit", "-q", "-am", "the hostile stage")

    # The attack is real: run by the host's DVC alone, the secret goes into the DVC cache.
    bare = tmp_path / "bare"
    git(tmp_path, "clone", "-q", str(repo), str(bare))
    bare_run = dvc(bare, "repro")
    assert bare_run.returncode == 0, bare_run.stdout + bare_run.stderr
    assert canary_anywhere(bare / ".dvc" / "cache")

    class ImageBackend(DockerBackend):
        def prepare(self, store, stored, checkout, *, network=None, progress=None):
            return Prepared("docker", python_image, f"image {python_image}", True, "python")

    monkeypatch.setattr(
        backends_mod,
        "choose_backend",
        lambda name, engine=None, limits=None: (ImageBackend(get_engine()), "test image"),
    )
    exp = seal_hostile(
        repo, command_kind="dvc", command="dvc repro", dvc=DvcInfo(stages=("train",))
    )
    store = Store(repo)
    with pytest.raises(UsageError) as err:
        run_experiment(store, exp, dvc_remote=str(remote))
    assert f"model.pkl -> {secret}" in err.value.message
    assert canary_anywhere(repo / ".reprobox") == []  # not in the shared DVC cache, no report
    assert secret.read_text() == CANARY and not secret.is_symlink()


@pytest.mark.docker
def test_the_run_repository_is_read_only_in_the_container(tmp_path: Path, python_image: str):
    """git in the rerun: /workspace/.git names the repository of the recorded commit, mounted
    read-only; the command can rewrite neither, and the worktree's own .git file is untouched."""
    from reprobox.backends import Prepared
    from reprobox.backends.docker import CONTAINER_GIT_DIR, DockerBackend, run_git_folder
    from reprobox.engine import get_engine
    from reprobox.workspace import git as gitmod

    repo = new_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a\n")
    commit_all(repo, "one")
    recorded = git(repo, "rev-parse", "HEAD").strip()
    checkout = tmp_path / "scratch" / "checkout"
    gitmod.make_worktree(repo, recorded, checkout)
    pointer = (checkout / ".git").read_text()
    made, _dotgit = gitmod.make_run_repository(repo, recorded, run_git_folder(checkout))
    head_before = (made / "HEAD").read_text()
    attack = (
        "cat .git; echo; cat " + CONTAINER_GIT_DIR + "/HEAD; "
        "(echo 'gitdir: /tmp/evil' > .git) 2>/dev/null && echo WROTE-GITFILE; "
        "(echo 0000 > " + CONTAINER_GIT_DIR + "/HEAD) 2>/dev/null && echo WROTE-HEAD; "
        "(mkdir " + CONTAINER_GIT_DIR + "/hooks) 2>/dev/null && echo WROTE-HOOKS; true"
    )
    done = DockerBackend(get_engine()).execute(
        Prepared("docker", python_image, "image", True, "python"),
        ["/bin/sh", "-c", attack],
        checkout=checkout,
        env={},
        capture=True,
    )
    assert done.returncode == 0, done.stdout
    assert f"gitdir: {CONTAINER_GIT_DIR}" in done.stdout and recorded in done.stdout
    assert "WROTE" not in done.stdout
    assert (checkout / ".git").read_text() == pointer  # the host's worktree pointer
    assert (made / "HEAD").read_text() == head_before and not (made / "hooks").exists()
    gitmod.remove_worktree(repo, checkout)
