"""The probe's answer cache against a real venv and real pip installs (no network: the wheels are
built here and installed with ``pip --no-index``).

Every change the probe would see must make the next capture probe again, and an answer served
from the cache must give the same record, byte for byte, as a capture that probed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from reprobox.capture import probecache
from reprobox.pipeline import capture_experiment
from reprobox.capture import python as py

from ..conftest import git


def _wheel(where: Path, name: str, version: str, body: str = "VALUE = 1\n") -> Path:
    """A minimal, valid pure-Python wheel (module + dist-info with a hashed RECORD)."""
    files = {
        f"{name}/__init__.py": body.encode(),
        f"{name}/data.txt": b"payload\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = where / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


def _pip(vpy: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(vpy), *args, "-q"],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A venv (no pip inside) with one installed package, and a user cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    vpy = target / "bin" / "python"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _pip(vpy, "install", "--no-index", "--no-deps", str(_wheel(wheels, "alpha", "1.0")))
    site = Path(
        subprocess.run(
            [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    return {
        "python": vpy,
        "site": site,
        "wheels": wheels,
        "cache": tmp_path / "cache",
        "answers": tmp_path / "xdg" / "reprobox" / "probe",
    }


@pytest.fixture
def probes(monkeypatch) -> list[list[str]]:
    """The probe processes started (the real ones run; they are only counted)."""
    started: list[list[str]] = []
    real = py.proc.run

    def counting(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(str(a) == str(py.PROBE) for a in argv):
            started.append([str(a) for a in argv])
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(py.proc, "run", counting)
    return started


def _probe(env: dict[str, Any]) -> dict[str, Any]:
    return py.run_probe(env["python"], cache_dir=env["cache"], environ=os.environ)


def _uncached(env: dict[str, Any]) -> dict[str, Any]:
    return py.run_probe(env["python"], cache_dir=None, environ=os.environ)


def _settle(env: dict[str, Any]) -> None:
    """Make the last change older than the cache's racy window (ctime cannot be set back, so
    the cache would rightly refuse to store an answer read just after a change)."""
    cutoff = probecache._RACY_NS
    newest = max(os.stat(p).st_ctime_ns for p in env["site"].rglob("*"))
    import time

    while time.time_ns() - newest <= cutoff:
        time.sleep(0.2)


def _names(raw: dict[str, Any]) -> dict[str, str]:
    return {d["name"]: d["version"] for d in raw["distributions"]}


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    """The answer without the probe's own cache statistics (hits/misses of its ELF cache)."""
    out = json.loads(json.dumps(raw))
    for key in ("cache_hits", "cache_misses"):
        (out.get("native") or {}).pop(key, None)
    return out


def test_an_unchanged_environment_is_answered_from_the_cache(env, probes):
    _settle(env)
    first = _probe(env)
    assert len(probes) == 1
    kept = list(env["answers"].glob("*-answer.json"))
    assert kept, "the answer was not kept"
    assert not list(env["cache"].glob("*answer*")), "the answer was kept in the checkout"
    assert oct(kept[0].stat().st_mode & 0o777) == "0o600"
    second = _probe(env)
    assert len(probes) == 1, "the unchanged environment was probed again"
    assert _comparable(second) == _comparable(first)
    assert second["native"]["cache_misses"] == 0  # nothing was parsed again
    assert _comparable(second) == _comparable(_uncached(env))


def test_installing_and_removing_a_package_probes_again(env, probes):
    _settle(env)
    _probe(env)
    _probe(env)
    assert len(probes) == 1
    _pip(
        env["python"],
        "install",
        "--no-index",
        "--no-deps",
        str(_wheel(env["wheels"], "beta", "2.0")),
    )
    after_install = _probe(env)
    assert len(probes) == 2
    assert _names(after_install).get("beta") == "2.0"
    _settle(env)
    _probe(env)  # stores the answer with beta
    _probe(env)
    assert len(probes) == 3
    _pip(env["python"], "uninstall", "-y", "beta")
    after_remove = _probe(env)
    assert len(probes) == 4
    assert "beta" not in _names(after_remove) and _names(after_remove).get("alpha") == "1.0"


