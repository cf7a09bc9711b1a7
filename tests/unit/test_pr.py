"""The pull-request comment: marker, summary, diff, folded package lists, escaping, size limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pytest

from reprobox.model import GPU, Hardware, Package, SystemPackage
from reprobox.pr import MAX_COMMENT_CHARS, PR_MARKER, pr_markdown
from reprobox.store import Store, StoredExperiment

from ..asserts import assert_tables_keep_their_columns
from ..factories import cpu_env, with_packages
from ..factories import make_exp
from ..conftest import require, require_module, require_tool


def _html(text: str) -> str:
    markdown_it = require_module("markdown_it")
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _save(store: Store, env: object, **exp_changes: object) -> StoredExperiment:
    exp = replace(make_exp(env), **exp_changes)  # type: ignore[arg-type]
    return store.save(exp, env)  # type: ignore[arg-type]


def test_template_ships_as_package_data() -> None:
    assert "{{ marker }}" in files("reprobox.templates").joinpath("pr.md.j2").read_text()


def test_comment_without_base(store: Store) -> None:
    stored = store.set_image(_save(store, cpu_env()), "reprobox/abc:1")  # local state
    out = pr_markdown(stored, None, repo_root=store.root)
    assert out.splitlines()[0] == PR_MARKER
    assert "No base experiment to compare with" in out
    assert f"| **experiment** | <code>{stored.id}</code> |" in out
    assert "| **python** | cpython 3.11.7 (venv) |" in out
    assert "| **packages** | 5 |" in out and "| **system packages** | 2 |" in out
    assert f"<code>{stored.environment.digest[:19]}</code>" in out
    assert "<code>reprobox/abc:1</code>" in out
    assert "<code>metrics.json: accuracy = 0.93</code>" in out
    assert f"<code>.reprobox/experiments/{stored.id}</code>" in out
    assert "Environment diff" not in out
    html = _html(out)
    assert "<details>" in html and "<summary>Python packages (5)</summary>" in html
    assert "<summary>System packages (2)</summary>" in html


def test_comment_with_base_shows_warnings_and_the_diff(store: Store) -> None:
    base_env = cpu_env()
    base = _save(store, base_env, name="main")
    env = with_packages(base_env, Package("numpy", "2.10.0"))
    env = replace(
        env,
        hardware=Hardware(
            cpu_flags=("avx2", "fma"),
            cuda_runtime="12.4",
            cudnn="9.1.0",
            gpus=(GPU("NVIDIA H100 80GB HBM3", compute_capability="9.0"),) * 2,
        ),
    )
    head = _save(store, env, name="pr")
    out = pr_markdown(head, base, repo_root=store.root)
    assert f"The environment differs from the base <code>{base.id}</code> (main)." in out
    warn = out.index("> [!WARNING]")
    assert warn < out.index("| | this pull request | base |") < out.index("### Environment diff")
    assert "numpy 2.4.6 -&gt; 2.10.0" in out
    assert "2× NVIDIA H100 80GB HBM3 (compute 9.0); CUDA 12.4, cuDNN 9.1.0" in out
    assert "#### Packages (1 upgraded)" in out
    assert f"<code>reprobox diff {base.id} {head.id}</code>" in out
    html = _html(out)
    assert html.count("<table>") >= 4  # summary, packages diff, hardware, two package lists


def test_identical_environment_says_so(store: Store) -> None:
    env = cpu_env()
    base = _save(store, env, name="main")
    head = _save(store, env, name="pr")
    out = pr_markdown(head, base)
    assert f"The environment is identical to the base <code>{base.id}</code> (main)." in out
    assert "Environment diff" not in out and "[!WARNING]" not in out


def test_hostile_capture_values_are_inert(store: Store) -> None:
    evil = "<img src=x onerror=alert(1)>|@octocat $x$ **b**"
    env = with_packages(cpu_env(), Package(evil, evil))
    env = replace(
        env,
        system_packages=env.system_packages + (SystemPackage(evil, evil, manager=evil),),
        os=replace(env.os, pretty_name=evil),
        hardware=Hardware(gpus=(GPU(evil + "\n| injected | row |"),)),
    )
    head = StoredExperiment(
        replace(make_exp(env), name=evil, command=evil, metrics={evil: {evil: evil}}),
        env,
        store.experiments_dir / "0123456789ab",
    )
    out = pr_markdown(
        head,
        StoredExperiment(make_exp(cpu_env()), cpu_env(), store.experiments_dir / "ba9876543210"),
    )
    html = _html(out)
    assert "<img" not in html and "<strong>b</strong>" not in html and "@octocat" not in html
    assert "<td>injected</td>" not in html and "\\x0a" in out  # the newline is shown, not obeyed
    assert_tables_keep_their_columns(out)


def test_huge_environment_stays_under_the_comment_limit(store: Store) -> None:
    many = tuple(Package(f"package-number-{i:05d}", f"1.{i}.0") for i in range(4000))
    base_env = cpu_env()
    env = replace(
        base_env,
        packages=many,
        system_packages=tuple(SystemPackage(f"libexample{i}", "1.0-1") for i in range(1500)),
    )
    base = _save(store, base_env)
    head = _save(store, env, name="big")
    out = pr_markdown(head, base)
    assert len(out) <= MAX_COMMENT_CHARS
    assert out.splitlines()[0] == PR_MARKER
    assert "too long for one comment" in out and "The list left out to fit in one comment" in out
    small = pr_markdown(_save(store, with_packages(base_env, *many[:50]), name="small"), base)
    assert "left out" not in small and "package-number-00049" in small


# ----------------------------------------------------------------------- the GitHub Actions example

WORKFLOWS = Path(__file__).resolve().parents[2] / "examples" / "github-actions"
WORKFLOW = WORKFLOWS / "reprobox-pr.yml"  # renders the comment (the pull request's own job)
POSTER = WORKFLOWS / "reprobox-post.yml"  # posts it (workflow_run, default branch's copy)


def _workflow(path: Path = WORKFLOW) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _steps(path: Path = WORKFLOW) -> list[dict]:
    jobs = _workflow(path)["jobs"]
    assert len(jobs) == 1
    return next(iter(jobs.values()))["steps"]


def _step(name_part: str, path: Path = WORKFLOW) -> dict:
    return next(s for s in _steps(path) if name_part in s.get("name", ""))


def test_workflow_shape() -> None:
    wf = _workflow()
    assert set(wf["on"]) == {"pull_request"}  # never pull_request_target
    assert ".reprobox/experiments/**" in wf["on"]["pull_request"]["paths"]
    assert wf["permissions"] == {"contents": "read"}  # the pull request's job cannot write
    checkout = _steps()[0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0 and checkout["with"]["persist-credentials"] is False
    render = _step("Render")["run"]
    assert 'reprobox pr "$HEAD_EXP" --base "$BASE_EXP"' in render
    post = _step("Post or update", POSTER)["run"]
    assert "--method PATCH" in post and "--method POST" in post
    assert "GH_TOKEN" in _step("Post or update", POSTER)["env"]
    assert f"marker='{PR_MARKER}'" in _step("Check the artifact", POSTER)["run"]
    for step in _steps() + _steps(POSTER):
        if "run" in step:
            # Expressions are expanded before the shell runs: values from a pull request must
            # reach scripts through env, never through ${{ }} inside the script.
            assert "${{" not in step["run"], step["name"]


def test_workflow_scripts_parse() -> None:
    require_tool("bash")
    for step in _steps() + _steps(POSTER):
        if "run" in step:
            result = subprocess.run(
                ["bash", "-n"], input=step["run"], text=True, capture_output=True, check=False
            )
            assert result.returncode == 0, (step["name"], result.stderr)


def _run_step(
    step: str, cwd: Path, env: dict[str, str], path: Path = WORKFLOW
) -> subprocess.CompletedProcess[str]:
    script = cwd.parent / "step.sh"
    script.write_text(_step(step, path)["run"])
    # How GitHub runs a `run:` step on Linux.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env={**os.environ, **env},
        text=True,
        capture_output=True,
        check=False,
    )


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, text=True, capture_output=True, check=True
    ).stdout.strip()


@pytest.fixture
def pr_repo(tmp_path: Path) -> dict[str, object]:
    """A repository whose base branch has two experiments and whose pull request adds two more,
    checked out at the merge commit, as actions/checkout does for `pull_request`."""
    require_tool("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    store = Store(repo)
    env = cpu_env()
    old = store.save(make_exp(env, name="old", created="2026-01-01T00:00:00Z"), env)
    base = store.save(make_exp(env, name="base", created="2026-02-01T00:00:00Z"), env)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    _git(repo, "checkout", "-q", "-b", "feature")
    env2 = with_packages(env, Package("numpy", "2.10.0"))
    mid = store.save(make_exp(env2, name="mid", created="2026-02-15T00:00:00Z"), env2)
    head = store.save(make_exp(env2, name="head", created="2026-03-01T00:00:00Z"), env2)
    (repo / "train.py").write_text("print('unrelated change')\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "new experiments")
    _git(repo, "checkout", "-q", "main")
    base_sha = _git(repo, "rev-parse", "HEAD")
    _git(repo, "merge", "-q", "--no-ff", "--no-edit", "feature")
    return {
        "repo": repo,
        "base_sha": base_sha,
        "old": old.id,
        "base": base.id,
        "mid": mid.id,
        "head": head.id,
    }


def test_pick_step_chooses_the_newest_changed_and_the_newest_on_base(
    pr_repo: dict, tmp_path: Path
) -> None:
    out = tmp_path / "github_output"
    out.touch()
    result = _run_step(
        "Pick", pr_repo["repo"], {"BASE_SHA": pr_repo["base_sha"], "GITHUB_OUTPUT": str(out)}
    )
    assert result.returncode == 0, result.stderr
    assert _outputs(out) == {"changed": "true", "head": pr_repo["head"], "base": pr_repo["base"]}


def test_pick_step_without_experiment_changes(pr_repo: dict, tmp_path: Path) -> None:
    repo = pr_repo["repo"]
    (repo / "README").write_text("docs only\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "docs")
    out = tmp_path / "github_output"
    out.touch()
    result = _run_step(
        "Pick", repo, {"BASE_SHA": _git(repo, "rev-parse", "HEAD~1"), "GITHUB_OUTPUT": str(out)}
    )
    assert result.returncode == 0, result.stderr
    assert _outputs(out) == {"changed": "false"}


def test_pick_step_restores_a_base_experiment_the_pull_request_deletes(
    pr_repo: dict, tmp_path: Path
) -> None:
    repo = pr_repo["repo"]
    _git(repo, "rm", "-r", "-q", f".reprobox/experiments/{pr_repo['base']}")
    _git(repo, "commit", "-q", "-m", "drop base experiment")
    out = tmp_path / "github_output"
    out.touch()
    result = _run_step("Pick", repo, {"BASE_SHA": pr_repo["base_sha"], "GITHUB_OUTPUT": str(out)})
    assert result.returncode == 0, result.stderr
    assert _outputs(out)["base"] == pr_repo["base"]
    assert (repo / ".reprobox" / "experiments" / pr_repo["base"] / "experiment.json").is_file()


FAKE_GH = """#!{python}
# Stands in for the GitHub CLI: answers `gh api --paginate ...` with a canned comment list and
# records the requests the workflow makes.
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GH_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
    if "--paginate" in args:
        with open(os.environ["FAKE_GH_COMMENTS"]) as comments:
            sys.stdout.write(comments.read())
    elif "--input" in args:
        with open(args[args.index("--input") + 1]) as payload:
            log.write(json.dumps({{"payload": json.load(payload)}}) + "\\n")
        print("{{}}")
