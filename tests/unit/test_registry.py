"""The publication record (images.json) and the registry names, without a registry.

images.json is the one file an experiment folder may hold beside its sealed manifest; each way a
hostile checkout could bend it (edited, foreign, re-pointed, oversized, a link, planted in the
manifest) is refused naming the file. The push/pull themselves run against a real registry in
tests/integration/test_registry_real.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import pytest

from reprobox.engine import is_loopback_registry, push_error, registry_of
from reprobox.errors import EngineError, RecordRefused, UsageError
from reprobox.registry import (
    IMAGES_FILE,
    Publication,
    PublicationRecord,
    configured_registry,
    ensure_pulled,
    load_publication,
    parse_registry,
    seal_of,
    write_publication,
)
from reprobox.store import Store, StoredExperiment

from ..asserts import refuses
from ..factories import make_env, make_exp
from ..hostile import plant_file

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoredExperiment:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    # the registries the pull tests use are trusted by this "machine"; nothing else is
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("REPROBOX_REGISTRIES", "127.0.0.1:5000,reg.example.org")
    env = make_env()
    return Store(root).save(make_exp(env), env, {"Dockerfile": "FROM scratch\n"})


def pub(digest: str = DIGEST, repo: str = "127.0.0.1:5000/team/repo") -> Publication:
    return Publication(repo, "abc", digest, "2026-11-30T18:00:00Z", "docker")


def record_of(stored: StoredExperiment, *pubs: Publication) -> PublicationRecord:
    return PublicationRecord(stored.id, stored.environment.digest, pubs)


def write_doc(stored: StoredExperiment, doc: dict[str, Any], reseal: bool = True) -> Path:
    if reseal:
        doc["seal"] = seal_of(doc)
    path = stored.path / IMAGES_FILE
    path.write_text(json.dumps(doc))
    return path


def refusal(stored: StoredExperiment) -> str:
    with refuses(RecordRefused, names=IMAGES_FILE) as exc:
        load_publication(Store(stored.path.parents[2]).load(stored.id))
    assert exc.value.exit_code == 2
    return exc.value.message


def test_written_record_loads_and_the_store_accepts_it(stored):
    write_publication(stored, record_of(stored, pub()))
    again = Store(stored.path.parents[2]).load(stored.id)  # the seal still holds
    rec = load_publication(again)
    assert rec is not None and rec.images == (pub(),)
    assert rec.images[0].reference == f"127.0.0.1:5000/team/repo@{DIGEST}"
    doc = json.loads((stored.path / IMAGES_FILE).read_text())
    assert doc["schema"] == "reprobox.images/1" and doc["experiment"] == stored.id
    assert doc["env_digest"] == stored.environment.digest


def test_pushing_again_adds_or_refreshes(stored):
    rec = record_of(stored, pub()).with_image(pub(OTHER, "reg.example.org/x/repo"))
    rec = rec.with_image(pub(OTHER))  # the same repository and tag: replaced
    assert [p.digest for p in rec.images] == [OTHER, OTHER]
    assert [p.repository for p in rec.images] == [
        "reg.example.org/x/repo",
        "127.0.0.1:5000/team/repo",
    ]


def test_no_record_is_none(stored):
    assert load_publication(stored) is None


def test_edited_record_is_refused_by_its_seal(stored):
    write_publication(stored, record_of(stored, pub()))
    doc = json.loads((stored.path / IMAGES_FILE).read_text())
    doc["images"][0]["digest"] = OTHER
    doc["images"][0]["reference"] = f"127.0.0.1:5000/team/repo@{OTHER}"
    write_doc(stored, doc, reseal=False)
    assert "seal does not match" in refusal(stored)


def _doc(stored: StoredExperiment, **changes: Any) -> dict[str, Any]:
    doc = record_of(stored, pub()).to_dict()
    doc.pop("seal")
    doc.update(changes)
    return doc


def test_foreign_record_is_refused_naming_the_other_experiment(stored):
    write_doc(stored, _doc(stored, experiment="0123456789ab"))
    assert "belongs to experiment '0123456789ab'" in refusal(stored)


def test_record_of_another_environment_is_refused(stored):
    write_doc(stored, _doc(stored, env_digest=OTHER))
    assert "env_digest" in refusal(stored)


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("digest", "sha256:xyz", "images[0].digest"),
        ("digest", "md5:" + "a" * 32, "images[0].digest"),
        ("repository", "127.0.0.1:5000/Team/repo", "images[0].repository"),
        ("repository", "127.0.0.1:5000/team/repo:latest", "images[0].repository"),
        ("repository", "repo", "images[0].repository"),
        ("reference", "127.0.0.1:5000/evil/repo@" + DIGEST, "images[0].reference"),
        ("tag", "-x", "images[0].tag"),
        ("pushed", "yesterday", "images[0].pushed"),
        ("engine", "rkt", "images[0].engine"),
        ("extra", "1", "'extra'"),
    ],
)
def test_each_field_is_checked_by_grammar(stored, field, value, named):
    doc = _doc(stored)
    doc["images"][0][field] = value
    if field == "repository":
        doc["images"][0]["reference"] = f"{value}@{DIGEST}"
    write_doc(stored, doc)
    assert named in refusal(stored)


def test_unknown_top_level_field_and_schema_are_refused(stored):
    write_doc(stored, _doc(stored, registry="evil.example.org/x"))
    assert "'registry'" in refusal(stored)
    write_doc(stored, _doc(stored, schema="reprobox.images/9"))
    assert "reprobox.images/1" in refusal(stored)


def test_oversized_and_deep_records_are_refused_before_parsing(stored):
    (stored.path / IMAGES_FILE).write_text(" " * (300 * 1024) + "{}")
    assert "images.json" in refusal(stored)
    (stored.path / IMAGES_FILE).write_text("[" * 10000 + "]" * 10000)
    assert "nests" in refusal(stored)


def test_a_link_named_images_json_is_refused_by_the_seal(stored, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, stored.path / IMAGES_FILE)
    with refuses(RecordRefused, names="'images.json' was added after capture"):
        Store(stored.path.parents[2]).load(stored.id)


def test_images_json_sealed_into_the_manifest_is_refused(stored):
    new_id = plant_file(stored.path, IMAGES_FILE, "{}")
    with refuses(RecordRefused, names="the manifest names images.json"):
        Store(stored.path.parents[2]).load(new_id)


def test_other_added_files_are_still_refused(stored):
    (stored.path / "images.json.bak").write_text("{}")
    with refuses(RecordRefused, names="'images.json.bak' was added after capture"):
        Store(stored.path.parents[2]).load(stored.id)


@pytest.mark.parametrize(
    "value,host,ns",
    [
        ("127.0.0.1:5000/team", "127.0.0.1:5000", "team"),
        ("registry.example.org/a/b", "registry.example.org", "a/b"),
        ("localhost:5000", "localhost:5000", ""),
        ("ghcr.io/org/", "ghcr.io", "org"),
    ],
)
def test_registry_names(value, host, ns):
    assert parse_registry(value) == (host, ns)


@pytest.mark.parametrize(
    "value,why",
    [
        ("http://127.0.0.1:5000/x", "scheme"),
        ("team", "not a registry"),
        ("127.0.0.1:5000/Team", "not a registry"),
        ("127.0.0.1:5000/a b", "not a registry"),
        ("", "not a registry"),
    ],
)
def test_bad_registry_names_are_refused(value, why):
    with refuses(UsageError, names=[why, "--registry"]):
        parse_registry(value)


def test_configured_registry_comes_from_the_users_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert configured_registry() is None
    (tmp_path / "reprobox").mkdir()
    (tmp_path / "reprobox" / "config.toml").write_text('[registry]\ndefault = "r.example/t"\n')
    assert configured_registry() == "r.example/t"


def test_loopback_registries_are_the_insecure_default():
    assert is_loopback_registry("127.0.0.1:5000") and is_loopback_registry("127.3.4.5")
    assert is_loopback_registry("localhost:5000") and is_loopback_registry("[::1]:5000")
    assert not is_loopback_registry("128.0.0.1:5000")
    assert not is_loopback_registry("registry.example.org")
    assert registry_of("127.0.0.1:5000/a/b:c") == "127.0.0.1:5000"
    assert registry_of("library/python:3") == "docker.io"


def test_push_errors_name_the_registry_and_the_fix():
    down = push_error(
        "127.0.0.1:5999/t/r:x", "dial tcp 127.0.0.1:5999: connect: connection refused"
    )
    assert "the registry 127.0.0.1:5999 does not answer" in down.message
    assert "start-registry.sh" in (down.hint or "")
    denied = push_error("r.example.org/t/r:x", "unauthorized: authentication required")
    assert "the registry r.example.org refused the push" in denied.message
    assert "docker login r.example.org" in (denied.hint or "")


class FakePullEngine:
    """Only what ensure_pulled asks: which references pull, and their labels."""

    name = "docker"

    def __init__(self, images: dict[str, dict[str, str]]) -> None:
        self.images = images
        self.pulled: list[str] = []

    def image_exists(self, ref: str) -> bool:
        return False

    def pull(self, ref: str) -> bool:
        self.pulled.append(ref)
        return ref in self.images

    def image_labels(self, ref: str) -> dict[str, str]:
        return self.images.get(ref, {})


def _labels(stored: StoredExperiment, exp: Optional[str] = None) -> dict[str, str]:
    return {
        "reprobox.experiment": exp or stored.id,
        "reprobox.env-digest": stored.environment.digest,
    }


def test_pull_checks_labels_and_falls_back_to_an_older_entry(stored):
    newest, older = pub(OTHER), pub(DIGEST, "reg.example.org/t/repo")
    engine = FakePullEngine(
        {newest.reference: _labels(stored, "0123456789ab"), older.reference: _labels(stored)}
    )
    result = ensure_pulled(engine, stored, record_of(stored, older, newest))  # type: ignore
    assert engine.pulled == [newest.reference, older.reference]  # by digest, newest first
    assert result.tag == older.reference


def test_pull_with_wrong_labels_only_gives_the_reason_naming_the_label(stored):
    wrong = pub()
    engine = FakePullEngine({wrong.reference: {**_labels(stored), "reprobox.env-digest": OTHER}})
    result = ensure_pulled(engine, stored, record_of(stored, wrong))  # type: ignore
    assert result.tag is None
    assert "reprobox.env-digest" in result.reason and wrong.reference in result.reason


def test_unreachable_registry_gives_the_reason(stored):
    result = ensure_pulled(FakePullEngine({}), stored, record_of(stored, pub()))  # type: ignore
    assert result.tag is None and "127.0.0.1:5000 did not serve it" in result.reason


def test_engine_selection(monkeypatch):
    from reprobox import engine as eng

    monkeypatch.delenv("REPROBOX_ENGINE", raising=False)
    monkeypatch.setattr(eng, "_ENGINE", None)
    eng.select_engine("podman")
    try:
        assert isinstance(eng.get_engine(), eng.PodmanEngine)
        assert os.environ["REPROBOX_ENGINE"] == "podman"  # the DVC stage launcher inherits it
        eng.select_engine("docker")
        assert isinstance(eng.get_engine(), eng.DockerEngine)
        with refuses(EngineError, names=["unknown container engine 'rkt'", "docker or podman"]):
            eng.select_engine("rkt")
    finally:
        eng.select_engine(None)
    assert "REPROBOX_ENGINE" not in os.environ


def test_podman_that_is_not_installed_names_the_fix(monkeypatch):
    from reprobox.engine import PodmanEngine
    from reprobox.errors import EngineError

    engine = PodmanEngine("/nonexistent/podman")
    assert engine.available() is False
    with refuses(EngineError, names=["podman is not installed", "setup-podman.sh"]):
        engine.info()


def test_a_registry_this_machine_does_not_trust_is_never_pulled_from(stored, monkeypatch):
    """Labels are strings anyone can set: an image from a registry the capture chose could match
    them and fake any fingerprint, so only registries of the host's configuration are used."""
    theirs = pub(DIGEST, "evil.example.net/x/repo")
    engine = FakePullEngine({theirs.reference: _labels(stored)})
    result = ensure_pulled(engine, stored, record_of(stored, theirs))  # type: ignore
    assert engine.pulled == []
    assert result.tag is None
    assert "the registry evil.example.net is not one this machine trusts" in result.reason


