"""A stranger's capture reaches no terminal with escape sequences, and a laptop's secrets reach no
committed file: captures made by the real CLI in a real git repository, then edited and re-sealed
the way anyone holding the folder can."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from reprobox.model import Environment, OutputFile, Package, PackageSource
from reprobox.store import Store

from ..conftest import git
from ..hostile import reseal as hostile_reseal

ESC = "\x1b"
FAKE_VERDICT = f"{ESC}[2K\r{ESC}[1;32mREPRODUCED: experiment 000000000000{ESC}[0m"
OSC8 = f"{ESC}]8;;https://evil.example/{ESC}\\click here{ESC}]8;;{ESC}\\"
BIDI = "\u202egnp.exe\u202c \u2066x\u2069"
HOSTILE = FAKE_VERDICT + OSC8 + BIDI

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")


def assert_terminal_safe(text: str, *, allow_own_colors: bool = False) -> None:
    if allow_own_colors:  # reprobox's own styling on a terminal: SGR codes only, and \r\n
        text = re.sub(f"{ESC}\\[[0-9;]*m", "", text).replace("\r\n", "\n")
    bad = sorted({f"U+{ord(c):04X}" for c in FORBIDDEN.findall(text)})
    assert not bad, f"control characters reached the output: {bad}\n{text!r}"


def cli(
    *args: str, cwd: Path, env: Optional[dict[str, str]] = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reseal(
    repo: Path,
    exp_id: str,
    *,
    environment: Optional[Environment] = None,
    files: Optional[dict[str, bytes]] = None,
    **changes: Any,
) -> str:
    """Edit a stored experiment as an attacker would (fields, environment, planted files) and
    re-seal it so that its id matches again: what anyone holding the folder can do."""
    stored = Store(repo).load(exp_id)
    for name, content in (files or {}).items():
        (stored.path / name).write_bytes(content)
    edited = replace(stored.experiment, **changes).to_dict()

    def edit_experiment(doc: dict) -> None:
        doc.update({key: edited[key] for key in changes})

    def edit_environment(doc: dict) -> None:
        assert environment is not None
        doc.clear()
        doc.update(environment.to_dict())

    return hostile_reseal(
        stored.path,
        experiment=edit_experiment,
        environment=edit_environment if environment is not None else None,
    )


def store_text(repo: Path) -> str:
    return "\n".join(
        p.read_bytes().decode(errors="replace")
        for p in (repo / ".reprobox").rglob("*")
        if p.is_file()
    )


@pytest.fixture
def project(git_repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A repository with a committed job and an empty venv (the target interpreter)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (git_repo / "job.py").write_text(
        "import json, sys\n"
        "print('epoch 1', flush=True)\n"
        f"sys.stdout.write({HOSTILE!r} + '\\n')\n"
        "json.dump({'score': 2.5}, open('score.json', 'w'))\n"
    )
    (git_repo / ".gitignore").write_text("score.json\nout/\n")
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "job")
    (git_repo / "score.json").write_text('{"score": 1.5}\n')
    return git_repo, venv


def capture(
    repo: Path, venv: Path, *args: str, env: Optional[dict[str, str]] = None, lock: bool = False
) -> subprocess.CompletedProcess:
    full = {**(env or os.environ), "VIRTUAL_ENV": str(venv)}
    return cli(
        "capture",
        *(() if lock else ("--no-lock",)),
        "--metrics",
        "score.json",
        *args,
        cwd=repo,
        env=full,
    )


def captured_id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- terminal


def test_every_reading_command_on_a_hostile_capture_prints_no_control_character(project):
    repo, venv = project
    good = captured_id(capture(repo, venv, "--cmd", "python job.py", "--name", "good"))
    base = captured_id(capture(repo, venv, "--cmd", "python job.py --seed 1", "--name", "base"))
    env = Store(repo).load(base).environment
    env = replace(
        env,
        packages=env.packages
        + (Package("numpy" + FAKE_VERDICT, "1.0" + OSC8, PackageSource("directory", path=BIDI)),),
    )
    bad = reseal(
        repo,
        base,
        environment=env,
        name="bad" + FAKE_VERDICT,
        command="python job.py" + OSC8 + BIDI,
        metrics={"score.json": {"score" + FAKE_VERDICT: "1" + OSC8}},
        outputs=(OutputFile(f"out/{ESC}[32mok.bin", "0" * 64, 1),),
        files={f"{ESC}[31mred{ESC}[0m\u202etxt.exe": b"x"},
    )
    for args in (
        ["ls"],
        ["ls", "--json"],
        ["show", bad],
        ["show", bad, "--json"],
        ["show", good],
        ["diff", good, bad],
        ["diff", good, bad, "--format", "markdown"],
        ["diff", good, bad, "--format", "json"],
        ["pr", bad, "--base", good],
        ["show", "bad" + FAKE_VERDICT],
    ):
        proc = cli(*args, cwd=repo)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, (args, out)
        assert_terminal_safe(out.replace("\n", "").replace("\t", ""))
        if proc.returncode != 0:  # refused: the message names what it refused
            assert re.search(r"name|command|metrics|red", proc.stderr), (args, proc.stderr)
        if "--json" in args and proc.returncode == 0:
            json.loads(proc.stdout)
    listed = cli("ls", cwd=repo).stdout
    assert good in listed
    assert len([x for x in listed.splitlines() if "REPRODUCED" in x]) <= 1


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    code = child.wait(timeout=600)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_a_rerun_printing_a_fake_verdict_on_a_terminal_shows_the_real_one(project):
    repo, venv = project
    exp_id = captured_id(capture(repo, venv, "--cmd", "python job.py", lock=True))  # score 1.5
    git(repo, "add", ".reprobox")
    git(repo, "commit", "-q", "-m", "capture")
    code, seen = _run_on_a_terminal(["run", exp_id, "--backend", "venv"], repo)
    assert code == 1, seen  # the rerun's score is 2.5: it differs
    assert_terminal_safe(seen, allow_own_colors=True)
    assert "click here" in seen and "epoch 1" in seen  # the command's text is shown
    assert "[1;32m" not in seen and "evil.example" not in seen
    verdicts = [line for line in seen.splitlines() if line.startswith(("DIFFERS", "REPRODUCED"))]
    assert verdicts and verdicts[-1].startswith(f"DIFFERS: experiment {exp_id}")


# --------------------------------------------------------------------------- secrets

GH = "ghp_" + "CanAry" * 6
HF = "hf_" + "CanaryHfCanaryHf" * 2
SAS = "CANARYsasSig%2Bx%3D"
URLPW = "CANARYurlPassw0rd"


def _lure_package(venv: Path) -> None:
    """A distribution installed from an Azure blob URL with a SAS token (its direct_url.json)."""
    site = next(venv.glob("lib/python*/site-packages"))
    info = site / "lure-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lure\nVersion: 1.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("lure-1.0.dist-info/METADATA,,\n")
    (info / "direct_url.json").write_text(
        json.dumps(
            {
                "url": "https://acct.blob.core.windows.net/wheels/lure-1.0-py3-none-any.whl"
                f"?sv=2022-11-02&se=2030-01-01&sp=r&sig={SAS}",
                "archive_info": {"hash": "sha256=" + "0" * 64},
            }
        )
    )


def test_laptop_secrets_reach_no_committed_file_and_no_output(project):
    repo, venv = project
    _lure_package(venv)
    (repo / "out").mkdir()
    (repo / "out" / f"model-{GH}.bin").write_bytes(b"weights")
    (repo / "m.json").write_text(
        json.dumps(
            {
                "acc": 0.5,
                GH: 1,
                "uploaded": f"https://bob:{URLPW}@store.example.com/runs/1",
                "hub": f"pushed with {HF}",
            }
        )
    )
    git(repo, "remote", "add", "origin", f"https://x:{URLPW}@git.example.com/{GH}/demo.git")
    env = {
        **os.environ,
        "HF_TOKEN": HF,
        "XLA_FLAGS": f"--xla_dump_to=https://u:{URLPW}@dumps.example.com/x",
    }
    (repo / "out" / f"eval-{GH}.json").write_text('{"f1": 0.5}')
    proc = capture(
        repo,
        venv,
        "--metrics",
        "m.json",
        "--metrics",
        f"out/eval-{GH}.json",
        "--output",
        f"out/model-{GH}.bin",
        "--cmd",
        f"python job.py --api-key CANARYapikey1 --hf {HF} -p CANARYpw9",
        env=env,
    )
    exp_id = captured_id(proc)
    shown = proc.stdout + proc.stderr
    text = store_text(repo)
    for canary in ("CANARY", "Canary", "CanAry", HF, GH, SAS, URLPW):
        assert canary not in text, canary
        assert canary not in shown, canary
    # One warning per field, naming it. (URLs read from git and direct_url.json lose their
    # credentials where they are read, silently, as they always have.)
    for field in (
        "command:",
        "metrics[m.json] key:",
        "metrics[m.json].uploaded:",
        "metrics[m.json].hub:",
        "env.XLA_FLAGS:",
        "--output #1:",
        "--metrics #3:",
    ):
        assert f"warning: {field}" in proc.stderr, (field, proc.stderr)
    stored = Store(repo).load(exp_id)
    assert stored.experiment.command == (
        "python job.py --api-key <redacted:api-key> "
        "--hf <redacted:$HF_TOKEN> -p <redacted:password>"
    )
    (lure,) = [p for p in stored.environment.packages if p.name == "lure"]
    assert lure.source == PackageSource(
        "archive",
        url="https://acct.blob.core.windows.net/wheels/lure-1.0-py3-none-any.whl",
        hash="sha256=" + "0" * 64,
    )
    assert stored.experiment.env["XLA_FLAGS"] == "--xla_dump_to=https://dumps.example.com/x"
    assert stored.experiment.git.remote == "https://git.example.com/REDACTED/demo.git"
    assert stored.experiment.outputs == ()
    assert sorted(stored.experiment.metrics) == ["m.json", "score.json"]
    # What is shown afterwards carries no secret either.
    for args in (["show", exp_id], ["show", exp_id, "--json"], ["ls"]):
        out = cli(*args, cwd=repo)
        assert "CANARY" not in out.stdout + out.stderr and GH not in out.stdout


def test_a_secret_in_the_uncommitted_change_refuses_the_capture(project):
    repo, venv = project
    (repo / "job.py").write_text(
        (repo / "job.py").read_text() + f"\nINDEX = 'https://me:{URLPW}@pypi.example.com/simple'\n"
    )
    proc = capture(repo, venv, "--cmd", "python job.py")
    assert proc.returncode == 2, proc.stderr
    assert "job.py line 6" in proc.stderr and "patch.diff" in proc.stderr
    assert "--allow-secret-in-patch" in proc.stderr
    assert URLPW not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    experiments = repo / ".reprobox" / "experiments"
    assert not experiments.exists() or not [
        p for p in experiments.iterdir() if not p.name.startswith(".")
    ]
    # Knowingly overridden: recorded, with a warning naming the file and line.
    proc = capture(repo, venv, "--cmd", "python job.py", "--allow-secret-in-patch")
    captured_id(proc)
    assert "job.py line 6" in proc.stderr and URLPW not in proc.stderr


def test_an_expanded_secret_in_the_uncommitted_change_is_found(project):
    repo, venv = project
    (repo / "notes.txt").write_text("nothing\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "notes")
    (repo / "notes.txt").write_text(f"nothing\nmy token: {HF}\n")
    proc = capture(repo, venv, "--cmd", "python job.py", env={**os.environ, "HF_TOKEN": HF})
    assert proc.returncode == 2 and "notes.txt line 2" in proc.stderr
    assert HF not in proc.stderr


def test_the_package_list_of_an_unredacted_environment_is_unchanged(project):
    # The pass changes nothing where there is nothing to hide (same id as before redaction).
    repo, venv = project
    proc = capture(repo, venv, "--cmd", "python job.py --lr 0.1")
    exp_id = captured_id(proc)
    assert "redacted" not in proc.stderr
    stored = Store(repo).load(exp_id)
    assert stored.experiment.command == "python job.py --lr 0.1"
    assert all(isinstance(p, Package) for p in stored.environment.packages)
