"""The fan-out's pure parts: the summary, the sbatch script, the Kubernetes Jobs (validated with
kubernetes-validate's strict schemas and the kubernetes client's models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from reprobox.errors import UsageError, ValidationError
from reprobox.fanout import kubernetes as k8s
from reprobox.fanout import slurm
from reprobox.fanout.published import published_image, require_published
from reprobox.fanout.summary import FAILED, REPRODUCED, Outcome, Summary
from reprobox.model import GPU, Environment, Experiment, GitInfo, Hardware, Interpreter
from reprobox.render import summary_text

from ...asserts import refuses

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/team/exp@{DIGEST}"


def _stored(tmp_path: Path, *, gpus: int = 0, images: Any = None, **kw: Any) -> Any:
    env = Environment(
        interpreter=Interpreter("cpython", "3.11.7"),
        hardware=Hardware(gpus=tuple(GPU("H100") for _ in range(gpus))),
    )
    base: dict[str, Any] = dict(
        name="train",
        command="python train.py --lr 0.1",
        cwd="src",
        git=GitInfo(commit="a" * 40),
        environment_digest=env.digest,
        created="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        metrics={"metrics.json": {"acc": 0.9}},
        env={"PYTHONHASHSEED": "0"},
    )
    base.update(kw)
    exp = Experiment(**base).with_id()
    folder = tmp_path / ".reprobox" / "experiments" / exp.id
    folder.mkdir(parents=True, exist_ok=True)
    if images is not None:  # a publication record as `reprobox push` writes it
        from reprobox.registry import Publication, PublicationRecord, seal_of

        pub = Publication(images[0], images[1], images[2], "2026-11-30T18:00:00Z")
        doc = PublicationRecord(exp.id, env.digest, (pub,)).to_dict()
        doc["images"][0]["reference"] = f"{images[0]}@{images[2]}"
        doc["seal"] = seal_of(doc)
        (folder / "images.json").write_text(json.dumps(doc))
    return SimpleNamespace(
        id=exp.id, experiment=exp, environment=env, path=folder, file=lambda name: folder / name
    )


# --------------------------------------------------------------------------- summary


def test_outcome_names_the_differing_metrics_and_the_summary_is_not_ok():
    report = {
        "experiment": "a" * 12,
        "name": "noisy",
        "reproduced": False,
        "differences": ["metric loss in metrics.json: recorded 0.1, got 0.7"],
        "metrics": [
            {"file": "metrics.json", "key": "loss", "status": "differs"},
            {"file": "metrics.json", "key": "epochs", "status": "same"},
        ],
    }
    out = Outcome.from_report(report, seconds=3.0, where="local")
    assert out.status == "differs" and out.differing == ("metrics.json:loss",)
    ok = Outcome.from_report(
        {"experiment": "b" * 12, "reproduced": True, "differences": [], "metrics": []},
        seconds=1.0,
        where="local",
    )
    bad = Outcome.failure(
        "c" * 12, "broken", "progress\nerror: no index serves six==99.0\n  fix: lock it again"
    )
    assert bad.reason == "no index serves six==99.0"
    s = Summary(on="local", outcomes=[ok, out, bad])
    assert not s.ok and s.counts() == {"reproduced": 1, "differs": 1, "failed": 1}
    text = summary_text(s)
    assert "DIFFERS" in text and "metrics.json:loss" in text and "no index serves" in text
    assert Summary(on="local", outcomes=[ok]).ok and not Summary(on="local").ok


# --------------------------------------------------------------------------- slurm


def _script(tmp_path: Path, **kw: Any) -> str:
    args: dict[str, Any] = dict(
        repo=str(tmp_path / "repo"), results=tmp_path / "res", python=sys.executable
    )
    args.update(kw)
    tasks = args.pop("tasks", [slurm.Task("a" * 12, "one"), slurm.Task("b" * 12, "two", IMAGE)])
    return slurm.render_script(tasks, **args)


def test_sbatch_script_is_one_array_with_the_throttle_and_valid_bash(tmp_path: Path):
    text = _script(tmp_path, throttle=3, run_args=["--rtol", "0.01"], time_limit="1:00:00")
    assert "#SBATCH --array=0-1%3\n" in text and "#SBATCH --time=1:00:00\n" in text
    assert f"IDS=({'a' * 12} {'b' * 12})" in text and f"'' {IMAGE}" in text
    assert "--rtol 0.01" in text
    done = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_sbatch_script_quotes_a_hostile_repository_path(tmp_path: Path):
    text = _script(tmp_path, repo="/tmp/x'; touch /tmp/pwned; '")
    assert "REPO='/tmp/x'\"'\"'; touch /tmp/pwned; '\"'\"''" in text
    out = subprocess.run(
        ["bash", "-c", text.split("REPO=", 1)[1].split("\n", 1)[0].join(["printf %s ", ""])],
        capture_output=True,
        text=True,
    )
    assert out.stdout == "/tmp/x'; touch /tmp/pwned; '"


@pytest.mark.parametrize(
    "tasks, field",
    [
        ([slurm.Task("a" * 11 + ";", "x")], "experiment id"),
        ([slurm.Task("a" * 12, "x", "evil;rm -rf /")], "published image"),
    ],
)
def test_sbatch_script_refuses_values_outside_their_grammar(tmp_path: Path, tasks, field):
    with refuses(ValidationError, field=field):
        _script(tmp_path, tasks=tasks)


def test_sbatch_script_refuses_a_results_folder_a_directive_cannot_carry(tmp_path: Path):
    with refuses(UsageError, names=["results folder", str(tmp_path / "with space")]):
        _script(tmp_path, results=tmp_path / "with space")
    with refuses(UsageError, names=["--partition", "debug --wrap=id"]):
        _script(tmp_path, partition="debug --wrap=id")
    # git clone would take it for an option (--upload-pack runs a program)
    with refuses(UsageError, names=["--repo", "starts with '-'"]):
        _script(tmp_path, repo="--upload-pack=touch /tmp/x")
    assert 'git clone -q -- "$REPO"' in _script(tmp_path)


def test_task_outcomes_from_files_and_scheduler_states(tmp_path: Path):
    t = slurm.Task("a" * 12, "one")
    (tmp_path / "0.failed").write_text(
        "no container engine on node n1: neither docker, podman nor apptainer is on PATH\n"
    )
    out = slurm.outcome_of(t, 0, "7", tmp_path, {"JobState": "FAILED", "RunTime": "00:00:02"})
    assert out.status == FAILED and out.reason.startswith("no container engine on node n1")
    assert out.seconds == 2.0
    out = slurm.outcome_of(t, 1, "7", tmp_path, {"JobState": "CANCELLED"})
    assert "cancelled by the scheduler" in out.reason and "7_1" in out.reason
    (tmp_path / "2.json").write_text(json.dumps({"experiment": "b" * 12, "reproduced": True}))
    out = slurm.outcome_of(t, 2, "7", tmp_path, {"JobState": "COMPLETED"})
    assert out.status == FAILED and "bbbbbbbbbbbb" in out.reason  # not the experiment asked


# --------------------------------------------------------------------------- kubernetes


def _validate_strict(tmp_path: Path, docs: str) -> subprocess.CompletedProcess:
    path = tmp_path / "jobs.yaml"
    path.write_text(docs)
    exe = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run(
        [str(exe), "--strict", "-k", "1.30.0", str(path)], capture_output=True, text=True
    )


def test_job_manifests_pass_the_strict_schema_and_the_client_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REPROBOX_REGISTRIES", "127.0.0.1:5000")
    stored = _stored(tmp_path, images=("127.0.0.1:5000/team/exp", "abc", DIGEST))
    assert published_image(stored) == IMAGE
    job = k8s.job_manifest(
        stored,
        require_published(stored),
        repo="https://git.example/r.git",
        timeout=600,
        suffix="123456",
    )
    docs = k8s.to_yaml([job])
    done = _validate_strict(tmp_path, docs)
    assert done.returncode == 0, done.stdout + done.stderr
    from kubernetes.client import ApiClient

    model = ApiClient().deserialize(json.dumps(yaml.safe_load(docs)), "V1Job", "application/json")
    c = model.spec.template.spec.containers[0]
    assert c.image == IMAGE and c.security_context.allow_privilege_escalation is False
    assert c.resources is None  # no GPU captured, none asked
    env = {e.name: e.value for e in c.env}
    assert env["REPROBOX_COMMAND"] == "python train.py --lr 0.1"  # data, never in the script
    assert "python train.py" not in c.command[2] and c.working_dir == "/work/repo/src"
    assert model.spec.template.spec.init_containers[0].env[1].value == "a" * 40
    assert model.spec.active_deadline_seconds == 600 and model.spec.backoff_limit == 0


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path):
    """The check above can fail: a misspelt field is refused by the strict schema."""
    stored = _stored(tmp_path)
    job = k8s.job_manifest(stored, IMAGE, repo="https://git.example/r.git")
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    done = _validate_strict(tmp_path, k8s.to_yaml([job]))
    assert done.returncode != 0 and "imagePullPolicyy" in done.stdout + done.stderr


def test_gpus_are_requested_only_when_captured_and_asked(tmp_path: Path):
    two = _stored(tmp_path, gpus=2)
    limits = k8s.job_manifest(two, IMAGE, repo="r", gpus="all")["spec"]["template"]["spec"][
        "containers"
    ][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 2}
    assert (
        "resources"
        not in k8s.job_manifest(two, IMAGE, repo="r")["spec"]["template"]["spec"]["containers"][0]
    )
    none = _stored(tmp_path, gpus=0)
    assert (
        "resources"
        not in k8s.job_manifest(none, IMAGE, repo="r", gpus="1")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )


def test_kubernetes_refuses_an_unpublished_experiment_naming_push(tmp_path: Path):
    stored = _stored(tmp_path)
    with refuses(UsageError, names=f"reprobox push {stored.id}"):
        require_published(stored)
    with refuses(UsageError, names=["127.0.0.1:5000/team/exp:latest", "not pinned by digest"]):
        k8s.job_manifest(stored, "127.0.0.1:5000/team/exp:latest", repo="r")


def test_kubernetes_refuses_a_repository_url_with_credentials(tmp_path: Path):
    stored = _stored(tmp_path)
    with refuses(UsageError, names="--repo carries credentials") as err:
        k8s.job_manifest(stored, IMAGE, repo="https://ci:s3cret@git.example/r.git")
    assert "s3cret" not in err.value.message + (err.value.hint or "")


def test_kubernetes_refuses_a_hostile_publication_record(tmp_path: Path):
    from reprobox.errors import RecordRefused

    stored = _stored(tmp_path, images=("127.0.0.1:5000/team/exp", "x;id", DIGEST))
    with refuses(RecordRefused, names="images.json"):
        published_image(stored)


def test_results_are_read_back_from_the_pod_log(tmp_path: Path):
    import base64

    stored = _stored(tmp_path)
    blob = base64.b64encode(json.dumps({"acc": 0.5}).encode()).decode()
    log = f"training...\nREPROBOX-EXIT 0\nREPROBOX-FILE metrics.json {blob}\n"
    report = k8s.report_from_log(stored, log)
    assert not report["reproduced"] and "acc" in report["differences"][0]
    blob = base64.b64encode(json.dumps({"acc": 0.9}).encode()).decode()
    report = k8s.report_from_log(stored, f"REPROBOX-EXIT 0\nREPROBOX-FILE metrics.json {blob}\n")
    assert report["reproduced"]
    report = k8s.report_from_log(stored, "killed\n")
    assert "before reporting its exit status" in report["differences"][0]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    from reprobox.store import Store

    from ...factories import make_env, make_exp

    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path)
    env = make_env()
    a = store.save(make_exp(env, name="one"), env)
    b = store.save(make_exp(env, name="two", acc=0.5), env)
    return a.id, b.id


def _cli(*args: str) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from reprobox.cli import main

    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_cli_slurm_dry_run_prints_one_array_with_the_throttle(two):
    code, out, err = _cli("run", "--all", "--on", "slurm", "--jobs", "2", "--dry-run")
    assert code == 0, err
    assert out.startswith("#!/bin/bash") and "#SBATCH --array=0-1%2\n" in out
    assert f"IDS=({two[0]} {two[1]})" in out or f"IDS=({two[1]} {two[0]})" in out


def test_cli_kubernetes_dry_run_refuses_an_unpublished_experiment(two):
    code, out, err = _cli("run", two[0], two[1], "--on", "kubernetes", "--dry-run")
    assert code == 2 and out == ""
    assert "has no image published to a registry this machine trusts" in err
    assert "reprobox push" in err


def test_kubernetes_never_uses_an_image_from_a_registry_this_machine_does_not_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.setenv("REPROBOX_REGISTRIES", "registry.example.org")
    stored = _stored(tmp_path, images=("127.0.0.1:5000/team/exp", "abc", DIGEST))
    assert published_image(stored) is None
    with refuses(UsageError, names=[f"experiment {stored.id}", "registry this machine trusts"]):
        require_published(stored)


def test_cli_refuses_bad_fan_out_input(two):
    code, _, err = _cli("run")
    assert code == 2 and "no experiment given" in err
    code, _, err = _cli("run", two[0], two[1], "--keep")
    assert code == 2 and "--keep" in err
    code, _, err = _cli("run", two[0], "--all")
    assert code == 2 and "--all" in err
    for jobs in ("0", "99999999999999999999"):
        code, _, err = _cli("run", two[0], two[1], "--jobs", jobs, "--dry-run", "--on", "slurm")
        assert code == 2 and "--jobs" in err
    code, _, err = _cli("run", two[0], "nosuch", "--dry-run")
    assert code == 2 and "nosuch" in err
    for bad in ("nan", "inf", "1e999", "-1"):  # NaN and infinity passed `timeout <= 0`
        code, _, err = _cli("run", two[0], two[1], "--dry-run", "--timeout", bad)
        assert code == 2 and "--timeout" in err and "internal error" not in err, (bad, err)
    # what each run refuses is refused before a plan is printed (it was printed into the
    # sbatch script, or each run FAILED with exit 1)
    for option, value in [
        ("--rtol", "nan"),
        ("--memory", "8x"),
        ("--gpus", ","),
        ("--pids-limit", "1"),
        ("--ignore-output", "../x"),
        ("--network", ""),
    ]:
        for on in ("local", "slurm"):
            code, out, err = _cli("run", two[0], two[1], "--dry-run", "--on", on, option, value)
            assert code == 2 and out == "" and "internal error" not in err, (option, on, err)
            assert option in err, (option, on, err)  # the refusal names what it refused


@pytest.mark.parametrize(
    "report",
    [
        "[1, 2]",
        '"reproduced"',
        json.dumps({"experiment": "a" * 12, "reproduced": True, "seconds": "soon"}),
        json.dumps({"experiment": "a" * 12, "reproduced": True, "differences": "none"}),
        json.dumps({"experiment": "a" * 12, "reproduced": True, "metrics": 5}),
    ],
)
def test_a_report_of_the_wrong_shape_is_a_failure_or_a_difference_never_a_crash(
    tmp_path: Path, report: str
) -> None:
    t = slurm.Task("a" * 12, "one")
    (tmp_path / "0.json").write_text(report)
    out = slurm.outcome_of(t, 0, "7", tmp_path, {"JobState": "COMPLETED", "RunTime": "00:00:03"})
    assert out.seconds == 3.0
    data = json.loads(report)
    if not isinstance(data, dict):
        assert out.status == FAILED and "unreadable report" in out.reason
    elif data.get("differences") == "none":
        assert out.status != REPRODUCED and "not a list" in out.differences[0]
    else:
        assert out.status == REPRODUCED  # the odd field is left out, not taken for a verdict


def test_the_reported_seconds_count_when_the_scheduler_gives_none(tmp_path: Path) -> None:
    t = slurm.Task("a" * 12, "one")
    (tmp_path / "0.json").write_text(json.dumps({"experiment": "a" * 12, "seconds": 4.5}))
    assert slurm.outcome_of(t, 0, "7", tmp_path, {"JobState": "COMPLETED"}).seconds == 4.5
    (tmp_path / "0.json").write_text(json.dumps({"experiment": "a" * 12, "seconds": True}))
    assert slurm.outcome_of(t, 0, "7", tmp_path, {"JobState": "COMPLETED"}).seconds == 0.0


def test_kubernetes_refuses_a_repo_git_clone_would_read_as_an_option(tmp_path: Path):
    stored = _stored(tmp_path)
    with refuses(UsageError, names=["--repo", "starts with '-'"]):
        k8s.job_manifest(stored, IMAGE, repo="--upload-pack=touch /tmp/x")
    assert 'git clone -q -- "$REPROBOX_REPO"' in k8s.CHECKOUT


def test_fan_out_options_are_refused_for_one_experiment_run_here(two):
    """They were silently ignored: --timeout 5 on one run did not stop it."""
    for option, value in [
        ("--timeout", "5"),
        ("--repo", "https://git.example/r.git"),
        ("--namespace", "ml"),
        ("--partition", "gpu"),
        ("--time-limit", "1:00:00"),
    ]:
        code, _, err = _cli("run", two[0], option, value)
        assert code == 2 and option in err and "fan-out" in err, (option, err)
