"""The record's shape, its hashes (pinned: a change is a breaking change) and the store."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.errors import ExperimentNotFound, SchemaError, StoreError
from reprobox.model import (
    Environment,
    Experiment,
    GitInfo,
    Hardware,
    Interpreter,
    OSInfo,
    Package,
    PackageSource,
    SystemPackage,
    flatten_metrics,
    pretty_json,
)
from reprobox.store import Store, find_root, write_atomic


def make_env(numpy: str = "1.26.4") -> Environment:
    return Environment(
        interpreter=Interpreter(
            implementation="cpython", version="3.11.7", abi="cp311",
            soabi="cpython-311-x86_64-linux-gnu", platform="linux-x86_64", kind="venv",
        ),
        packages=(
            Package("numpy", numpy, wheel_tags=("cp311-cp311-manylinux_2_17_x86_64",)),
            Package("mypkg", "0.1.0", PackageSource("directory", path="src/mypkg",
                                                   editable=True, in_repo=True)),
        ),
        system_packages=(SystemPackage("libc6", "2.36-9+deb12u4", arch="amd64",
                                       libraries=("libc.so.6",)),),
        os=OSInfo(id="debian", version_id="12", codename="bookworm", arch="x86_64"),
        hardware=Hardware(cpu_model="Example CPU", cpu_cores=2, cpu_flags=("avx2", "fma")),
    )


def make_exp(env: Environment, name: str = "baseline", acc: float = 0.93,
             created: str = "2026-11-27T10:00:00Z") -> Experiment:
    return Experiment(
        name=name,
        command="python train.py",
        cwd=".",
        git=GitInfo(commit="a" * 40, branch="main"),
        environment_digest=env.digest,
        created=created,
        tool_version="0.1.0",
        metrics={"metrics.json": {"accuracy": acc}},
        env={"PYTHONHASHSEED": "0"},
    ).with_id()


def test_digest_and_id_are_pinned() -> None:
    # Changing what goes into these hashes breaks every committed record: bump the schema instead.
    env = make_env()
    assert env.digest == PINNED_ENV_DIGEST
    assert make_exp(env).id == PINNED_EXP_ID


PINNED_ENV_DIGEST = "sha256:9f6314ffa54217f7a309cbef9915b978ee333caadcd949fe1ae9ed0d6f339138"
PINNED_EXP_ID = "c9e7ebc67df9"


def test_digest_ignores_hardware_and_order() -> None:
    env = make_env()
    other = replace(env, hardware=Hardware(cpu_model="Other", cpu_flags=("avx512f",)),
                    packages=tuple(reversed(env.packages)))
    assert other.digest == env.digest
    assert make_env(numpy="2.0.0").digest != env.digest


def test_id_ignores_created_and_image() -> None:
    env = make_env()
    a = make_exp(env, created="2026-01-01T00:00:00Z")
    b = replace(make_exp(env, created="2026-02-02T00:00:00Z"), image="reprobox/x:1")
    assert a.id == b.compute_id()
    assert make_exp(env, acc=0.5).id != a.id


def test_roundtrip_is_lossless() -> None:
    env = make_env()
    exp = make_exp(env)
    env2 = Environment.from_dict(json.loads(pretty_json(env.to_dict())))
    exp2 = Experiment.from_dict(json.loads(pretty_json(exp.to_dict())))
    assert env2 == env
    assert exp2 == exp
    text = pretty_json(exp.to_dict())
    assert text.endswith("\n") and '  "cwd": "."' in text


def test_newer_schema_is_refused_with_the_version_that_reads_it() -> None:
    data = make_env().to_dict()
    data["schema"] = "reprobox.environment/7"
    with pytest.raises(SchemaError, match="newer than this reprobox") as exc:
        Environment.from_dict(data)
    assert "reprobox.environment/7" in (exc.value.hint or "")
    data["schema"] = "something.else/1"
    with pytest.raises(SchemaError):
        Environment.from_dict(data)
    del data["schema"]
    with pytest.raises(SchemaError, match="no schema"):
        Environment.from_dict(data)


def test_edited_environment_is_reported_as_modified() -> None:
    data = make_env().to_dict()
    data["packages"][0]["version"] = "9.9.9"
    with pytest.raises(StoreError, match="modified"):
        Environment.from_dict(data)


def test_flatten_metrics() -> None:
    assert flatten_metrics({"a": {"b": 1, "c": [2, 3]}, "d": "x"}) == {
        "a.b": 1, "a.c.0": 2, "a.c.1": 3, "d": "x"}


# --------------------------------------------------------------------------- store


def test_save_load_resolve(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    first = store.save(make_exp(env, name="baseline", created="2026-11-27T10:00:00Z"), env,
                       {"patch.diff": b"\x00binary"})
    second = store.save(make_exp(env, name="tuned", acc=0.95, created="2026-11-27T11:00:00Z"), env)
    assert (first.path / "patch.diff").read_bytes() == b"\x00binary"
    assert (tmp_path / ".reprobox" / ".gitignore").read_text().count("runs/") == 1
    assert store.resolve(first.id) == first.id
    assert store.resolve(first.id[:4]) == first.id
    assert store.resolve("baseline") == first.id
    assert store.resolve("latest") == second.id
    with pytest.raises(ExperimentNotFound, match="no experiment matches"):
        store.resolve("nope")
    with pytest.raises(ExperimentNotFound, match="at least 4"):
        store.resolve(first.id[:3])


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    ids = set()
    acc = 0.0
    # Find two experiments whose ids share a 4-character prefix.
    by_prefix: dict[str, Experiment] = {}
    while True:
        acc += 0.001
        exp = make_exp(env, acc=acc)
        if exp.id[:4] in by_prefix and by_prefix[exp.id[:4]].id != exp.id:
            store.save(by_prefix[exp.id[:4]], env)
            store.save(exp, env)
            prefix = exp.id[:4]
            break
        by_prefix[exp.id[:4]] = exp
        ids.add(exp.id)
    with pytest.raises(ExperimentNotFound, match="ambiguous"):
        store.resolve(prefix)


def test_same_capture_twice_keeps_one_folder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    a = store.save(make_exp(env), env)
    b = store.save(make_exp(env, created="2030-01-01T00:00:00Z"), env)
    assert a.id == b.id
    assert store.ids() == [a.id]
    assert b.experiment.created == "2026-11-27T10:00:00Z"  # the first record is kept


def test_modified_experiment_is_reported(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    path = s.path / "experiment.json"
    data = json.loads(path.read_text())
    data["metrics"]["metrics.json"]["accuracy"] = 0.99
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="modified after capture"):
        store.load(s.id)


def test_corrupt_json_names_file_and_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    (s.path / "environment.json").write_text('{\n  "schema": "reprobox.environment/1",\n  oops\n}')
    with pytest.raises(StoreError, match=r"environment.json is not valid JSON \(line 3"):
        store.load(s.id)


def test_set_image_keeps_id(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    s2 = store.set_image(s, "reprobox/demo:" + s.id)
    assert store.load(s.id).experiment.image == "reprobox/demo:" + s.id
    assert s2.id == s.id


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    with pytest.raises(StoreError):
        store.save(make_exp(env), env, {"../escape": "x"})
    assert store.ids() == []
    assert [p.name for p in store.experiments_dir.iterdir()] == []


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _save_in_child(args: tuple[str, float]) -> str:
    root, acc = args
    env = make_env()
    return Store(Path(root)).save(make_exp(env, acc=acc), env).id


def test_concurrent_saves_never_corrupt(tmp_path: Path) -> None:
    # Same content from several processes at once (one id) plus distinct ones.
    jobs = [(str(tmp_path), 0.5)] * 6 + [(str(tmp_path), 0.1 * i) for i in range(1, 5)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        ids = pool.map(_save_in_child, jobs)
    store = Store(tmp_path)
    assert sorted(set(ids)) == store.ids()
    for exp_id in store.ids():
        store.load(exp_id)  # every folder is complete and consistent
    leftovers = [p for p in store.experiments_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_find_root(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_root(tmp_path / "a" / "b") == tmp_path.resolve()
    with pytest.raises(StoreError, match="git init"):
        find_root(Path(os.sep))


def test_same_capture_again_attaches_missing_files(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    first = store.save(make_exp(env), env)
    assert not (first.path / "requirements.lock").exists()
    again = store.save(make_exp(env, created="2030-01-01T00:00:00Z"), env,
                       {"requirements.lock": "six==1.17.0 --hash=sha256:00\n"})
    assert again.id == first.id
    assert (first.path / "requirements.lock").read_text().startswith("six==")
    store.save(make_exp(env), env, {"requirements.lock": "other\n"})
    assert (first.path / "requirements.lock").read_text().startswith("six==")  # never replaced
