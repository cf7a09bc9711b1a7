"""A first capture's probe started before the CLI loads: adopted only when it is exactly the
probe the capture computes, stopped otherwise. Real interpreters, real git repositories."""

from __future__ import annotations

import json
import os
import shutil
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
    planned = early.plan(["--python", sys.executable], dict(os.environ), repo)
    cache_file = probe_cache_file(_cache_dir(repo), Path(sys.executable))
    assert isinstance(planned, early.ProbePlan)
    assert planned.argv == py.probe_command(Path(sys.executable), cache_file, os.environ, py.PROBE)
    assert "PYTHONPATH" not in planned.env and planned.env.get("PATH") == os.environ.get("PATH")
    # once an answer is in the user's cache the capture checks it instead of probing
    answer = answer_file(cache_file)
    answer.parent.mkdir(parents=True)
    answer.write_text("{}")
    planned = early.plan(["--python", sys.executable], dict(os.environ), repo)
    assert planned == early.CheckPlan(answer, Path(sys.executable), planned.env)
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


def test_the_command_records_what_the_cli_records_without_the_head_start_cold_and_warm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    records = []
    for how in ("entry", "cli"):
        repo = new_repo(tmp_path / how, {"train.py": "print(1)\n"})
        run_env = {**env, "XDG_CACHE_HOME": str(tmp_path / f"xdg-{how}")}
        args = ["capture", "--no-lock", "--json", "--python", sys.executable, "--cmd", "x"]
        for _first_then_warm in range(2):
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
            env_json = repo / ".reprobox" / "experiments" / exp / "environment.json"
            records.append(env_json.read_text())
            shutil.rmtree(repo / ".reprobox" / "experiments")  # the next one is a warm capture
    assert len(records) == 4 and len(set(records)) == 1


def test_a_refused_capture_is_refused_as_before(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    repo = new_repo(tmp_path / "repo", {"train.py": "print(1)\n"})
    done = _entry(repo, "capture", "--python", sys.executable, "--exit-status", "300", env=env)
    assert done.returncode == 2
    assert "--exit-status 300 is not an exit status" in done.stderr
    # the probe started ahead was stopped, and the folders made for it are gone
    assert not (repo / ".reprobox").exists()
    # where .reprobox was there already, only what was made for the probe goes
    (repo / ".reprobox" / "experiments").mkdir(parents=True)
    (repo / ".reprobox" / ".gitignore").write_text("local/\n")
    done = _entry(repo, "capture", "--python", sys.executable, "--exit-status", "300", env=env)
    assert done.returncode == 2
    assert sorted(p.name for p in (repo / ".reprobox").iterdir()) == [".gitignore", "experiments"]


def test_discard_leaves_a_folder_that_holds_anything_else(repo):
    early.begin(["--python", sys.executable])
    started = early._started
    assert isinstance(started, early._Started)
    assert {p.name for p in started.created} == {".reprobox", "local", "cache"}
    keep = repo / ".reprobox" / "local" / "cache" / "dvc"
    keep.mkdir()  # not the probe's: the cache folder and those above it stay
    early.discard()
    assert keep.is_dir() and (repo / ".reprobox" / "local" / ".gitignore").is_file()
    assert not started.cache_file.exists()


def test_a_linked_local_folder_starts_nothing_and_writes_nowhere(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / ".reprobox").mkdir()
    (repo / ".reprobox" / "local").symlink_to(elsewhere, target_is_directory=True)
    early.begin(["--python", sys.executable])
    assert early._started is None
    assert list(elsewhere.iterdir()) == []
    assert (repo / ".reprobox" / "local").is_symlink()  # left for the capture to refuse


def _warm(repo: Path) -> dict:
    """A probe's answer in the user's cache, checked once (its fingerprint taken)."""
    py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=dict(os.environ))
    again = py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=dict(os.environ))
    assert early._started is None
    return again


def test_a_cached_answer_is_checked_ahead_and_taken(repo, probe_runs, monkeypatch):
    expected = _warm(repo)
    early.begin(["--python", sys.executable])
    assert isinstance(early._started, early._Checking)

    def no_check_here(self):
        raise AssertionError("the answer was checked ahead: not again")

    monkeypatch.setattr(py.ResultCache, "load", no_check_here)
    probe_runs.clear()
    raw = py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=dict(os.environ))
    assert probe_runs == [] and early._started is None
    assert raw == expected


def test_an_answer_that_no_longer_holds_means_a_probe(repo, probe_runs):
    _warm(repo)
    answer = answer_file(probe_cache_file(_cache_dir(repo), Path(sys.executable)))
    data = json.loads(answer.read_text())
    data["fingerprint"] = "0" * 64  # something it read changed
    answer.write_text(json.dumps(data))
    early.begin(["--python", sys.executable])
    assert isinstance(early._started, early._Checking)
    probe_runs.clear()
    raw = py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=dict(os.environ))
    assert probe_runs == [sys.executable] and raw["distributions"]


def test_a_check_for_another_environment_is_not_taken(repo, probe_runs, monkeypatch):
    _warm(repo)
    early.begin(["--python", sys.executable])
    started = early._started
    assert isinstance(started, early._Checking)
    loads = []
    real_load = py.ResultCache.load

    def counting(self):
        loads.append(self.path)
        return real_load(self)

    monkeypatch.setattr(py.ResultCache, "load", counting)
    env = {**os.environ, "REPROBOX_EARLY_TEST": "1"}
    py.run_probe(Path(sys.executable), cache_dir=_cache_dir(repo), environ=env)
    assert len(loads) == 1 and early._started is None  # checked here, the other one dropped
    assert not started.reader.is_alive()
