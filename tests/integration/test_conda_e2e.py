"""Conda environments end to end, offline: a real local channel, real environments, the real CLI.

The channel (``file://``) is built in the test setup (tests/fixtures/conda/channel.py): a Python
interpreter package made from the CPython build running these tests, a native library package
(``libzlib``), a linux-64 extension package needing it (``zdemo``) and a noarch package. An
environment is created from it with py-rattler, a package is pip-installed into it from the host's
index (a mixed environment), a training script is captured with ``reprobox capture``, the
repository is pushed and cloned afresh, and in the clone ``reprobox run --backend conda`` recreates
the environment without solving and reruns the script, and ``reprobox verify`` compares it from
inside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git, require
from tests.saved_image import where_in_image
from tests.fixtures.conda.channel import Channel, build_channel, create_env, pip_install

pytestmark = [pytest.mark.slow]

CANARY = "tk-CONDA-CANARY-91c2"

TRAIN = """\
import json, zdemo, tinyutil
out = {"crc": zdemo.checksum(b"reprobox"), "double": tinyutil.double(21)}
try:
    import six
    out["six"] = six.__version__
except ImportError:
    pass
json.dump(out, open("metrics.json", "w"))
"""


def _reprobox_exe() -> str:
    here = Path(sys.executable).parent / "reprobox"
    return str(here) if here.exists() else (shutil.which("reprobox") or "reprobox")


def reprobox(
    cwd: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [_reprobox_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"reprobox {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Channel:
    base = Path(sys.base_prefix)
    mm = "%d.%d" % sys.version_info[:2]
    require(
        (base / "lib" / f"libpython{mm}.so.1.0").exists(),
        "a CPython build with a shared libpython (pyenv) to make the python conda package",
    )
    try:
        import conda_package_handling  # noqa: F401
        import rattler  # noqa: F401
    except ImportError:
        require(False, "py-rattler and conda-package-handling (pip install -e '.[test]')")
    return build_channel(tmp_path_factory.mktemp("conda") / "channel")


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user with their own HOME (a .condarc holding a token), caches and no active env."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".condarc").write_text(
        "channels:\n"
        f"  - https://conda.corp.example/t/{CANARY}/private\n"
        "  - conda-forge\n"
        f"channel_alias: https://conda.corp.example/t/{CANARY}\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "CONDARC")
    }
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    git_config = home / ".gitconfig"
    git_config.write_text(
        "[user]\n\tname = t\n\temail = t@example.com\n[init]\n\tdefaultBranch = main\n"
    )
    return env


def _project(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(TRAIN)
    (repo / ".gitignore").write_text("metrics.json\n")
    git(repo, "add", "train.py", ".gitignore")
    git(repo, "commit", "-q", "-m", "train")
    return repo


def _capture(repo: Path, prefix: Path, env: dict[str, str]) -> str:
    run_env = {
        **env,
        "CONDA_PREFIX": str(prefix),
        "PATH": f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    }
    subprocess.run([str(prefix / "bin" / "python"), "train.py"], cwd=repo, env=run_env, check=True)
    done = reprobox(
        repo,
        run_env,
        "capture",
        "--name",
        "conda-train",
        "--cmd",
        "python train.py",
        "--metrics",
        "metrics.json",
        "--json",
    )
    return json.loads(done.stdout)["id"]


def _store_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


def _clone(repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    return clone


@pytest.mark.network
def test_mixed_conda_env_capture_lock_rebuild_run_verify(
    channel: Channel, tmp_path: Path, user_env: dict[str, str]
) -> None:
    prefix = create_env(
        channel,
        tmp_path / "envs" / "train",
        ["python", "zdemo", "tinyutil"],
        tmp_path / "rattler-cache",
    )
    pip_install(prefix, "six==1.16.0")  # from the host's package index: INSTALLER=pip
    repo = _project(tmp_path, user_env)
    exp_id = _capture(repo, prefix, user_env)
    folder = repo / ".reprobox" / "experiments" / exp_id

    # capture: conda packages once, pip package once, with its true installer
    envj = json.loads((folder / "environment.json").read_text())
    conda_pkgs = {p["name"]: p for p in envj["conda"]["packages"]}
    assert set(conda_pkgs) == {"python", "libzlib", "zdemo", "tinyutil"}
    assert [p["name"] for p in envj["packages"]] == ["six"]
    assert envj["packages"][0]["installer"] == "pip"
    assert conda_pkgs["zdemo"]["build"] == "py311h0_0"
    assert conda_pkgs["zdemo"]["channel"] == channel.url
    assert conda_pkgs["tinyutil"]["requested_spec"] == "tinyutil"
    # the extension's libz.so.1 comes from the environment's libzlib, not from the OS
    assert conda_pkgs["libzlib"]["libraries"] == ["libz.so.1"]
    assert conda_pkgs["python"]["libraries"] == ["libpython%d.%d.so.1.0" % sys.version_info[:2]]
    assert not any("libz.so.1" in s["libraries"] for s in envj["system_packages"])

    # lock: conda-lock's unified file (conda + pip) and the explicit spec
    from conda_lock.lockfile import parse_conda_lock_file

    lock = parse_conda_lock_file(folder / "conda-lock.yml")
    managers = {(p.name, p.manager) for p in lock.package}
    assert ("zdemo", "conda") in managers and ("six", "pip") in managers
    assert all(p.hash.sha256 for p in lock.package)
    explicit = (folder / "conda-explicit.txt").read_text()
    assert "@EXPLICIT" in explicit and "zdemo-0.1-py311h0_0.conda#sha256:" in explicit
    assert not (folder / "Dockerfile").exists()
    # canary: the .condarc token is nowhere in what was written
    assert CANARY not in _store_text(repo / ".reprobox")

    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    clone = _clone(repo, tmp_path)
    shutil.rmtree(prefix)  # the original environment is gone: the rebuild needs only the record

    done = reprobox(clone, user_env, "run", exp_id, "--backend", "conda", "--json")
    record = json.loads(done.stdout)
    assert record["reproduced"] is True, done.stdout
    assert record["backend"] == "conda"

    done = reprobox(clone, user_env, "verify", exp_id, "--backend", "conda", "--json")
    report = json.loads(done.stdout)
    assert report["identical"] is True, report["differences"]
    assert report["backend"] == "conda" and report["packages_checked"] == 5
    assert (
        subprocess.run(
            ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True
        ).stdout
        == ""
    )

    # a prefix changed since it was prepared is not reused: it is rebuilt, whole again
    rebuilt = Path(user_env["XDG_CACHE_HOME"]) / "reprobox" / "conda-envs"
    prefix_dir = next(p for p in rebuilt.iterdir() if p.is_dir())
    next((prefix_dir / "conda-meta").glob("tinyutil-*.json")).unlink()
    done = reprobox(clone, user_env, "verify", exp_id, "--backend", "conda", "--json", check=False)
    assert done.returncode == 0, done.stderr
    assert "was changed since it was last prepared: rebuilding" in done.stderr
    assert json.loads(done.stdout)["identical"] is True
    assert len(list((prefix_dir / "conda-meta").glob("tinyutil-*.json"))) == 1
    # an unchanged one is reused as it is
    done = reprobox(clone, user_env, "verify", exp_id, "--backend", "conda", "--json")
    assert "reusing the conda environment" in done.stderr
    assert "rebuilding" not in done.stderr

    # verify really looks: a record removed where the fingerprint cannot see it (sealed again
    # after the change, as if it kept every size and time) is named by verify itself
    from reprobox.backends.conda import MARKER, MARKER_SCHEMA
    from reprobox.backends.venv import seal_tree

    next((prefix_dir / "conda-meta").glob("tinyutil-*.json")).unlink()
    seal_tree(prefix_dir, MARKER, MARKER_SCHEMA)
    done = reprobox(clone, user_env, "verify", exp_id, "--backend", "conda", "--json", check=False)
    assert done.returncode == 1, done.stderr
    assert "reusing the conda environment" in done.stderr
    messages = [d["message"] for d in json.loads(done.stdout)["differences"]]
    assert any("conda package tinyutil 1.0" in m and "missing" in m for m in messages)


@pytest.mark.network
def test_a_hostile_lock_is_refused_by_the_conda_backend_before_anything_is_fetched(
    channel: Channel, tmp_path: Path, user_env: dict[str, str]
) -> None:
    """The conda backend installed requirements.lock as it was, with the host's pip and its
    credentials: a sealed lock line naming a URL of the capture's choice was fetched (with the
    host's ~/.netrc) and its setup.py ran on the host. The lock is checked against
    environment.json first, as the venv and docker backends check it."""
    import http.server
    import threading

    from tests.hostile import reseal

    prefix = create_env(
        channel, tmp_path / "envs" / "train", ["python", "tinyutil"], tmp_path / "rattler-cache"
    )
    pip_install(prefix, "six==1.16.0")
    repo = _project(tmp_path, user_env)
    (repo / "train.py").write_text(
        "import json, six, tinyutil\n"
        "json.dump({'d': tinyutil.double(4)}, open('metrics.json', 'w'))\n"
    )
    git(repo, "commit", "-q", "-am", "mixed")
    exp_id = _capture(repo, prefix, user_env)
    folder = repo / ".reprobox" / "experiments" / exp_id

    asked: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        lock = folder / "requirements.lock"
        lock.write_text(
            lock.read_text()
            + f"evilpkg @ http://127.0.0.1:{port}/evilpkg-1.0.tar.gz --hash=sha256:{'a' * 64}\n"
        )
        bad_id = reseal(folder)
        for args in (["verify", bad_id, "--backend", "conda"], ["build", bad_id, "--dry-run"]):
            done = reprobox(repo, user_env, *args, check=False)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert "requirements.lock" in done.stderr and "evilpkg" in done.stderr
            assert "Traceback" not in done.stderr
        assert asked == []  # nothing was fetched from the capture's URL
        rebuilt = Path(user_env["XDG_CACHE_HOME"]) / "reprobox" / "conda-envs"
        assert not rebuilt.exists() or not [p for p in rebuilt.iterdir() if p.is_dir()]
    finally:
        server.shutdown()


def test_pure_conda_env_and_refusals(
    channel: Channel, tmp_path: Path, user_env: dict[str, str]
) -> None:
    prefix = create_env(
        channel, tmp_path / "envs" / "pure", ["python", "tinyutil"], tmp_path / "rattler-cache"
    )
    repo = _project(tmp_path, user_env)
    (repo / "train.py").write_text(
        "import json, tinyutil\njson.dump({'d': tinyutil.double(4)}, open('metrics.json', 'w'))\n"
    )
    git(repo, "commit", "-q", "-am", "pure")

    # a corrupt record stops the capture, names the package, writes nothing
    rec = next((prefix / "conda-meta").glob("tinyutil-*.json"))
    good = rec.read_text()
    rec.write_text(good[: len(good) // 2])
    run_env = {**user_env, "CONDA_PREFIX": str(prefix)}
    subprocess.run([str(prefix / "bin" / "python"), "train.py"], cwd=repo, env=run_env, check=True)
    done = reprobox(repo, run_env, "capture", "--cmd", "python train.py", check=False)
    assert done.returncode == 2
    assert "conda package tinyutil-1.0-pyhd8ed1ab_0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (repo / ".reprobox" / "experiments").exists() or not any(
        (repo / ".reprobox" / "experiments").iterdir()
    )
    rec.write_text(good)

    exp_id = _capture(repo, prefix, user_env)
    # --backend venv / docker cannot recreate conda packages: refused, naming the fix
    done = reprobox(repo, user_env, "verify", exp_id, "--backend", "venv", check=False)
    assert done.returncode == 2 and "--backend conda" in done.stderr
    done = reprobox(repo, user_env, "verify", exp_id, "--backend", "conda", "--json")
    assert json.loads(done.stdout)["identical"] is True

    # a package built locally (no URL): the capture records it, `reprobox lock` refuses it
    data = json.loads(rec.read_text())
    data.pop("url")
    data["channel"] = "<develop>"
    rec.write_text(json.dumps(data))
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# local build\n")
    git(repo, "commit", "-q", "-am", "local")
    done = reprobox(repo, run_env, "capture", "--cmd", "python train.py", "--json")
    out = json.loads(done.stdout)
    assert any("tinyutil 1.0" in w and "no download URL" in w for w in out["warnings"])
    folder = repo / ".reprobox" / "experiments" / out["id"]
    assert not (folder / "conda-lock.yml").exists()  # the capture's lock was refused whole
    assert not (folder / "requirements.lock").exists()
    done = reprobox(repo, user_env, "lock", out["id"], check=False)
    assert done.returncode == 2
    assert "conda package tinyutil 1.0 (pyhd8ed1ab_0) has no download URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["environment.json", "experiment.json"]


@pytest.mark.docker
@pytest.mark.network
def test_mixed_conda_env_rebuilt_in_an_image(
    channel: Channel, tmp_path: Path, user_env: dict[str, str]
) -> None:
    prefix = create_env(
        channel,
        tmp_path / "envs" / "img",
        ["python", "zdemo", "tinyutil"],
        tmp_path / "rattler-cache",
    )
    pip_install(prefix, "six==1.16.0")
    repo = _project(tmp_path, user_env)
    exp_id = _capture(repo, prefix, user_env)
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    clone = tmp_path / "conda-image-e2e-clone"  # the image tag is reprobox/<this name>:<id>
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    tag = f"reprobox/conda-image-e2e-clone:{exp_id}"
    try:
        done = reprobox(clone, user_env, "verify", exp_id, "--backend", "docker", "--json")
        report = json.loads(done.stdout)
        assert report["identical"] is True, report["differences"]
        assert report["backend"] == "docker" and report["packages_checked"] == 5
        assert "/opt/conda-env" in report["environment"]
        done = reprobox(clone, user_env, "run", exp_id, "--backend", "docker", "--json")
        record = json.loads(done.stdout)
        assert record["reproduced"] is True, done.stdout
        assert "(already built)" in record["environment"]
        assert where_in_image(tag, CANARY.encode(), tmp_path) == []
        assert (
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True
            ).stdout
            == ""
        )
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
