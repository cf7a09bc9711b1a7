"""``reprobox run`` without a container: the plan, the record, the backends' pure parts, and the
orchestration on a real git repository with a backend that runs commands on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytest

from reprobox import backends as backends_mod
from reprobox import payload
from reprobox.backends import Backend, Execution, GpuPlan, Prepared, choose_backend
from reprobox.backends.venv import VenvBackend, find_interpreter, install_plan, venv_key
from reprobox.outcome import Tolerance
from reprobox.errors import (
    EngineError,
    InterpreterError,
    LockError,
    ReproboxError,
    UsageError,
    ValidationError,
)
from reprobox.model import (
    INLINE_METRICS,
    DvcInfo,
    Environment,
    Experiment,
    GitInfo,
    Interpreter,
    OutputFile,
    Package,
    PackageSource,
    sha256_hex,
)
from reprobox.run import RunRecord, _check_network, plan_run, report_file, run_experiment
from reprobox.store import Store
from reprobox.render import run_text

from ..asserts import refuses

ENV = Environment(
    interpreter=Interpreter("cpython", "3.11.7"), packages=(Package("numpy", "1.26.4"),)
)


def _exp(**kw: Any) -> Experiment:
    base: dict[str, Any] = dict(
        name="train",
        command="python train.py",
        cwd=".",
        git=GitInfo(commit="a" * 40),
        environment_digest=ENV.digest,
        created="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        metrics={"metrics.json": {"acc": 0.9}},
        outputs=(OutputFile("model.bin", "b" * 64, 3),),
        env={"PYTHONHASHSEED": "0"},
    )
    base.update(kw)
    return Experiment(**base).with_id()


# --------------------------------------------------------------------------- plan


def test_plan_of_a_shell_command_clears_stale_results_first():
    plan = plan_run(_exp(), ENV)
    assert plan.command_kind == "shell" and plan.command == "python train.py"
    assert plan.clear_before == ("metrics.json", "model.bin")
    assert plan.env == {"PYTHONHASHSEED": "0"}
    assert not plan.pull_data and not plan.replay_shim and not plan.inline_metrics


def test_plan_of_a_dvc_pipeline_pulls_data_and_lets_dvc_clear_outputs():
    exp = _exp(command="dvc repro", command_kind="dvc", dvc=DvcInfo(stages=("train",)))
    plan = plan_run(exp, ENV)
    assert plan.pull_data and plan.command_kind == "dvc" and plan.clear_before == ()


def test_plan_refuses_an_experiment_without_command():
    with refuses(UsageError, names=["nothing to rerun", "--cmd"]):
        plan_run(_exp(command=None, command_kind="none"), ENV)


def test_plan_refuses_a_hostile_replayed_variable():
    with refuses(ValidationError, field="env.LD_PRELOAD"):
        plan_run(_exp(env={"LD_PRELOAD": "/tmp/evil.so"}), ENV)


def test_plan_refuses_an_output_outside_the_checkout():
    # plan_run names the field "output" where validate_experiment says "outputs[0].path".
    with refuses(ValidationError, field="output", names="'../etc/passwd'"):
        plan_run(_exp(outputs=(OutputFile("../etc/passwd", "b" * 64, 1),)), ENV)


def test_plan_notes_untracked_files():
    plan = plan_run(_exp(git=GitInfo(commit="a" * 40, untracked=("notes.txt",))), ENV)
    assert "notes.txt" in plan.notes[0]


@pytest.mark.parametrize(
    "source, shim",
    [
        (PackageSource("directory", path="/home/u/reprobox", editable=True), True),
        (PackageSource("directory", path="tools/reprobox", in_repo=True), False),
        (PackageSource("index"), False),
        (None, False),
    ],
)
def test_replay_stand_in_only_when_reprobox_cannot_be_rebuilt(source, shim):
    pkgs = (Package("numpy", "1.26.4"),)
    if source is not None:
        pkgs += (Package("reprobox", "0.1.0", source),)
    env = Environment(interpreter=ENV.interpreter, packages=pkgs)
    exp = _exp(metrics={INLINE_METRICS: {"acc": 1.0}}, environment_digest=env.digest)
    plan = plan_run(exp, env)
    assert plan.inline_metrics and plan.replay_shim is shim


# --------------------------------------------------------------------------- record


def _record(**kw: Any) -> RunRecord:
    base: dict[str, Any] = dict(
        experiment_id="0123456789ab",
        experiment_name="train",
        started="2026-01-01T00:00:00Z",
        backend="venv",
        backend_reason="--backend venv",
        environment="virtualenv /x",
        command="python train.py",
        command_kind="shell",
        exit_code=0,
        tolerance=Tolerance(),
    )
    base.update(kw)
    return RunRecord(**base)


def test_record_verdicts_and_json():
    ok = _record()
    assert ok.reproduced and ok.verdict == "reproduced"
    bad = _record(differences=("metric acc in metrics.json: recorded 0.9, rerun gave 0.8",))
    data = json.loads(json.dumps(bad.to_dict(), allow_nan=False))
    assert data["schema"] == "reprobox.run/2"
    assert data["verdict"] == "differs" and data["reproduced"] is False
    assert run_text(bad).splitlines()[:3] == [
        "DIFFERS: experiment 0123456789ab (train)",
        "1 difference(s):",
        "  - metric acc in metrics.json: recorded 0.9, rerun gave 0.8",
    ]


def test_report_files_never_overwrite_each_other(tmp_path: Path):
    import datetime as dt

    store = Store(tmp_path)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    first = report_file(store, "0123456789ab", when)
    assert first.name == "0123456789ab-20260102T030405Z.json"
    assert first.parent == tmp_path / ".reprobox" / "local" / "runs"  # local, git-ignored state
    store.write_run_report(first, "{}")
    assert report_file(store, "0123456789ab", when).name == "0123456789ab-20260102T030405Z-2.json"


@pytest.mark.parametrize("bad", ["a b", "container:abc", "-x", "x" * 200])
def test_bad_network_names(bad):
    with refuses(UsageError, names=["--network", bad[:40]]):
        _check_network(bad)


def test_good_network_names():
    for ok in ("none", "bridge", "host", "my-net_1"):
        _check_network(ok)


# --------------------------------------------------------------------------- backends


class _Engine:
    def __init__(self, up: bool) -> None:
        self.up = up

    def available(self) -> bool:
        return self.up


def test_choose_backend_reports_why():
    b, why = choose_backend("auto", engine=_Engine(True))
    assert b.name == "docker" and why.startswith("auto:")
    # the report names the engine the container backend runs on (podman when no daemon answers)
    for engine_name, said in (("docker", "the Docker daemon"), ("podman", "podman")):
        engine = _Engine(True)
        engine.name = engine_name  # type: ignore[attr-defined]
        b, why = choose_backend("auto", engine=engine)
        assert b.name == "docker" and why == f"auto: {said} answered"
    b, why = choose_backend("auto", engine=_Engine(False))
    assert b.name == "venv" and "no container engine" in why
    b, why = choose_backend("venv", engine=_Engine(True))
    assert b.name == "venv" and why == "--backend venv"
    with refuses(EngineError, names="--backend venv"):
        choose_backend("docker", engine=_Engine(False))
    with refuses(UsageError, names="'podman'"):
        choose_backend("podman")


def test_install_plan_splits_what_no_index_serves():
    env = Environment(
        interpreter=ENV.interpreter,
        packages=(
            Package("numpy", "1.26.4"),
            Package(
                "tool",
                "1.0",
                PackageSource(
                    "vcs",
                    vcs="git",
                    url="https://example.org/t.git",
                    commit="c" * 40,
                    subdirectory="py",
                ),
            ),
            Package(
                "blob",
                "2.0",
                PackageSource(
                    "archive", url="https://example.org/blob-2.0.tar.gz", hash="sha256=" + "d" * 64
                ),
            ),
            Package(
                "mine",
                "0.1",
                PackageSource("directory", path="src/mine", editable=True, in_repo=True),
            ),
        ),
    )
    plan = install_plan(env)
    # installed offline from the host's wheelhouse, where the host fetched them
    assert plan.external == (
        "blob @ file://{wheels}/blob-2.0.tar.gz",
        f"tool @ file://{{wheels}}/tool-1.0-{'c' * 12}.tar.gz",
    )
    assert [(s.name, s.kind, s.hash) for s in plan.sources] == [
        ("blob", "archive", "sha256=" + "d" * 64),
        ("tool", "vcs", None),
    ]
    assert plan.sources[1].subdirectory == "py"
    assert plan.in_repo == (("src/mine", True),)
    outside = Environment(
        interpreter=ENV.interpreter,
        packages=(Package("elsewhere", "0.2", PackageSource("directory", path="/opt/elsewhere")),),
    )
    with refuses(UsageError, names=["package elsewhere 0.2", "/opt/elsewhere"]) as exc:
        install_plan(outside)
    assert exc.value.exit_code == 2


def test_install_plan_refuses_a_hostile_vcs_url():
    env = Environment(
        interpreter=ENV.interpreter,
        packages=(
            Package(
                "tool",
                "1.0",
                PackageSource("vcs", vcs="git", url="https://x.org/t.git --pre", commit="c" * 40),
            ),
        ),
    )
    with refuses(ValidationError, field="packages[tool].source.url", names="--pre"):
        install_plan(env)


def test_venv_key_is_short_and_stable():
    assert venv_key("sha256:" + "ab" * 32) == "ab" * 8


def test_find_interpreter_finds_this_exact_python():
    version = ".".join(map(str, sys.version_info[:3]))
    found = find_interpreter(version)
    out = subprocess.run(
        [str(found), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == version


def test_find_interpreter_names_the_fix_for_a_missing_version():
    with refuses(InterpreterError, names=["uv python install 3.99.1", "pyenv install 3.99.1"]):
        find_interpreter(
            "3.99.1", environ={"PATH": os.environ.get("PATH", ""), "PYENV_ROOT": "/nonexistent"}
        )


def test_venv_backend_without_lock_says_to_lock(tmp_path: Path):
    store, stored = _save(tmp_path, _exp())
    with refuses(LockError, names=["requirements.lock", f"reprobox lock {stored.id}"]):
        VenvBackend(tmp_path / "venvs").prepare(store, stored, tmp_path)


def test_replay_stand_in_reports_inline_metrics(tmp_path: Path):
    shim_src = payload.script("replay_shim")
    pkg = tmp_path / "shim" / "reprobox"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(shim_src.read_text())
    out = tmp_path / "run" / "metrics.json"
    code = (
        "import reprobox; e = reprobox.capture(name='x', metrics={'acc': 0.5, "
        "'nested': {'f1': [1, 2]}}); print(e.id)"
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(tmp_path / "shim"),
        REPROBOX_RUN_METRICS=str(out),
        REPROBOX_EXPERIMENT="0123456789ab",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "0123456789ab"
    assert json.loads(out.read_text()) == {"acc": 0.5, "nested.f1.0": 1, "nested.f1.1": 2}


# --------------------------------------------------------------------------- orchestration


class HostBackend(Backend):
    """Runs commands on this host with this interpreter: the orchestration without a rebuild."""

    name = "host"

    def __init__(self, interrupt: bool = False) -> None:
        self.interrupt = interrupt
        self.seen_env: dict[str, str] = {}
        self.released = 0

    def prepare(self, store, stored, checkout, *, network=None, progress=None) -> Prepared:
        return Prepared("host", sys.prefix, "this host's Python", True, sys.executable)

    def execute(
        self,
        prepared,
        argv: Sequence[str],
        *,
        checkout: Path,
        cwd: str = ".",
        env: Mapping[str, str],
        capture: bool = False,
        network: Optional[str] = None,
        gpus: bool = False,
    ) -> Execution:
        if self.interrupt:
            raise KeyboardInterrupt
        self.seen_env = dict(env)
        full = dict(os.environ, **env)
        done = subprocess.run(
            list(argv), cwd=checkout / cwd, env=full, capture_output=capture, check=False, text=True
        )
        return Execution(done.returncode, done.stdout or "", done.stderr or "")

    def path_in_env(self, checkout: Path, path: Path) -> str:
        return str(path)

    def dvc_host_env(self, prepared, **kw: Any) -> dict[str, str]:
        return dict(os.environ)

    def gpu_plan(self, environment) -> GpuPlan:
        return GpuPlan(False)

    def release(self, prepared) -> None:
        self.released += 1


TRAIN = """\
import json, os, random, sys
random.seed(int(os.environ.get("SEED", "1")))
acc = round(random.random(), 6) if os.environ.get("RANDOM") else 0.9
json.dump({"acc": acc, "n": 10}, open("metrics.json", "w"))
open("model.bin", "wb").write(b"abc")
sys.exit(int(os.environ.get("FAIL", "0")))
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    (root / "train.py").write_text(TRAIN)
    # A stale committed result: the rerun must not take it for its own.
    (root / "metrics.json").write_text(json.dumps({"acc": 0.9, "n": 10}))
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def _save(root: Path, exp: Experiment, files: Optional[dict] = None):
    store = Store(root)
    stored = store.save(exp, ENV, files)
    return store, stored


