"""A first capture's probe started before the CLI loads: adopted only when it is exactly the
probe the capture computes, stopped otherwise. Real interpreters, real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox import layout
from reprobox.capture import early
from reprobox.capture import python as py
from reprobox.capture.interp import answer_file, probe_cache_file

from ...factories import new_repo


@pytest.fixture
def repo(tmp_path, monkeypatch):
    path = new_repo(tmp_path / "repo", {"train.py": "print(1)\n"})
    monkeypatch.chdir(path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    yield path
    early.discard()


@pytest.fixture
def probe_runs(monkeypatch):
    """The probes run for real (not adopted), by interpreter, in order."""
    calls: list[str] = []
    real_run = py.proc.run

    def counting(argv, **kw):
        if str(py.PROBE) in [str(a) for a in argv]:
            calls.append(str(argv[0]))
        return real_run(argv, **kw)

    monkeypatch.setattr(py.proc, "run", counting)
    return calls


def _cache_dir(root: Path) -> Path:
    return layout.local_dir(root, "cache") / "probe"


@pytest.mark.parametrize(
    "args,value",
    [
        (["--no-lock", "--python", "/x/bin/python", "--cmd", "python t.py"], "/x/bin/python"),
        (["--python=/y/python"], "/y/python"),
        (["--cmd", "python --python z.py"], None),  # inside another option's value
        ([], None),
        (["--python"], False),  # ends early: click will refuse it
        (["--python", "/x", "--help"], False),
        (["-h"], False),
    ],
)
def test_the_python_option_is_read_from_the_command_line(args, value):
    assert early.python_option(args) == value


def test_the_plan_is_the_probe_the_capture_runs(repo):
    argv, env = early.plan(["--python", sys.executable], dict(os.environ), repo)
    cache_file = probe_cache_file(_cache_dir(repo), Path(sys.executable))
    assert argv == py.probe_command(Path(sys.executable), cache_file, os.environ, py.PROBE)
    assert "PYTHONPATH" not in env and env.get("PATH") == os.environ.get("PATH")
    # once the answer is in the user's cache the capture runs no probe: nothing to start
    answer = answer_file(cache_file)
    answer.parent.mkdir(parents=True)
    answer.write_text("{}")
    assert early.plan(["--python", sys.executable], dict(os.environ), repo) is None
    assert early.plan(["--help"], dict(os.environ), repo) is None


def test_the_started_probe_is_adopted_and_not_run_again(repo, probe_runs):
    early.begin(["--no-lock", "--python", sys.executable, "--cmd", "python train.py"])
    started = early._started
    assert started is not None
    raw = py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=dict(os.environ))
    assert probe_runs == []  # the probe ran once: the one started
    assert early._started is None and started.child.returncode == 0
    assert raw["probe_version"] == py.PROBE_VERSION and raw["distributions"]
    # its answer is kept as of the time it started: a change after that makes it stale
    kept = json.loads(
        answer_file(probe_cache_file(_cache_dir(repo), Path(sys.executable))).read_text()
    )
    assert kept["probe_started_ns"] == started.started_ns
    # and it is the answer a probe run now gives
    again = py.run_probe(Path(sys.executable), cache_dir=None, environ=dict(os.environ))
    assert [d["name"] for d in raw["distributions"]] == [d["name"] for d in again["distributions"]]


def test_another_probe_is_not_adopted_and_the_started_one_is_stopped(repo, tmp_path, probe_runs):
    early.begin(["--python", sys.executable])
    started = early._started
    assert started is not None
    other = tmp_path / "python-link"
    other.symlink_to(sys.executable)  # the same interpreter, named otherwise: another command
    raw = py.run_probe(other, cache_dir=_cache_dir(repo), environ=dict(os.environ))
    assert raw["distributions"]
    assert probe_runs == [str(other)]  # run for real
    assert early._started is None and started.child.returncode is not None
    # the environment must be the same too
    early.begin(["--python", sys.executable])
    started = early._started
    env = {**os.environ, "REPROBOX_EARLY_TEST": "1"}
    py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=env)
    assert started is not None and started.child.returncode is not None
    assert probe_runs == [str(other), sys.executable]


def test_discard_stops_a_probe_nobody_adopted(repo):
    early.begin(["--python", sys.executable])
    started = early._started
    assert started is not None
    early.discard()
    assert early._started is None and started.child.returncode is not None
    early.discard()  # nothing left: nothing happens


def test_nothing_starts_outside_a_repository_or_for_a_missing_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    early.begin(["--python", sys.executable])  # no git repository here
    assert early._started is None
    repo = new_repo(tmp_path / "r", {"a.py": ""})
    monkeypatch.chdir(repo)
    early.begin(["--python", str(tmp_path / "no-python")])
    assert early._started is None  # the capture itself reports it


def _entry(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    code = "import sys; sys.argv[0] = 'reprobox'; from reprobox.entry import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_the_command_records_what_the_cli_records_without_the_head_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    records = []
    for how in ("entry", "cli"):
        repo = new_repo(tmp_path / how, {"train.py": "print(1)\n"})
        run_env = {**env, "XDG_CACHE_HOME": str(tmp_path / f"xdg-{how}")}
        args = ["capture", "--no-lock", "--json", "--python", sys.executable, "--cmd", "x"]
        if how == "entry":
            done = _entry(repo, *args, env=run_env)
        else:
            done = subprocess.run(
                [sys.executable, "-m", "reprobox.cli", *args],
                cwd=repo,
                env=run_env,
                capture_output=True,
                text=True,
            )
        assert done.returncode == 0, done.stderr
        exp = json.loads(done.stdout)["id"]
        records.append((repo / ".reprobox" / "experiments" / exp / "environment.json").read_text())
    assert records[0] == records[1]


def test_a_refused_capture_is_refused_as_before(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    repo = new_repo(tmp_path / "repo", {"train.py": "print(1)\n"})
    done = _entry(repo, "capture", "--python", sys.executable, "--exit-status", "300", env=env)
    assert done.returncode == 2
    assert "--exit-status 300 is not an exit status" in done.stderr
    assert not (repo / ".reprobox" / "experiments").exists()
