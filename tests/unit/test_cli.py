"""The CLI layer: rendering, exit codes, and one clear message per error (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reprobox.cli import main
from reprobox.store import Store

from ..factories import make_env, make_exp


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_ls_and_show(repo: Path) -> None:
    store = Store(repo)
    env = make_env()
    a = store.save(make_exp(env, name="baseline"), env)
    code, out, _ = invoke("ls")
    assert code == 0 and a.id in out and "baseline" in out and "3.11.7" in out
    code, out, _ = invoke("show", "baseline")
    assert code == 0 and a.id in out and "python train.py" in out and "accuracy=0.93" in out
    code, out, _ = invoke("show", a.id[:5], "--json")
    data = json.loads(out)
    assert data["experiment"]["id"] == a.id
    assert data["environment"]["schema"] == "reprobox.environment/1"
    code, out, _ = invoke("ls", "--json")
    assert [r["id"] for r in json.loads(out)] == [a.id]


def test_unknown_experiment_is_a_usage_error(repo: Path) -> None:
    store = Store(repo)
    env = make_env()
    store.save(make_exp(env), env)
    code, out, err = invoke("show", "nosuchthing")
    assert code == 2
    assert "no experiment matches 'nosuchthing'" in err and "reprobox ls" in err
    assert "Traceback" not in err + out


def test_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("ls")
    assert code == 3 and "not inside a git repository" in err and "git init" in err


def test_corrupt_store_names_file(repo: Path) -> None:
    store = Store(repo)
    env = make_env()
    s = store.save(make_exp(env), env)
    (s.path / "experiment.json").write_text("{broken")
    code, _, err = invoke("show", "latest")
    assert code == 2 and "experiment.json is not valid JSON (line 1" in err


def test_newer_schema_refused(repo: Path) -> None:
    store = Store(repo)
    env = make_env()
    s = store.save(make_exp(env), env)
    path = s.path / "environment.json"
    data = json.loads(path.read_text())
    data["schema"] = "reprobox.environment/2"
    path.write_text(json.dumps(data))
    code, _, err = invoke("show", s.id)
    assert code == 2 and "environment.json" in err and "changed after capture" in err


def test_bad_option_exits_2(repo: Path) -> None:
    code, _, _ = invoke("run", "x", "--backend", "podman")
    assert code == 2


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and "reprobox" in out


def test_base_needs_an_exact_release(repo: Path) -> None:
    code, _, err = invoke("base", "--python", "3.11")
    assert code == 2 and "exact release" in err
    code, _, err = invoke("base", "--python", "3.11.7", "--os", "bad name")
    assert code == 2 and "codename" in err


def test_default_names_hold_only_name_characters() -> None:
    from reprobox.pipeline import default_name

    assert default_name("python train.py", "shell") == "train"
    assert default_name("python -m pkg.train --lr 1", "shell") == "train"
    assert default_name("python 'my;script.py'", "shell") == "my-script"
    assert default_name(None, "dvc") == "dvc-pipeline"
    assert default_name("", "shell") == "experiment"


@pytest.mark.parametrize(
    "args,named",
    [
        (["--pids-limit", "3"], "--pids-limit"),
        (["--memory", "a lot"], "--memory"),
        (["--gpus", "all;id"], "--gpus"),
    ],
)
def test_container_limits_are_checked_on_the_command_line(
    repo: Path, args: list[str], named: str
) -> None:
    for command in ("run", "verify"):
        code, _out, err = invoke(command, "latest", *args)
        assert code == 2 and named in err and "Traceback" not in err


def test_run_gives_sigterm_back_when_it_ends(git_repo, monkeypatch):
    """`run` turns SIGTERM into an interrupt while it runs; called in-process (a test, a notebook)
    it must hand the previous handler back, or processes forked later inherit it."""
    import signal

    from click.testing import CliRunner

    from reprobox.cli import main

    def mine(_signo, _frame):
        return None

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        monkeypatch.chdir(git_repo)
        result = CliRunner().invoke(main, ["run", "nosuchexp"])
        assert result.exit_code == 2, result.output
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_closed_output_pipe_ends_quietly_as_sigpipe_would(tmp_path) -> None:
    """`reprobox ls | head -1` ended with "internal error (BrokenPipeError)", exit 3."""
    import subprocess
    import sys

    from reprobox.store import Store
    from tests.factories import make_env, make_exp, reprobox_exe

    (tmp_path / ".git").mkdir()
    env = make_env()
    Store(tmp_path).save(make_exp(env), env, {})
    script = (
        f"import subprocess, sys\n"
        f"p = subprocess.Popen([{reprobox_exe()!r}, 'ls'], stdout=subprocess.PIPE,"
        f" stderr=subprocess.PIPE, cwd={str(tmp_path)!r})\n"
        f"p.stdout.close()\n"
        f"err = p.stderr.read()\n"
        f"sys.stdout.write(str(p.wait()) + '\\n' + err.decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    code, _, err = out.stdout.partition("\n")
    assert code == "141", out.stdout
    assert "internal error" not in err and "Traceback" not in err and "Exception" not in err