def _run(store: Store, stored, backend: HostBackend, monkeypatch, **kw: Any) -> RunRecord:
    monkeypatch.setattr(
        backends_mod,
        "choose_backend",
        lambda name, engine=None, limits=None: (backend, "test host backend"),
    )
    return run_experiment(store, stored, **kw)


def _exp_for(repo: Path, **kw: Any) -> Experiment:
    base: dict[str, Any] = dict(
        git=GitInfo(commit=_git(repo, "rev-parse", "HEAD")),
        metrics={"metrics.json": {"acc": 0.9, "n": 10}},
        outputs=(OutputFile("model.bin", sha256_hex(b"abc"), 3),),
        env={"PYTHONHASHSEED": "0"},
        command=f"{sys.executable} train.py",
    )
    base.update(kw)
    return _exp(**base)


def _worktrees(repo: Path) -> list[str]:
    return [
        line
        for line in _git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def test_run_reproduces_on_a_real_git_checkout(repo: Path, monkeypatch):
    store, stored = _save(repo, _exp_for(repo))
    backend = HostBackend()
    messages: list[str] = []
    record = _run(store, stored, backend, monkeypatch, progress=messages.append)
    assert record.reproduced, record.differences
    assert [p.name for p in record.phases] == [
        "code",
        "data",
        "environment",
        "command",
        "comparison",
    ]
    assert any(m.startswith("reprobox: phase 4/5 command:") for m in messages)
    assert backend.seen_env["PYTHONHASHSEED"] == "0"
    assert backend.seen_env["REPROBOX_EXPERIMENT"] == stored.id
    assert backend.seen_env["REPROBOX_RUN_METRICS"].endswith(".reprobox-run/metrics.json")
    assert backend.released == 1
    # The report is on disk, the checkout is gone, the user's tree untouched.
    saved = json.loads(Path(record.report_path).read_text())
    assert saved["verdict"] == "reproduced" and Path(record.report_path).parent == store.runs_dir
    assert len(_worktrees(repo)) == 1
    assert _git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_run_names_a_differing_metric_and_output(repo: Path, monkeypatch):
    exp = _exp_for(
        repo,
        metrics={"metrics.json": {"acc": 0.91, "n": 10}},
        outputs=(OutputFile("model.bin", sha256_hex(b"xyz"), 3),),
    )
    store, stored = _save(repo, exp)
    record = _run(store, stored, HostBackend(), monkeypatch)
    assert not record.reproduced
    assert any(
        "acc in metrics.json: recorded 0.91, rerun gave 0.9" in d for d in record.differences
    )
    assert any("output model.bin differs" in d for d in record.differences)
    # Within a tolerance the metric passes; the output still differs.
    store2, stored2 = store, stored
    record2 = _run(store2, stored2, HostBackend(), monkeypatch, atol=0.02)
    assert [d for d in record2.differences if "acc" in d] == []


def test_run_applies_the_recorded_patch(repo: Path, monkeypatch, tmp_path: Path):
    (repo / "train.py").write_text(TRAIN.replace("else 0.9", "else 0.75"))
    patch = subprocess.run(
        ["git", "diff", "--binary"], cwd=repo, capture_output=True, check=True
    ).stdout
    _git(repo, "checkout", "--", "train.py")
    exp = _exp_for(
        repo,
        metrics={"metrics.json": {"acc": 0.75, "n": 10}},
        git=GitInfo(
            commit=_git(repo, "rev-parse", "HEAD"),
            dirty=True,
            patch="patch.diff",
            patch_sha256=sha256_hex(patch),
        ),
    )
    store, stored = _save(repo, exp, {"patch.diff": patch})
    record = _run(store, stored, HostBackend(), monkeypatch)
    assert record.reproduced, record.differences


def test_a_failing_command_is_a_difference_and_stale_results_do_not_count(repo, monkeypatch):
    exp = _exp_for(repo, command=f"{sys.executable} -c 'raise SystemExit(3)'")
    store, stored = _save(repo, exp)
    record = _run(store, stored, HostBackend(), monkeypatch)
    assert record.exit_code == 3 and not record.reproduced
    assert record.differences[0].startswith("the command exited with status 3")
    # metrics.json is committed with the right value, but the rerun did not write it.
    assert any("metrics.json does not exist after the rerun" in d for d in record.differences)


def test_inline_metrics_are_read_from_the_replay_file(repo: Path, monkeypatch):
    code = (
        "import json, os; json.dump({'loss': 0.25}, open(os.environ['REPROBOX_RUN_METRICS'], 'w'))"
    )
    exp = _exp_for(
        repo,
        command=f'{sys.executable} -c "{code}"',
        metrics={INLINE_METRICS: {"loss": 0.25}},
        outputs=(),
    )
    store, stored = _save(repo, exp)
    record = _run(store, stored, HostBackend(), monkeypatch)
    assert record.reproduced, record.differences
    assert [(m.file, m.key, m.status) for m in record.metrics] == [(INLINE_METRICS, "loss", "same")]


def test_keep_leaves_the_checkout(repo: Path, monkeypatch):
    store, stored = _save(repo, _exp_for(repo))
    record = _run(store, stored, HostBackend(), monkeypatch, keep=True)
    assert record.checkout and (Path(record.checkout) / "train.py").is_file()
    assert len(_worktrees(repo)) == 2
    from reprobox.workspace.git import remove_worktree

    remove_worktree(repo, Path(record.checkout))


def test_interrupt_cleans_up_the_checkout(repo: Path, monkeypatch):
    store, stored = _save(repo, _exp_for(repo))
    backend = HostBackend(interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        _run(store, stored, backend, monkeypatch)
    assert len(_worktrees(repo)) == 1
    assert backend.released == 1
    assert not store.runs_dir.exists() or not list(store.runs_dir.iterdir())


def test_missing_commit_is_a_clear_error(repo: Path, monkeypatch):
    from reprobox.errors import GitError

    store, stored = _save(repo, _exp_for(repo, git=GitInfo(commit="f" * 40)))
    with refuses(GitError, names=["f" * 12, "fetch"]):
        _run(store, stored, HostBackend(), monkeypatch)
    assert len(_worktrees(repo)) == 1


# --------------------------------------------------------------------------- docker backend


class RecordingEngine:
    """Records what the docker backend asks of the engine (the real engine is tested end to end)."""

    def __init__(self, exit_code: int = 0, nvidia: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.exit_code = exit_code
        self.nvidia = nvidia

    def available(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return {"nvidia_runtime": self.nvidia}

    def run_container(self, image, argv, **kw):
        from reprobox.engine import RunOutput

        self.calls.append({"image": image, "argv": list(argv), **kw})
        return RunOutput(self.exit_code, "out\n")


def test_docker_backend_mounts_only_the_checkout_as_the_invoking_user(tmp_path: Path, monkeypatch):
    from reprobox.backends.docker import CONTAINER_CHECKOUT, DockerBackend

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-secret")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    checkout = tmp_path / "checkout"
    (checkout / "sub").mkdir(parents=True)
    engine = RecordingEngine(exit_code=5)
    backend = DockerBackend(engine)
    prepared = Prepared("docker", "reprobox/x:1", "image", True, "python")
    done = backend.execute(
        prepared,
        ["/bin/sh", "-c", "python t.py"],
        checkout=checkout,
        cwd="sub",
        env={"OMP_NUM_THREADS": "1"},
        network="none",
    )
    # The container's status is the run's; its output streamed (to stderr), not kept.
    assert (done.returncode, done.stdout) == (5, "")
    kept = backend.execute(prepared, ["true"], checkout=checkout, env={}, capture=True)
    assert (kept.returncode, kept.stdout) == (5, "out\n")
    assert engine.calls[1]["stream"] is None
    call = engine.calls[0]
    from reprobox.backends import container_uid_gid

    uid, gid = container_uid_gid()
    assert call["user"] == f"{uid}:{gid}" and uid != 0 and gid != 0
    confine = call["confine"]
    assert confine.drop_all_capabilities and confine.no_new_privileges
    assert confine.pids_limit == 4096 and confine.memory is None
    assert [(m.source, m.target, m.read_only) for m in call["mounts"]] == [
        (checkout.resolve(), CONTAINER_CHECKOUT, False)
    ]
    assert call["workdir"] == f"{CONTAINER_CHECKOUT}/sub"
    assert call["env"] == {"HOME": "/tmp", "OMP_NUM_THREADS": "1"}
    assert call["network"] == "none" and call["gpus"] is False
    assert callable(call["stream"])  # output streams (to stderr)
    inside = backend.path_in_env(checkout, checkout / "sub" / "m.json")
    assert inside == f"{CONTAINER_CHECKOUT}/sub/m.json"
    with refuses(ReproboxError, names=[str(tmp_path / "elsewhere"), "outside the checkout"]):
        backend.path_in_env(checkout, tmp_path / "elsewhere")


def test_docker_gpu_plan_only_on_explicit_request(tmp_path: Path):
    from reprobox.backends import ContainerLimits
    from reprobox.backends.docker import DockerBackend
    from reprobox.errors import UsageError
    from reprobox.model import GPU, Hardware

    gpu_env = Environment(
        interpreter=ENV.interpreter, hardware=Hardware(gpus=(GPU("NVIDIA H100 80GB HBM3"),))
    )
    # The capture lists GPUs and the engine has the NVIDIA runtime: still no GPU without --gpus.
    plan = DockerBackend(RecordingEngine(nvidia=True)).gpu_plan(gpu_env)
    assert not plan.use_gpus
    assert plan.note and "H100" in plan.note and "--gpus was not given" in plan.note
    asked = DockerBackend(RecordingEngine(nvidia=True), ContainerLimits(gpus="all"))
    assert asked.gpu_plan(gpu_env).use_gpus and asked.gpu_plan(ENV).use_gpus
    with refuses(UsageError, names="--gpus 0,1"):
        DockerBackend(RecordingEngine(nvidia=False), ContainerLimits(gpus="0,1")).gpu_plan(ENV)
    assert DockerBackend(RecordingEngine()).gpu_plan(ENV) == GpuPlan(False)


def test_gpus_request_reaches_the_engine(tmp_path: Path):
    from reprobox.backends import ContainerLimits
    from reprobox.backends.docker import DockerBackend

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    prepared = Prepared("docker", "reprobox/x:1", "image", True, "python")
    for spec in ("all", "2", "0,1"):
        engine = RecordingEngine(nvidia=True)
        DockerBackend(engine, ContainerLimits(gpus=spec, memory="2g", pids_limit=64)).execute(
            prepared, ["true"], checkout=checkout, env={}, gpus=True
        )
        call = engine.calls[0]
        assert call["gpus"] == spec
        assert call["confine"].memory == "2g" and call["confine"].pids_limit == 64
    engine = RecordingEngine(nvidia=True)
    DockerBackend(engine).execute(prepared, ["true"], checkout=checkout, env={}, gpus=True)
    assert engine.calls[0]["gpus"] is False  # no --gpus: no GPU, whatever the caller asks


@pytest.mark.parametrize(
    "field,kw",
    [
        ("--pids-limit", {"pids_limit": 3}),
        ("--memory", {"memory": "lots"}),
        ("--gpus", {"gpus": "all; rm -rf /"}),
    ],
)
def test_container_limits_refuse_bad_values(field: str, kw: dict):
    from reprobox.backends import ContainerLimits
    from reprobox.errors import UsageError

    with refuses(UsageError, names=field) as err:
        ContainerLimits(**kw)
    assert err.value.message.startswith(field) and err.value.exit_code == 2


def test_root_is_mapped_to_an_unprivileged_uid():
    from reprobox.backends import container_uid_gid

    assert container_uid_gid(0, 0) == (65534, 65534)
    assert container_uid_gid(1000, 1000) == (1000, 1000)
    assert container_uid_gid(1000, 0) == (1000, 65534)


def test_dvc_stages_run_through_the_container_shell(tmp_path: Path, monkeypatch):
    """DVC calls $SHELL -c CMD in the stage folder: the launcher turns it into a container run."""
    from reprobox.backends import stage_shell
    from reprobox.backends.docker import CONTAINER_CHECKOUT, DockerBackend
    from reprobox import engine as engine_mod

    checkout = tmp_path / "checkout"
    (checkout / "stages").mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    backend = DockerBackend(RecordingEngine())
    prepared = Prepared("docker", "reprobox/x:1", "image", True, "python")
    host_env = backend.dvc_host_env(
        prepared, checkout=checkout, env={"PYTHONHASHSEED": "0"}, scratch=scratch, network="none"
    )
    launcher = Path(host_env["SHELL"])
    assert launcher.parent == scratch and os.access(launcher, os.X_OK)

    # The launcher really runs (a real sh and a real Python) up to the engine call.
    config = scratch / "stage-shell.json"
    recorder = RecordingEngine(exit_code=4)
    monkeypatch.setattr(engine_mod, "get_engine", lambda: recorder)
    monkeypatch.chdir(checkout / "stages")
    monkeypatch.setenv("DVC_STAGE", "train")
    monkeypatch.setenv("DVC_ROOT", str(checkout))
    assert stage_shell.main([str(config), "-c", "python train.py"]) == 4
    call = recorder.calls[0]
    assert call["argv"] == ["/bin/sh", "-c", "python train.py"]
    assert call["workdir"] == f"{CONTAINER_CHECKOUT}/stages"
    assert call["env"] == {
        "HOME": "/tmp",
        "PYTHONHASHSEED": "0",
        "DVC_STAGE": "train",
        "DVC_ROOT": CONTAINER_CHECKOUT,
    }
    assert call["network"] == "none"

    # And the generated launcher script is valid sh that reaches the same code.
    done = subprocess.run([str(launcher)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "expected CONFIG -c COMMAND" in done.stderr


# ----------------------------------------------------------------- links leaving the checkout


def test_a_link_the_command_makes_out_of_the_checkout_stops_the_run(
    repo: Path, tmp_path: Path, monkeypatch
):
    """The command replaces its metrics file by a link to a host file: nothing is read through it,
    no report is written, the refusal names the link."""
    secret = tmp_path / "id_rsa"
    secret.write_text('{"acc": "canary-secret-key"}')
    exp = _exp_for(repo, command=f"ln -sf {secret} metrics.json", outputs=())
    store, stored = _save(repo, exp)
    with refuses(UsageError, names=f"metrics.json -> {secret}") as err:
        _run(store, stored, HostBackend(), monkeypatch)
    assert "canary-secret-key" not in str(err.value)
    assert not store.runs_dir.exists() or not list(store.runs_dir.iterdir())
    assert len(_worktrees(repo)) == 1


def test_writes_into_the_checkout_never_follow_a_committed_link(
    repo: Path, tmp_path: Path, monkeypatch
):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / ".reprobox-run")
    _git(repo, "add", ".reprobox-run")
    _git(repo, "commit", "-q", "-m", "link")
    store, stored = _save(repo, _exp_for(repo))
    with refuses(UsageError, names=".reprobox-run") as err:
        _run(store, stored, HostBackend(), monkeypatch)
    assert err.value.exit_code == 2
    assert list(outside.iterdir()) == []
    assert len(_worktrees(repo)) == 1


def test_as_root_the_container_runs_as_nobody_and_the_checkout_is_lent_then_taken_back(
    tmp_path: Path, monkeypatch
):
    from reprobox.backends import docker as docker_mod

    lent: list[tuple[int, int]] = []
    monkeypatch.setattr(docker_mod.os, "getuid", lambda: 0)
    monkeypatch.setattr(docker_mod.os, "getgid", lambda: 0)
    monkeypatch.setattr(backends_mod.interface.os, "getuid", lambda: 0)
    monkeypatch.setattr(backends_mod.interface.os, "getgid", lambda: 0)
    monkeypatch.setattr(docker_mod, "hand_over", lambda checkout, uid, gid: lent.append((uid, gid)))
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    engine = RecordingEngine()
    docker_mod.DockerBackend(engine).execute(
        Prepared("docker", "reprobox/x:1", "image", True, "python"),
        ["true"],
        checkout=checkout,
        env={},
    )
    assert engine.calls[0]["user"] == "65534:65534"
    assert lent == [(65534, 65534), (0, 0)]
