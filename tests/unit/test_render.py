"""One renderer for every command: the human form and the --json form of a command come from the
same result object, and the CLI prints what reprobox.render makes of what reprobox.api returns."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reprobox import api
from reprobox import render as render_mod
from reprobox.api import (
    BaseImage,
    Captured,
    Diagnosis,
    FanOutPlan,
    Locked,
    PrComment,
    Pushed,
)
from reprobox.build import BuildResult
from reprobox.cli import main
from reprobox.outcome import DIFFERS, SAME, MetricCheck, Tolerance
from reprobox.doctor import Check
from reprobox.fanout.summary import FAILED, REPRODUCED, Outcome, Summary
from reprobox.lock.result import LockResult, VersionChange
from reprobox.model import RunUsage
from reprobox.registry import Publication
from reprobox.render import ERR, OUT, PROGRESS, WARNING, Piece, json_text, render
from reprobox.run import RunRecord
from reprobox.store import Store, StoredExperiment
from reprobox.verify import EnvDifference, VerifyReport

from ..factories import make_env, make_exp


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def two(repo: Path) -> tuple[StoredExperiment, StoredExperiment]:
    store = Store(repo)
    env = make_env()
    newer = make_env(numpy="2.0.0")
    return (
        store.save(make_exp(env, name="baseline"), env),
        store.save(make_exp(newer, name="upgrade", acc=0.91), newer),
    )


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def text_of(result: Any, to: str = OUT) -> str:
    """The human form: the pieces that go to ``to``, joined as they would be printed."""
    return "".join(
        p.text + ("\n" if p.newline else "") for p in render(result, "text") if p.to == to
    )


def json_of(result: Any) -> Any:
    pieces = render(result, "json")
    assert [p.to for p in pieces][-1] == OUT
    return json.loads(pieces[-1].text)


def patch_api(monkeypatch: pytest.MonkeyPatch, name: str, result: Any) -> list[tuple]:
    """``reprobox.api.<name>`` answers ``result``; the calls it got are recorded."""
    calls: list[tuple] = []

    def answer(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return result

    monkeypatch.setattr(api, name, answer)
    return calls


# --------------------------------------------------------------------------- the renderer


def test_json_text_is_sorted_indented_and_inert() -> None:
    text = json_text({"b": "\x1b[31mred\u202e", "a": 1})
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert "\x1b" not in text and "\u202e" not in text
    assert json.loads(text) == {"a": 1, "b": "\x1b[31mred\u202e"}  # same data, inert text


def test_json_text_escapes_everything_when_a_value_holds_a_lone_surrogate() -> None:
    text = json_text({"path": "caf\udce9.txt", "name": "café"})
    text.encode("utf-8")  # printable anywhere
    assert json.loads(text) == {"path": "caf\udce9.txt", "name": "café"}


def test_unknown_results_and_formats_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="no renderer for dict"):
        render({"id": "x"})
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        render(BaseImage("python:3.11.7-slim-bookworm", "3.11.7", "bookworm"), "yaml")
    with pytest.raises(ValueError, match="BaseImage has no markdown form"):
        render(BaseImage("python:3.11.7-slim-bookworm", "3.11.7", "bookworm"), "markdown")


def test_the_table_names_result_types_that_exist_where_it_says() -> None:
    """The stages' result types are named in the table, not imported: a type that moved without
    the table following would go unrendered."""
    names = list(render_mod._renderers())
    assert "reprobox.run.RunRecord" in names and "reprobox.diff.model.EnvDiff" in names
    for key in names:
        module, _, name = key.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        assert isinstance(cls, type), f"{key} names no class"
        assert f"{cls.__module__}.{cls.__qualname__}" == key


def test_printing_a_listing_imports_no_stage() -> None:
    stages = ("reprobox.backends", "reprobox.build", "reprobox.run", "reprobox.verify")
    code = (
        "import sys\n"
        "from reprobox import api\n"
        "from reprobox.render import render\n"
        "render(api.Listing(experiments=()), 'json')\n"
        "render(api.Listing(experiments=()), 'text')\n"
        f"print(sorted(m for m in {stages!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"rendering `ls` imported {done.stdout.strip()}"


# --------------------------------------------------------------------------- ls / show


def test_ls_text_and_json_from_one_listing(two: tuple[StoredExperiment, StoredExperiment]) -> None:
    a, b = two
    listing = api.ls()
    text = text_of(listing)
    header, *rows = text.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "PYTHON", "PKGS", "COMMIT", "COMMAND"]
    assert [r.split()[:2] for r in rows] == [[a.id, "baseline"], [b.id, "upgrade"]]
    data = json_of(listing)
    assert [(r["id"], r["name"], r["packages"], r["commit"]) for r in data] == [
        (a.id, "baseline", 2, "a" * 10),
        (b.id, "upgrade", 2, "a" * 10),
    ]
    assert invoke("ls") == (0, text, "")
    assert invoke("ls", "--json")[1] == json_text(data)


def test_ls_names_a_skipped_folder_in_both_forms_and_says_when_there_is_none(repo: Path) -> None:
    listing = api.Listing(
        experiments=(), skipped=("experiment 1234abcd: experiment.json is not valid JSON",)
    )
    assert [(p.to, p.text) for p in render(listing)] == [
        (WARNING, "experiment 1234abcd: experiment.json is not valid JSON"),
        (ERR, 'no experiments yet: record one with `reprobox capture --cmd "python train.py"`'),
    ]
    assert [(p.to, p.text) for p in render(listing, "json")] == [
        (WARNING, "experiment 1234abcd: experiment.json is not valid JSON"),
        (OUT, "[]\n"),
    ]


def test_show_text_and_json_from_one_result(two: tuple[StoredExperiment, StoredExperiment]) -> None:
    a, _b = two
    shown = api.show(a.id[:6])
    assert set(shown.files) >= {"experiment.json", "environment.json"}
    text, data = text_of(shown), json_of(shown)
    assert f"experiment  {a.id}  (baseline)" in text and "accuracy=0.93" in text
    assert "files       " in text and "environment.json" in text
    assert data["experiment"]["id"] == a.id and data["path"] == str(a.path)
    assert data["experiment"]["metrics"] == {"metrics.json": {"accuracy": 0.93}}
    assert invoke("show", a.id) == (0, text, "")
    assert invoke("show", a.id, "--json")[1] == json_text(data)


def test_show_quotes_a_file_name_that_holds_a_control_character(
    two: tuple[StoredExperiment, StoredExperiment],
) -> None:
    a, _b = two
    shown = api.Shown(stored=a, files=("environment.json", "evil\x1b[2Jname"))
    line = text_of(shown).splitlines()[-1]
    assert "'evil\\x1b[2Jname'" in line and "\x1b" not in line
    assert json_of(shown)["path"] == str(a.path)


# --------------------------------------------------------------------------- capture / record


def _captured(stored: StoredExperiment, **kw: Any) -> Captured:
    exp = stored.experiment
    return Captured(
        id=exp.id,
        name=exp.name,
        path=stored.path,
        environment_digest=exp.environment_digest,
        stored=stored,
        **kw,
    )


def test_capture_text_and_json_from_one_result(
    two: tuple[StoredExperiment, StoredExperiment],
) -> None:
    a, _b = two
    captured = _captured(
        a,
        warnings=("a warning",),
        locked=True,
        new=False,
        run=RunUsage(exit_status=3),
        image="reprobox/x:1",
    )
    pieces = render(captured)
    assert [p.to for p in pieces] == [PROGRESS, OUT]  # warnings went out as they arose
    assert pieces[0].text == (
        "captured baseline: 2 packages, 1 system packages, locked (identical "
        "to an existing capture); the command exited with status 3"
    )
    assert pieces[1].text == a.id
    data = json_of(captured)
    assert (
        data["id"],
        data["packages"],
        data["system_packages"],
        data["locked"],
        data["new"],
        data["exit_status"],
        data["image"],
        data["warnings"],
    ) == (a.id, 2, 1, True, False, 3, "reprobox/x:1", ["a warning"])
    assert "conda_packages" not in data


def test_capture_and_record_print_the_result_of_api_record(
    two: tuple[StoredExperiment, StoredExperiment], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _b = two
    calls = patch_api(monkeypatch, "record", _captured(a, run=RunUsage(exit_status=0)))
    code, out, err = invoke("capture", "--cmd", "python train.py", "--no-lock")
    assert (code, out) == (0, a.id + "\n")
    assert "captured baseline: 2 packages" in err and "exited with status 0" in err
    code, out, _ = invoke("record", "--json", "--", "python", "train.py")
    assert code == 0 and json.loads(out)["exit_status"] == 0 and json.loads(out)["id"] == a.id
    # capture goes through api.record: no command run; record hands its argv over
    assert calls[0][0] == (None,) and calls[0][1]["command"] == "python train.py"
    assert calls[0][1]["lock"] is False
    assert calls[1][0] == (["python", "train.py"],) and calls[1][1]["command_stdout_to_stderr"]


# --------------------------------------------------------------------------- lock / build / base


def test_lock_text_and_json_from_one_result(
    two: tuple[StoredExperiment, StoredExperiment], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    result = LockResult(
        "",
        "",
        warnings=("numpy has no wheel for arm64",),
        changed_versions=(VersionChange("numpy", "1.26.4", "2.0.0"),),
        files={"requirements.lock": "", "pylock.toml": ""},
        platform="linux/arm64",
    )
    locked = Locked(id=b.id, previous_id=a.id, stored=b, result=result)
    assert [(p.to, p.text) for p in render(locked)] == [
        (WARNING, "numpy has no wheel for arm64"),
        (WARNING, "version changed for linux/arm64: numpy 1.26.4 -> 2.0.0"),
        (OUT, "wrote pylock.toml, requirements.lock"),
        (
            WARNING,
            f"the id seals every file of a capture: experiment {a.id} is now {b.id} "
            "(commit the new folder; the old one was removed)",
        ),
        (OUT, b.id),
    ]
    data = json_of(locked)
    assert (data["id"], data["previous_id"], data["resealed"], data["files"]) == (
        b.id,
        a.id,
        True,
        ["pylock.toml", "requirements.lock"],
    )
    assert data["changed_versions"] == ["numpy 1.26.4 -> 2.0.0"]
    patch_api(monkeypatch, "lock", locked)
    code, out, err = invoke("lock", a.id)
    assert (code, out) == (0, f"wrote pylock.toml, requirements.lock\n{b.id}\n")
    assert "warning: version changed for linux/arm64: numpy 1.26.4 -> 2.0.0" in err
    code, out, err = invoke("lock", a.id, "--json")
    assert code == 0 and json.loads(out) == data and f"is now {b.id}" in err


def _build_result(**kw: Any) -> BuildResult:
    return BuildResult(
        "reprobox/demo:abc",
        "sha256:" + "1" * 64,
        "FROM python:3.11.7\n",
        "python:3.11.7-slim-bookworm",
        "auto",
        "buildkit (docker)",
        "uv",
        {"total": 2.0},
        **kw,
    )


def test_build_text_and_json_from_one_result(
    two: tuple[StoredExperiment, StoredExperiment], monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _build_result()
    assert text_of(built) == "reprobox/demo:abc\n"
    data = json_of(built)
    assert (data["tag"], data["image_id"], data["dry_run"]) == (
        "reprobox/demo:abc",
        "sha256:" + "1" * 64,
        False,
    )
    assert "dockerfile" not in data
    dry = _build_result(dry_run=True)
    assert text_of(dry) == "FROM python:3.11.7\n"
    assert json_of(dry)["dockerfile"] == "FROM python:3.11.7\n"
    patch_api(monkeypatch, "build", built)
    assert invoke("build", "latest") == (0, "reprobox/demo:abc\n", "")
    assert json.loads(invoke("build", "latest", "--json")[1]) == data


def test_build_dry_run_prints_the_dockerfile_in_both_forms(
    two: tuple[StoredExperiment, StoredExperiment],
) -> None:
    a, _b = two
    code, out, _ = invoke("build", a.id, "--dry-run")
    assert code == 0 and "\nFROM " in out and a.id in out  # the label names the experiment
    code, js, _ = invoke("build", a.id, "--dry-run", "--json")
    data = json.loads(js)
    assert code == 0 and data["dry_run"] is True and data["dockerfile"] == out
    assert data["tag"].endswith(":" + a.id) and data["image_id"] is None


def test_base_text_and_json_from_one_result(monkeypatch: pytest.MonkeyPatch) -> None:
    image = BaseImage("python:3.11.7-slim-bookworm", "3.11.7", "bookworm")
    assert text_of(image) == "python:3.11.7-slim-bookworm\n"
    assert json_of(image) == {
        "tag": "python:3.11.7-slim-bookworm",
        "python": "3.11.7",
        "os": "bookworm",
    }
    calls = patch_api(monkeypatch, "base", image)
    assert invoke("base", "--python", "3.11.7") == (0, "python:3.11.7-slim-bookworm\n", "")
    assert json.loads(invoke("base", "--python", "3.11.7", "--json")[1])["os"] == "bookworm"
    assert calls[0][0] == ("3.11.7", "bookworm")


# --------------------------------------------------------------------------- run / verify


def _run_record(**kw: Any) -> RunRecord:
    return RunRecord(
        experiment_id="abcdef123456",
        experiment_name="baseline",
        started="2026-11-30T10:00:00Z",
        backend="venv",
        backend_reason="asked for",
        environment="/tmp/venv",
        command="python train.py",
        command_kind="shell",
        exit_code=0,
        tolerance=Tolerance(),
        **kw,
    )


def test_run_text_and_json_from_one_record(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    differs = _run_record(
        metrics=(MetricCheck("metrics.json", "accuracy", 0.93, 0.91, DIFFERS),),
        differences=("metric accuracy in metrics.json: recorded 0.93, rerun gave 0.91",),
    )
    text, data = text_of(differs), json_of(differs)
    assert text.startswith("DIFFERS: experiment abcdef123456 (baseline)")
    assert "  - metric accuracy in metrics.json: recorded 0.93, rerun gave 0.91" in text
    assert (data["verdict"], data["reproduced"], data["differences"]) == (
        "differs",
        False,
        list(differs.differences),
    )
    assert data["metrics"][0]["observed"] == 0.91
    patch_api(monkeypatch, "run", differs)
    assert invoke("run", "abcdef123456", "--backend", "venv") == (1, text, "")
    code, out, _ = invoke("run", "abcdef123456", "--backend", "venv", "--json")
    assert code == 1 and json.loads(out) == data
    same = _run_record(metrics=(MetricCheck("metrics.json", "accuracy", 0.93, 0.93, SAME),))
    patch_api(monkeypatch, "run", same)
    code, out, _ = invoke("run", "abcdef123456")
    assert code == 0 and out.startswith("REPRODUCED: experiment abcdef123456")
    assert json.loads(invoke("run", "abcdef123456", "--json")[1])["reproduced"] is True


def test_fan_out_summary_and_dry_run_from_one_result(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = Summary(
        on="local",
        outcomes=[
            Outcome("abcdef123456", "baseline", REPRODUCED, 1.5),
            Outcome.failure("bcdef1234567", "other", "no image"),
        ],
        seconds=3.0,
    )
    text, data = text_of(summary), json_of(summary)
    assert "2 experiment(s) on local: 1 reproduced, 0 differ, 1 failed" in text
    assert "bcdef1234567" in text and "no image" in text
    assert data["counts"] == {REPRODUCED: 1, "differs": 0, FAILED: 1} and data["ok"] is False
    assert [o["experiment"] for o in data["experiments"]] == ["abcdef123456", "bcdef1234567"]
    patch_api(monkeypatch, "fan_out", summary)
    assert invoke("run", "--all") == (1, text, "")
    assert json.loads(invoke("run", "--all", "--json")[1]) == data
    plan = FanOutPlan(on="slurm", text="#!/bin/bash\nsbatch ...\n")
    assert text_of(plan) == plan.text
    assert json_of(plan) == {"on": "slurm", "dry_run": True, "submission": plan.text}
    patch_api(monkeypatch, "fan_out", plan)
    assert invoke("run", "--all", "--on", "slurm", "--dry-run") == (0, plan.text, "")
    assert json.loads(invoke("run", "--all", "--dry-run", "--json")[1])["submission"] == plan.text


def test_verify_text_and_json_from_one_report(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = VerifyReport(
        experiment_id="abcdef123456",
        experiment_name="baseline",
        backend="docker",
        backend_reason="daemon answers",
        environment="reprobox/demo:abc",
        expected_digest="sha256:" + "2" * 64,
        interpreter="cpython 3.11.7",
        differences=(
            EnvDifference(
                "package", "numpy", "1.26.4", "2.0.0", "numpy 1.26.4 was installed as 2.0.0"
            ),
        ),
        packages_checked=2,
        substitutions=("system package libc6: 2.36-9 -> 2.36-10",),
        strict=True,
    )
    text, data = text_of(report), json_of(report)
    assert text.startswith("DIFFERS: the rebuilt environment of abcdef123456 (baseline)")
    assert "  - numpy 1.26.4 was installed as 2.0.0" in text
    assert "(--strict: the verification fails)" in text
    assert data["differences"][0]["subject"] == "numpy" and data["identical"] is False
    assert data["substitutions"] == list(report.substitutions)
    patch_api(monkeypatch, "verify", report)
    assert invoke("verify", "latest") == (1, text, "")
    code, out, _ = invoke("verify", "latest", "--json")
    assert code == 1 and json.loads(out) == data


# --------------------------------------------------------------------------- push


def test_push_text_and_json_from_one_result(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = Publication(
        "127.0.0.1:5000/team/demo", "abc", "sha256:" + "3" * 64, "2026-11-30T10:00:00Z"
    )
    pushed = Pushed(
        experiment="abcdef123456",
        publication=pub,
        record=repo / ".reprobox/experiments/abcdef123456/images.json",
    )
    assert text_of(pushed) == pub.reference + "\n"
    assert text_of(pushed, ERR) == (
        f"recorded in {pushed.record} (commit it: a clone pulls by digest)\n"
    )
    data = json_of(pushed)
    assert (data["experiment"], data["reference"], data["digest"], data["record"]) == (
        "abcdef123456",
        pub.reference,
        pub.digest,
        str(pushed.record),
    )
    calls = patch_api(monkeypatch, "push", pushed)
    assert invoke("push", "latest", "--registry", "127.0.0.1:5000/team")[1] == pub.reference + "\n"
    assert json.loads(invoke("push", "latest", "--json")[1]) == data
    assert calls[0][1]["registry"] == "127.0.0.1:5000/team"


# --------------------------------------------------------------------------- diff / pr / doctor


def test_diff_text_markdown_and_json_from_one_diff(
    two: tuple[StoredExperiment, StoredExperiment],
) -> None:
    a, b = two
    d = api.diff(a.id, b.id)
    text = text_of(d)
    assert "numpy" in text and "1.26.4" in text and "2.0.0" in text
    (md,) = render(d, "markdown")
    assert "numpy" in md.text and "2.0.0" in md.text and not md.newline
    data = json_of(d)
    assert data["empty"] is False
    assert [(c["name"], c["a"], c["b"]) for c in data["packages"]["upgraded"]] == [
        ("numpy", "1.26.4", "2.0.0")
    ]
    assert invoke("diff", a.id, b.id) == (0, text, "")
    assert invoke("diff", a.id, b.id, "--exit-code")[0] == 1
    assert invoke("diff", a.id, b.id, "--format", "markdown") == (0, md.text, "")
    assert invoke("diff", a.id, b.id, "--format", "json")[1] == json_text(data)


def test_pr_text_and_json_from_one_comment(two: tuple[StoredExperiment, StoredExperiment]) -> None:
    a, b = two
    comment = api.pr(b.id, a.id)
    assert (comment.experiment, comment.base) == (b.id, a.id)
    assert "numpy" in comment.markdown and "2.0.0" in comment.markdown
    assert text_of(comment) == comment.markdown
    assert json_of(comment) == {"experiment": b.id, "base": a.id, "markdown": comment.markdown}
    assert invoke("pr", b.id, "--base", a.id) == (0, comment.markdown, "")
    assert json.loads(invoke("pr", b.id, "--base", a.id, "--json")[1])["markdown"] == (
        comment.markdown
    )
    alone = PrComment(experiment=b.id, base=None, markdown="## env\n")
    assert json_of(alone)["base"] is None


def test_doctor_text_and_json_from_one_diagnosis(monkeypatch: pytest.MonkeyPatch) -> None:
    diagnosis = Diagnosis(
        checks=(
            Check("git", True, "git 2.39"),
            Check("dvc", False, "not found", fix="pip install dvc"),
        )
    )
    pieces = render(diagnosis)
    assert [(p.mark, p.text) for p in pieces] == [
        ("ok", f"{'git':<14} git 2.39"),
        ("no", f"{'dvc':<14} not found"),
        ("", "    fix: pip install dvc"),
    ]
    assert json_of(diagnosis) == [
        {"name": "git", "ok": True, "detail": "git 2.39", "fix": None},
        {"name": "dvc", "ok": False, "detail": "not found", "fix": "pip install dvc"},
    ]
    assert diagnosis.ok is False
    patch_api(monkeypatch, "doctor", diagnosis)
    code, out, _ = invoke("doctor")
    assert code == 0 and out.splitlines() == [
        f"ok  {'git':<14} git 2.39",
        f"no  {'dvc':<14} not found",
        "    fix: pip install dvc",
    ]
    assert json.loads(invoke("doctor", "--json")[1]) == json_of(diagnosis)


def test_every_api_result_type_has_a_renderer() -> None:
    """Each result an api operation returns renders both ways (no command falls outside)."""
    results: list[Any] = [
        api.Listing(experiments=()),
        BaseImage("t", "3.11.7", "bookworm"),
        FanOutPlan("local", "x\n"),
        PrComment("a", None, "m\n"),
        Diagnosis(checks=()),
        _build_result(),
        _run_record(),
        Summary(on="local"),
    ]
    for result in results:
        assert all(isinstance(p, Piece) for p in render(result))
        json.loads(render(result, "json")[-1].text)


def test_the_cli_imports_no_private_name_and_prints_only_through_the_renderer() -> None:
    """cli.py is parse -> api -> render -> exit code: it takes nothing private from another
    module, and no command formats a result itself (no json.dumps, no .to_dict, no
    .render_text in the CLI)."""
    import ast

    import reprobox.cli as cli

    source = Path(cli.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.endswith("__")
    ]
    assert private == []
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & {"to_dict", "render_text", "dumps"}