def test_a_file_edited_in_place_probes_again_and_is_reported(env, probes):
    _settle(env)
    _probe(env)
    _probe(env)
    assert len(probes) == 1
    module = env["site"] / "alpha" / "__init__.py"
    old = module.read_bytes()
    with open(module, "r+b") as f:  # same size, same folder: only the file's own stat changes
        f.write(b"VALUE = 2\n")
    assert len(module.read_bytes()) == len(old)
    raw = _probe(env)
    assert len(probes) == 2, "a file edited in place was answered from the cache"
    alpha = next(d for d in raw["distributions"] if d["name"] == "alpha")
    assert [c["path"] for c in alpha.get("installed_changes", [])] == ["alpha/__init__.py"]
    assert _comparable(raw) == _comparable(_uncached(env))


def test_a_touched_file_or_a_new_file_probes_again(env, probes):
    _settle(env)
    _probe(env)
    data = env["site"] / "alpha" / "data.txt"
    os.utime(data, None)
    _probe(env)
    assert len(probes) == 2, "a touched file was answered from the cache"
    _settle(env)
    _probe(env)
    _probe(env)
    assert len(probes) == 3
    (env["site"] / "alpha" / "added.py").write_text("X = 1\n")
    raw = _probe(env)
    assert len(probes) == 4, "a file added to a package was answered from the cache"
    alpha = next(d for d in raw["distributions"] if d["name"] == "alpha")
    assert "alpha/added.py" in [c["path"] for c in alpha.get("installed_changes", [])]


def test_a_change_while_the_probe_runs_is_never_cached(env):
    raw = _uncached(env)
    memo = probecache.ResultCache(env["cache"] / "answer.json", env["python"], os.environ, py.PROBE)
    memo.probe_starts()
    os.utime(env["site"] / "alpha" / "data.txt", None)  # written after the probe started
    memo.store(raw)
    assert memo.load() is None
    assert memo.load() is None  # and stays refused: no fingerprint was taken from it


def test_another_environment_or_working_directory_is_not_served(env, probes, tmp_path, monkeypatch):
    _settle(env)
    _probe(env)
    _probe(env)
    assert len(probes) == 1
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    py.run_probe(env["python"], cache_dir=env["cache"], environ=dict(os.environ))
    assert len(probes) == 2, "a different LD_LIBRARY_PATH was answered from the cache"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    monkeypatch.chdir(tmp_path)
    _probe(env)
    assert len(probes) == 3, "another working directory was answered from the cache"


def test_a_damaged_cache_file_is_ignored(env, probes):
    _settle(env)
    _probe(env)
    answer = next(env["answers"].glob("*-answer.json"))
    data = json.loads(answer.read_text())
    data["paths"] = {"/": 3}
    answer.write_text(json.dumps(data))
    raw = _probe(env)
    assert len(probes) == 2 and _names(raw).get("alpha") == "1.0"


def test_hashing_every_file_is_never_cached(env, probes, monkeypatch):
    monkeypatch.setenv("REPROBOX_HASH_INSTALLED", "1")
    _settle(env)
    _probe(env)
    _probe(env)
    assert len(probes) == 2


