"""The record's shape, its hashes (pinned: a change is a breaking change) and the store."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.errors import ExperimentNotFound, RecordRefused, SchemaError, StoreError
from reprobox.model import (
    Environment,
    Experiment,
    Hardware,
    flatten_metrics,
    pretty_json,
)
from reprobox.store import Store, find_root, write_atomic

from ..asserts import refuses
from ..factories import make_env, make_exp


def test_digest_and_id_are_pinned() -> None:
    # Changing what goes into these hashes breaks every committed record: bump the schema instead.
    env = make_env()
    assert env.digest == PINNED_ENV_DIGEST
    assert make_exp(env).id == PINNED_EXP_ID


PINNED_ENV_DIGEST = "sha256:9f6314ffa54217f7a309cbef9915b978ee333caadcd949fe1ae9ed0d6f339138"
PINNED_EXP_ID = "8584bfbab0ba"


def test_id_is_the_hash_of_the_canonical_document_without_its_id() -> None:
    """The id derivation, pinned: sha256 over the sorted, compact, UTF-8 form of every field of
    experiment.json but ``id``, first 12 hex digits."""
    import hashlib

    from reprobox.model import canonical_json, file_digest, seal_id

    env = make_env()
    exp = replace(
        make_exp(env, name="bäseline"),
        files={"environment.json": file_digest(b"{}\n"), "patch.diff": file_digest(b"")},
    )
    doc = exp.to_dict()
    body = {k: v for k, v in doc.items() if k != "id"}
    canonical = canonical_json(body)
    assert canonical.startswith(b'{"command":"python train.py","command_kind":"shell","created":')
    assert b'"name":"b\xc3\xa4seline"' in canonical and b", " not in canonical
    assert b'"schema":"reprobox.experiment/2"' in canonical
    assert seal_id(doc) == hashlib.sha256(canonical).hexdigest()[:12] == exp.compute_id()
    assert seal_id(doc) == PINNED_SEALED_ID
    assert doc["files"] == {
        "environment.json": "sha256:" + hashlib.sha256(b"{}\n").hexdigest(),
        "patch.diff": "sha256:" + hashlib.sha256(b"").hexdigest(),
    }


PINNED_SEALED_ID = "07c65b47c260"


def test_digest_ignores_hardware_and_order() -> None:
    env = make_env()
    other = replace(
        env,
        hardware=Hardware(cpu_model="Other", cpu_flags=("avx512f",)),
        packages=tuple(reversed(env.packages)),
    )
    assert other.digest == env.digest
    assert make_env(numpy="2.0.0").digest != env.digest


@pytest.mark.parametrize(
    "change",
    [
        {"created": "2026-01-01T00:00:00Z"},
        {"tool_version": "9.9.9"},
        {"files": {"environment.json": "sha256:" + "1" * 64}},
        {"supersedes": "0123456789ab"},
        {"metrics": {"metrics.json": {"accuracy": 0.5}}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_id_seals_every_field(change: dict) -> None:
    env = make_env()
    a = make_exp(env)
    assert replace(a, **change).compute_id() != a.id


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
    with refuses(SchemaError, names=["newer than this reprobox", "reprobox.environment/7"]):
        Environment.from_dict(data)
    data["schema"] = "something.else/1"
    with refuses(SchemaError, names=["environment.json", "'something.else'"]):
        Environment.from_dict(data)
    del data["schema"]
    with refuses(SchemaError, names="no schema"):
        Environment.from_dict(data)


def test_older_experiment_schema_is_refused_naming_the_fix() -> None:
    data = make_exp(make_env()).to_dict()
    data["schema"] = "reprobox.experiment/1"
    with refuses(SchemaError, names=["older record", "reprobox.experiment/1", "re-capture"]) as exc:
        Experiment.from_dict(data)
    assert exc.value.exit_code == 2


def test_edited_environment_is_reported_as_modified() -> None:
    data = make_env().to_dict()
    data["packages"][0]["version"] = "9.9.9"
    with refuses(RecordRefused, names=["environment.json", "modified"]):
        Environment.from_dict(data)


def test_flatten_metrics() -> None:
    assert flatten_metrics({"a": {"b": 1, "c": [2, 3]}, "d": "x"}) == {
        "a.b": 1,
        "a.c.0": 2,
        "a.c.1": 3,
        "d": "x",
    }


# --------------------------------------------------------------------------- store


def test_save_load_resolve(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    first = store.save(
        make_exp(env, name="baseline", created="2026-11-27T10:00:00Z"),
        env,
        {"patch.diff": b"\x00binary"},
    )
    second = store.save(make_exp(env, name="tuned", acc=0.95, created="2026-11-27T11:00:00Z"), env)
    assert (first.path / "patch.diff").read_bytes() == b"\x00binary"
    assert (tmp_path / ".reprobox" / ".gitignore").read_text().count("local/") == 1
    assert sorted(first.experiment.files) == ["environment.json", "patch.diff"]
    assert store.resolve(first.id) == first.id
    assert store.resolve(first.id[:4]) == first.id
    assert store.resolve("baseline") == first.id
    assert store.resolve("latest") == second.id
    assert store.load(first.id) == first
    with refuses(ExperimentNotFound, names=["no experiment matches", "'nope'"]):
        store.resolve("nope")
    with refuses(ExperimentNotFound, names=["at least 4", first.id[:3]]):
        store.resolve(first.id[:3])


def _sealed_id(exp: Experiment, env: Environment) -> str:
    from reprobox.model import file_digest

    files = {"environment.json": file_digest(pretty_json(env.to_dict()).encode())}
    return replace(exp, files=files).compute_id()


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    acc = 0.0
    # Find two experiments whose ids share a 4-character prefix.
    by_prefix: dict[str, Experiment] = {}
    while True:
        acc += 0.001
        exp = make_exp(env, acc=acc)
        sid = _sealed_id(exp, env)
        if sid[:4] in by_prefix:
            a = store.save(by_prefix[sid[:4]], env)
            b = store.save(exp, env)
            assert a.id[:4] == b.id[:4] == sid[:4] and a.id != b.id
            prefix = sid[:4]
            break
        by_prefix[sid[:4]] = exp
    with refuses(ExperimentNotFound, names=["ambiguous", prefix]):
        store.resolve(prefix)


def test_same_capture_twice_keeps_one_folder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    a = store.save(make_exp(env), env)
    b = store.save(make_exp(env, created="2030-01-01T00:00:00Z"), env)
    assert a.id == b.id
    assert store.ids() == [a.id]
    assert b.experiment.created == "2026-11-27T10:00:00Z"  # the first record is kept


def test_saving_loads_only_the_records_of_the_same_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    for i in range(6):  # other environments: never loaded to look for a twin
        env_i = make_env(numpy=f"1.25.{i}")
        store.save(make_exp(env_i), env_i)
    env = make_env()
    first = store.save(make_exp(env, name="a"), env)
    second = store.save(make_exp(env, name="b", created="2026-11-27T12:00:00Z"), env)
    # a forged folder naming the same environment digest is loaded, refused, and passed over
    forged = store.experiments_dir / ("f" * 12)
    forged.mkdir()
    doc = json.loads((first.path / "experiment.json").read_text())
    (forged / "experiment.json").write_text(json.dumps({**doc, "id": "f" * 12}))
    # and one that is not JSON at all costs nothing
    (store.experiments_dir / ("e" * 12)).mkdir()
    (store.experiments_dir / ("e" * 12) / "experiment.json").write_text("{nope")

    loaded: list[str] = []
    real_load = Store.load

    def counting_load(self: Store, exp_id: str):  # type: ignore[no-untyped-def]
        loaded.append(exp_id)
        return real_load(self, exp_id)

    monkeypatch.setattr(Store, "load", counting_load)
    again = store.save(make_exp(env, name="a", created="2031-01-01T00:00:00Z"), env)
    assert again.id == first.id
    assert again.experiment.created == "2026-11-27T10:00:00Z"
    same_env = sorted([first.id, second.id, "f" * 12])
    # only the three folders naming this environment.json were read in full
    assert sorted(loaded) == same_env

    loaded.clear()
    third = store.save(make_exp(env, name="c", acc=0.5), env)
    assert third.id not in (first.id, "f" * 12)
    assert sorted(loaded) == same_env


def test_modified_experiment_is_reported(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    path = s.path / "experiment.json"
    data = json.loads(path.read_text())
    data["metrics"]["metrics.json"]["accuracy"] = 0.99
    path.write_text(json.dumps(data))
    with refuses(RecordRefused, names=["modified after capture", s.id]) as exc:
        store.load(s.id)
    assert exc.value.exit_code == 2


def test_corrupt_json_names_file_and_line(tmp_path: Path) -> None:
    from ..hostile import reseal

    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    (s.path / "environment.json").write_text('{\n  "schema": "reprobox.environment/1",\n  oops\n}')
    with refuses(RecordRefused, names=["environment.json was changed after capture", s.id]):
        store.load(s.id)
    new_id = reseal(s.path)  # sealed again: now the parse error itself is what is reported
    with refuses(RecordRefused, names="environment.json is not valid JSON (line 3"):
        store.load(new_id)


def test_set_image_is_local_state(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    s = store.save(make_exp(env), env)
    before = (s.path / "experiment.json").read_bytes()
    s2 = store.set_image(s, "reprobox/demo:" + s.id)
    assert s2.image == "reprobox/demo:" + s.id and s2.id == s.id
    assert store.load(s.id).image == "reprobox/demo:" + s.id
    assert (s.path / "experiment.json").read_bytes() == before
    record = tmp_path / ".reprobox" / "local" / "images" / f"{s.id}.json"
    assert json.loads(record.read_text())["tag"] == "reprobox/demo:" + s.id
    assert (tmp_path / ".reprobox" / "local" / ".gitignore").read_text().endswith("*\n")


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    env = make_env()
    with refuses(StoreError, names="'../escape'"):
        store.save(make_exp(env), env, {"../escape": "x"})
    assert store.ids() == []
    assert not store.experiments_dir.exists() or list(store.experiments_dir.iterdir()) == []


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
    with refuses(StoreError, names=["git init", os.sep]):
        find_root(Path(os.sep))


def test_same_capture_again_attaches_missing_files_under_a_new_id(tmp_path: Path) -> None:
    """An offline capture, then the same run captured with the index answering: the lock the
    first record lacked is attached, and since the id seals every file, the record is re-sealed
    under a new id (same created), the old folder replaced and named by ``supersedes``."""
    store = Store(tmp_path)
    env = make_env()
    first = store.save(make_exp(env), env)
    assert not (first.path / "requirements.lock").exists()
    again = store.save(
        make_exp(env, created="2030-01-01T00:00:00Z"),
        env,
        {"requirements.lock": "six==1.17.0 --hash=sha256:00\n"},
    )
    assert again.id != first.id and store.ids() == [again.id]
    assert again.experiment.supersedes == first.id
    assert again.experiment.created == first.experiment.created
    assert "requirements.lock" in again.experiment.files
    assert store.load(again.id).experiment == again.experiment
    third = store.save(make_exp(env), env, {"requirements.lock": "other\n"})
    assert third.id == again.id  # an attached file is never replaced by a later capture
    assert (again.path / "requirements.lock").read_text().startswith("six==")
    # The old id points to the new one.
    with refuses(ExperimentNotFound, names=[first.id, again.id]):
        store.resolve(first.id)


def test_reseal_replacing_a_file_gives_a_new_id_and_identical_content_keeps_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    env = make_env()
    first = store.save(make_exp(env), env, {"requirements.lock": "a==1\n"})
    same = store.reseal(first, {"requirements.lock": "a==1\n"}, replace_existing=True)
    assert same.id == first.id
    new = store.reseal(first, {"requirements.lock": "a==2\n"}, replace_existing=True)
    assert new.id != first.id and store.ids() == [new.id]
    assert (new.path / "requirements.lock").read_text() == "a==2\n"


def test_captures_made_within_one_second_resolve_latest_to_the_newest(tmp_path: Path) -> None:
    """At whole seconds two captures of one second tied, and the random id picked `latest`."""
    import re
    import time

    from reprobox.pipeline import _now

    first = _now()
    time.sleep(0.003)
    second = _now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first) and first < second
    (tmp_path / ".git").mkdir()
    store = Store(tmp_path)
    env = make_env()
    newer = store.save(replace(make_exp(env), name="newer", created=second), env, {})
    older = store.save(replace(make_exp(env), name="older", created=first), env, {})
    assert store.resolve("latest") == newer.id != older.id