"""


@pytest.mark.parametrize("existing", [True, False])
def test_render_and_post_steps_with_the_real_cli(
    pr_repo: dict, tmp_path: Path, existing: bool
) -> None:
    require(shutil.which("jq") is not None, "jq (present on GitHub's runners)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "reprobox").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'from reprobox.cli import main; main()' \"$@\"\n"
    )
    (bindir / "gh").write_text(FAKE_GH.format(python=sys.executable))
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    comments = tmp_path / "comments.json"
    comments.write_text(
        json.dumps(
            [
                {"id": 11, "user": {"login": "someone"}, "body": PR_MARKER + "\nnot ours to edit"},
                *(
                    [
                        {
                            "id": 42,
                            "user": {"login": "github-actions[bot]"},
                            "body": PR_MARKER + "\nold",
                        }
                    ]
                    if existing
                    else []
                ),
                {"id": 43, "user": {"login": "github-actions[bot]"}, "body": "another bot message"},
            ]
        )
    )
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "HEAD_EXP": pr_repo["head"],
        "BASE_EXP": pr_repo["base"],
        "GH_TOKEN": "not-a-token",
        "REPO": "org/project",
        "PR": "7",
        "FAKE_GH_LOG": str(tmp_path / "gh.log"),
        "FAKE_GH_COMMENTS": str(comments),
    }
    rendered = _run_step("Render", pr_repo["repo"], env)
    assert rendered.returncode == 0, rendered.stderr
    body = (runner_temp / "reprobox-comment" / "comment.md").read_text()
    assert body.startswith(PR_MARKER + "\n") and pr_repo["head"] in body and pr_repo["base"] in body
    assert "numpy 2.4.6 -&gt; 2.10.0" in body
    assert (tmp_path / "summary.md").read_text() == body

    # What the artifact hands over; then the poster's own check and its post step.
    (runner_temp / "reprobox-in").mkdir()
    (runner_temp / "reprobox-in" / "comment.md").write_text(body)
    outputs = tmp_path / "github_output"
    outputs.touch()
    checked = _run_step(
        "Check the artifact",
        pr_repo["repo"],
        {**env, "WORKFLOW_NAME": "reprobox environment", "GITHUB_OUTPUT": str(outputs)},
        POSTER,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    env["MARKER"] = _outputs(outputs)["marker"]
    posted = _run_step("Post or update", pr_repo["repo"], env, POSTER)
    assert posted.returncode == 0, posted.stderr
    calls = [json.loads(line) for line in (tmp_path / "gh.log").read_text().splitlines()]
    assert calls[0][:3] == ["api", "--paginate", "repos/org/project/issues/7/comments"]
    if existing:
        assert calls[1][:4] == ["api", "--method", "PATCH", "repos/org/project/issues/comments/42"]
        assert "Updated comment 42." in posted.stdout
    else:
        assert calls[1][:4] == ["api", "--method", "POST", "repos/org/project/issues/7/comments"]
    assert calls[2] == {"payload": {"body": body}}