def _capture_files(repo: Path, vpy: Path) -> dict[str, bytes]:
    out = capture_experiment(
        repo,
        python=str(vpy),
        lock=False,
        command="python train.py",
        environ={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    return {p.name: p.read_bytes() for p in sorted(out.stored.path.iterdir())}


def _repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with one commit, the working directory."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    (repo / "train.py").write_text("print(1)\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def test_a_cached_capture_writes_the_same_record_byte_for_byte(env, probes, tmp_path, monkeypatch):
    repo = _repo(tmp_path, monkeypatch)
    _settle(env)
    first = _capture_files(repo, env["python"])  # probes, keeps the answer
    shutil.rmtree(repo / ".reprobox" / "experiments")
    cached = _capture_files(repo, env["python"])  # served from the cache
    assert len(probes) == 1
    shutil.rmtree(repo / ".reprobox")
    shutil.rmtree(env["answers"])
    fresh = _capture_files(repo, env["python"])  # no cache at all: probes
    assert len(probes) == 2
    assert cached["environment.json"] == fresh["environment.json"] == first["environment.json"]
    strip = [json.loads(f["experiment.json"]) for f in (cached, fresh)]
    for doc in strip:  # the capture time (and so the id) is the only difference allowed
        doc.pop("created"), doc.pop("id", None)
    assert strip[0] == strip[1]
    assert sorted(cached) == sorted(fresh)


def test_an_entry_claiming_a_future_probe_start_is_refused(env, probes):
    """A first load trusts an entry only for changes older than its probe's start: a start time
    in the future (a clock set back, or a planted file) would vouch for anything."""
    _settle(env)
    _probe(env)
    answer = next(env["answers"].glob("*-answer.json"))
    data = json.loads(answer.read_text())
    assert "probe_started_ns" in data and "fingerprint" not in data
    data["probe_started_ns"] = data["probe_started_ns"] + 3600 * 10**9
    answer.write_text(json.dumps(data))
    _probe(env)
    assert len(probes) == 2, "an entry from the future was trusted"


def test_a_record_with_carriage_returns_is_read_and_its_answer_cached(env, probes):
    """Rows ending in a lone CR (a line end to csv's reader): the probe reads every row, the
    next capture is answered from the cache, and an edit in place of a listed file is seen."""
    record = env["site"] / "alpha-1.0.dist-info" / "RECORD"
    record.write_bytes(record.read_bytes().replace(b"\n", b"\r"))
    _settle(env)
    first = _probe(env)
    assert _names(first)["alpha"] == "1.0" and len(probes) == 1
    assert _comparable(_probe(env)) == _comparable(first)
    assert len(probes) == 1  # from the cache: its check read the same RECORD
    (env["site"] / "alpha" / "data.txt").write_bytes(b"PAYLOAD\n")  # same size, new content
    third = _probe(env)
    assert len(probes) == 2
    (alpha,) = [d for d in third["distributions"] if d["name"] == "alpha"]
    assert [(c["path"], c["change"]) for c in alpha.get("installed_changes", [])] == [
        ("alpha/data.txt", "modified")
    ]


def test_a_record_that_is_not_csv_is_named_and_the_capture_goes_on(env, probes):
    """A row over csv's field size limit: the probe says which RECORD it could not read (none
    of its files checked), and the cached answer's check does not stumble on it either."""
    import csv

    record = env["site"] / "alpha-1.0.dist-info" / "RECORD"
    record.write_bytes(record.read_bytes() + b'"' + b"x" * (csv.field_size_limit() + 1) + b'",,\n')
    _settle(env)
    first = _probe(env)
    assert _names(first)["alpha"] == "1.0"
    assert any(str(record) in w and "not a CSV file" in w for w in first["warnings"])
    assert _comparable(_probe(env)) == _comparable(first)
    assert len(probes) == 1


def test_a_broken_install_stops_the_capture_naming_it_and_writes_nothing(
    env, tmp_path, monkeypatch
):
    """A dist-info without METADATA (an interrupted install): the capture names the folder and
    the fix, and leaves no experiment behind; `diff` and a rerun's check would still read it."""
    from reprobox.errors import UsageError

    meta = env["site"] / "alpha-1.0.dist-info"
    (meta / "METADATA").unlink()
    repo = _repo(tmp_path, monkeypatch)
    with pytest.raises(UsageError) as caught:
        _capture_files(repo, env["python"])
    assert str(meta) in caught.value.message and "no METADATA file" in caught.value.message
    assert "--force-reinstall --no-deps alpha" in caught.value.hint
    experiments = repo / ".reprobox" / "experiments"
    assert not experiments.exists() or not any(experiments.iterdir())
    assert _names(_uncached(env))["alpha"] == ""  # the probe itself still reports it
