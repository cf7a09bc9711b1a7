"""The GitHub Actions examples: fork-safe by construction, and their shell steps work.

The pull request's own workflows (render the environment comment, reproduce the captures) hold a
read-only token and no secret; the one workflow that can comment runs on ``workflow_run``, never
checks out or runs the pull request's code, takes the pull request's number from GitHub's event data
and treats the artifact as untrusted text. The shell of the steps that handle untrusted input is run
here for real with bash.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from reprobox.pr import PR_MARKER

from ..conftest import require_tool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "github-actions"
PR, REPRODUCE, POST = "reprobox-pr.yml", "reprobox-reproduce.yml", "reprobox-post.yml"
RUN_MARKER = "<!-- reprobox:run -->"
# A command word at the start of a line or after ; | & ( $( : what the poster must never run.
COMMAND = re.compile(
    r"(?m)(?:^|[;&|(]\s*)\s*(git|pip3?|reprobox|python3?|bash|sh|source|eval|exec|\.)\s"
)


def load(name: str) -> dict:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    # YAML 1.1 reads the bare key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def step(workflow: dict, name_start: str) -> dict:
    found = [s for s in steps(workflow) if s.get("name", "").startswith(name_start)]
    assert len(found) == 1, f"no single step named {name_start!r}"
    return found[0]


@pytest.mark.parametrize("name", [PR, REPRODUCE, POST])
def test_no_pull_request_target_and_no_expression_inside_a_script(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert "pull_request_target" not in text
    for s in steps(load(name)):
        # Values reach scripts as environment variables only: `${{ }}` inside `run:` is injection.
        assert "${{" not in s.get("run", ""), f"{name}: step {s.get('name')!r} interpolates"


@pytest.mark.parametrize("name", [PR, REPRODUCE])
def test_the_pull_requests_own_workflows_hold_no_write_token_and_no_secret(name: str) -> None:
    wf = load(name)
    assert list(wf["on"]) == ["pull_request"]
    assert wf["permissions"] == {"contents": "read"}
    for job_name, job in wf["jobs"].items():
        assert "permissions" not in job, f"{name}: job {job_name} widens the permissions"
    text = (EXAMPLES / name).read_text()
    assert "secrets." not in text and "github.token" not in text
    checkout = [s for s in steps(wf) if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout and all(s["with"]["persist-credentials"] is False for s in checkout)
    upload = [s for s in steps(wf) if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert [s["with"]["name"] for s in upload] == ["reprobox-comment"]


def test_the_poster_runs_nothing_from_the_pull_request() -> None:
    wf = load(POST)
    assert list(wf["on"]) == ["workflow_run"]
    assert set(wf["on"]["workflow_run"]["workflows"]) == {load(PR)["name"], load(REPRODUCE)["name"]}
    assert wf["permissions"] == {"actions": "read", "pull-requests": "write"}
    for s in steps(wf):
        assert "uses" not in s, f"the poster uses an action: {s['uses']}"
        script = s.get("run", "")
        ran = COMMAND.findall(script)
        assert not ran, f"step {s['name']!r} runs {ran}"
    # The pull request's number comes from the event, checked against the run's head commit.
    find = step(wf, "Find the pull request")
    assert find["env"]["HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert "select(.head.sha == $sha)" in find["run"]


def test_every_action_is_pinned_to_a_commit() -> None:
    for name in (PR, REPRODUCE, POST):
        for s in steps(load(name)):
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", s["uses"]), s["uses"]


def test_the_markers_are_the_ones_reprobox_and_the_reproduce_job_write() -> None:
    check = step(load(POST), "Check the artifact")["run"]
    assert f"marker='{PR_MARKER}'" in check
    assert f"marker='{RUN_MARKER}'" in check
    assert RUN_MARKER in step(load(REPRODUCE), "Reproduce")["run"]


def test_zizmor_finds_nothing() -> None:
    zizmor = require_tool("zizmor", "zizmor (the test extra)")
    for name in (PR, REPRODUCE, POST):
        out = subprocess.run(
            [str(zizmor), "--offline", "--no-progress", str(EXAMPLES / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"{name}:\n{out.stdout}\n{out.stderr}"


# --------------------------------------------------------------- the shell, run for real


def run_step(script: str, tmp_path: Path, env: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir(exist_ok=True)
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    summary = tmp_path / "summary"
    full_env = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        **env,
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    pairs = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc.returncode, proc.stdout + proc.stderr, pairs


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "runner" / "reprobox-in"
    folder.mkdir(parents=True)
    return folder


def test_the_artifact_check_passes_a_comment_with_the_right_marker(
    tmp_path: Path, artifact: Path
) -> None:
    script = step(load(POST), "Check the artifact")["run"]
    (artifact / "comment.md").write_text(f"{PR_MARKER}\n| a | b |\n")
    rc, out, outputs = run_step(script, tmp_path, {"WORKFLOW_NAME": "reprobox environment"})
    assert rc == 0, out
    assert outputs["marker"] == PR_MARKER


@pytest.mark.parametrize(
    "case,expected",
    [
        ("two files", "exactly one regular file"),
        ("symlink", "exactly one regular file"),
        ("oversize", "at most 60000"),
        ("not utf-8", "not UTF-8"),
        ("wrong marker", f"does not start with {RUN_MARKER}"),
        ("unknown workflow", "unexpected workflow name"),
    ],
)
def test_the_artifact_check_refuses_what_it_cannot_vouch_for(
    tmp_path: Path, artifact: Path, case: str, expected: str
) -> None:
    script = step(load(POST), "Check the artifact")["run"]
    comment = artifact / "comment.md"
    comment.write_text(f"{RUN_MARKER}\nfine\n")
    workflow = "reprobox reproduce"
    if case == "two files":
        (artifact / "other.md").write_text("x")
    elif case == "symlink":
        secret = tmp_path / "host-file"
        secret.write_text(f"{RUN_MARKER}\nhost secret\n")
        comment.unlink()
        comment.symlink_to(secret)
    elif case == "oversize":
        comment.write_text(RUN_MARKER + "\n" + "x" * 60001)
    elif case == "not utf-8":
        comment.write_bytes(RUN_MARKER.encode() + b"\n\xff\xfe\n")
    elif case == "wrong marker":
        comment.write_text(f"{PR_MARKER}\nposing as the environment comment\n")
    elif case == "unknown workflow":
        workflow = "something else"
    rc, out, outputs = run_step(script, tmp_path, {"WORKFLOW_NAME": workflow})
    assert rc != 0
    assert expected in out
    assert "marker" not in outputs


def test_the_reproduce_step_takes_the_verdict_from_the_exit_status(tmp_path: Path) -> None:
    """A fake `reprobox` prints a fake green verdict and backticks; the table still says what the
    exit status said, and the report cannot break out of its code block."""
    script = step(load(REPRODUCE), "Reproduce")["run"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "reprobox"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$2" in\n'
        "  aaaaaaaaaaaa) echo 'REPRODUCED'; exit 0 ;;\n"
        "  bbbbbbbbbbbb) printf 'REPRODUCED\\n````\\n| fake | row |\\n'; exit 1 ;;\n"
        "  *) echo 'boom' >&2; exit 3 ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    env = {
        "IDS": "aaaaaaaaaaaa bbbbbbbbbbbb cccccccccccc BAD;rm",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    rc, out, _ = run_step(script, tmp_path, env)
    assert rc == 1, out
    body = (tmp_path / "runner" / "reprobox-run" / "comment.md").read_text()
    assert body.splitlines()[0] == RUN_MARKER
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `aaaaaaaaaaaa` | reproduced |",
        "| `bbbbbbbbbbbb` | **differs** |",
        "| `cccccccccccc` | **failed** (exit 3) |",
    ]
    assert "skipping a malformed id" in out
    # The report holding four backticks sits in a fence of five.
    assert "`````text\nREPRODUCED\n````\n| fake | row |\n\n`````" in body
    assert "boom" in body  # an empty report falls back to the log's tail