def test_trusted_registries_come_from_the_users_config_and_environment(tmp_path, monkeypatch):
    from reprobox.registry import trusted_registries

    cfg = tmp_path / "cfg" / "reprobox"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text(
        '[registry]\ndefault = "reg.example.org/team"\ntrusted = ["127.0.0.1:5000"]\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("REPROBOX_REGISTRIES", "mirror.example.com:443")
    assert trusted_registries() == ("mirror.example.com:443", "reg.example.org", "127.0.0.1:5000")
    (cfg / "config.toml").write_text('[registry]\ntrusted = "127.0.0.1:5000"\n')
    with refuses(
        UsageError, names=[str(cfg / "config.toml"), "[registry] trusted must be a list of strings"]
    ):
        trusted_registries()


def test_a_daemon_named_by_docker_host_is_never_swapped_for_podman(monkeypatch, tmp_path):
    """DOCKER_HOST names the daemon the user wants: down, it is an error to report (naming the
    fix), not a reason to build with another engine behind the user's back."""
    from reprobox import engine as eng

    monkeypatch.delenv("REPROBOX_ENGINE", raising=False)
    monkeypatch.setattr(eng.DockerEngine, "available", lambda self: False)
    monkeypatch.setattr(eng.PodmanEngine, "available", lambda self: True)
    monkeypatch.setattr(eng.proc, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(eng, "_ENGINE", None)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    assert isinstance(eng.get_engine(), eng.DockerEngine)
    monkeypatch.setattr(eng, "_ENGINE", None)
    monkeypatch.delenv("DOCKER_HOST")
    assert isinstance(eng.get_engine(), eng.PodmanEngine)
    monkeypatch.setattr(eng, "_ENGINE", None)


@pytest.mark.parametrize(
    "text, named",
    [
        ('[registry]\ndefault = "not a registry"\n', "[registry] default"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    ],
)
def test_a_bad_config_is_named_as_the_user_wrote_it(tmp_path, monkeypatch, text, named):
    """A bad default was blamed on --registry, which nobody had given; a deeply nested file
    was an internal error."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "reprobox").mkdir()
    (tmp_path / "reprobox" / "config.toml").write_text(text)
    with refuses(UsageError, names=["config.toml", named]) as info:
        configured_registry()
    assert "--registry" not in info.value.message


class FakePushEngine:
    """Tags and pushes in memory; a push that fails as an unreachable registry does."""

    name = "docker"

    def __init__(self, tags: set[str]) -> None:
        self.tags = set(tags)

    def available(self) -> bool:
        return True

    def image_exists(self, ref: str) -> bool:
        return ref in self.tags

    def image_labels(self, ref: str) -> dict[str, str]:
        return self.labels

    def tag_image(self, image: str, tag: str) -> None:
        self.tags.add(tag)

    def remove_image(self, tag: str) -> None:
        self.tags.discard(tag)

    def push_image(self, ref: str, progress: object = None) -> str:
        from reprobox.errors import EngineError

        raise EngineError("the registry 127.0.0.1:1 does not answer")


@pytest.mark.parametrize("pushed_before", [False, True])
def test_a_failed_push_leaves_no_tag_of_it_behind(stored, pushed_before):
    from reprobox.errors import EngineError
    from reprobox.registry import push
    from reprobox.store import Store

    store = Store(stored.path.parents[2])
    local = f"reprobox/repo:{stored.id}"
    remote = f"127.0.0.1:1/team/repo:{stored.id}"
    engine = FakePushEngine({local} | ({remote} if pushed_before else set()))
    engine.labels = _labels(stored)
    with refuses(EngineError, names="does not answer"):
        push(store, stored, registry="127.0.0.1:1/team", engine=engine, build=False)  # type: ignore[arg-type]
    # a tag that was there before stays: it names what an earlier push sent
    assert (remote in engine.tags) == pushed_before and local in engine.tags
