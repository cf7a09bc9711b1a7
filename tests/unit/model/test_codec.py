"""The one record codec: every record type written byte for byte as the first release wrote it.

``tests/golden/records/*.json`` were written by the hand-written ``to_dict`` methods this codec
replaced (seals, ids and environment digests are hashes of these bytes): each record here must
encode to exactly those bytes and read back to an equal record. The real records under
``tests/fixtures`` must survive a read and a write unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from reprobox.errors import RecordRefused, SchemaError
from reprobox.model.codec import Record, meta, spec
from reprobox.model import (
    GPU,
    INLINE_METRICS,
    AptSource,
    CondaEnvironment,
    CondaPackage,
    DvcInfo,
    DvcOutput,
    Environment,
    Experiment,
    GitInfo,
    Hardware,
    InstalledChange,
    Interpreter,
    LoadedLibrary,
    OSInfo,
    OutputFile,
    Package,
    PackageSource,
    RunUsage,
    SystemPackage,
    pretty_json,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "golden" / "records"
FIXTURES = sorted(
    p
    for p in (ROOT / "fixtures").rglob("*.json")
    if '"schema": "reprobox.' in p.read_text(encoding="utf-8")
)


def _full_environment() -> Environment:
    sources = [
        PackageSource("index"),
        PackageSource(
            "vcs",
            url="https://github.com/o/r.git",
            vcs="git",
            commit="a" * 40,
            requested_revision="main",
            subdirectory="pkg",
        ),
        PackageSource(
            "directory", url="file:///w/src", path="src/lib", editable=True, in_repo=True
        ),
        PackageSource("directory", path="/opt/other"),
        PackageSource(
            "archive", url="https://files.example/x-1.0.tar.gz", hash="sha256=" + "b" * 64
        ),
    ]
    packages = [
        Package(
            f"pkg-{i}",
            f"1.{i}",
            source=src,
            installer="pip" if i % 2 else None,
            requested=bool(i % 2),
            wheel_tags=("py3-none-any",) if i else (),
            display_name=("Pkg_" + str(i)) if i == 1 else None,
        )
        for i, src in enumerate(sources)
    ]
    conda = CondaEnvironment(
        packages=(
            CondaPackage(
                "numpy",
                "1.26.4",
                "py311h64a7726_0",
                build_number=0,
                channel="https://conda.anaconda.org/conda-forge",
                subdir="linux-64",
                url="https://conda.anaconda.org/conda-forge/linux-64/"
                "numpy-1.26.4-py311h64a7726_0.conda",
                md5="c" * 32,
                sha256="d" * 64,
                depends=("python >=3.11",),
                requested_spec="numpy=1.26",
                noarch=None,
                files=812,
                files_sha256="e" * 64,
                libraries=("libopenblas.so.0",),
            ),
            CondaPackage("tqdm", "4.66.2", "pyhd8ed1ab_0", noarch="python"),
        ),
        channels=("https://conda.anaconda.org/conda-forge",),
        platform="linux-64",
        manager="micromamba",
        requested_specs=("numpy=1.26",),
    )
    return Environment(
        interpreter=Interpreter(
            "cpython",
            "3.11.7",
            abi="cp311",
            soabi="cpython-311-x86_64-linux-gnu",
            platform="linux-x86_64",
            build="main",
            compiler="GCC 12.2.0",
            kind="venv",
            gil_disabled=False,
            platform_tags=("manylinux_2_36_x86_64",),
            executable="/w/.venv/bin/python",
        ),
        packages=tuple(packages),
        system_packages=(
            SystemPackage("libgomp1", "12.2.0-14", arch="amd64", libraries=("libgomp.so.1",)),
            SystemPackage("musl", "1.2.4-r2", manager="apk"),
        ),
        os=OSInfo(
            id="debian",
            version_id="12",
            codename="bookworm",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            id_like=("debian",),
            kernel="6.1.0",
            glibc="2.36",
            arch="x86_64",
        ),
        hardware=Hardware(
            cpu_model="EPYC",
            cpu_vendor="AuthenticAMD",
            cpu_cores=16,
            cpu_flags=("avx2", "fma"),
            memory_bytes=1 << 36,
            gpus=(
                GPU(
                    "H200",
                    memory_mib=141312,
                    driver="550.54",
                    cuda_driver="12.4",
                    compute_capability="9.0",
                ),
                GPU("T4"),
            ),
            cuda_runtime="12.1",
            cudnn="8.9",
            cuda_source="torch",
        ),
        unowned_libraries=("liba.so.1", "libz.so.1"),
        missing_libraries=("libcuda.so.1",),
        conda=conda,
        installed_changes=(
            InstalledChange(
                "pkg-0", "pkg_0/x.py", "modified", size=12, sha256="f" * 64, replay="replay-0.txt"
            ),
            InstalledChange("pkg-1", "pkg_1/gone.py", "missing"),
        ),
        apt_sources=(
            AptSource(
                "http://deb.debian.org/debian",
                ("bookworm", "bookworm-updates"),
                ("main",),
                signed_by="debian.gpg",
                snapshot="20250520T000000Z",
            ),
            AptSource("http://security.debian.org/debian-security", ("bookworm-security",)),
        ),
    )


def _full_experiment(env: Environment) -> Experiment:
    return Experiment(
        name="full",
        command="python train.py --lr 0.1",
        cwd="src",
        git=GitInfo(
            "a" * 40,
            branch="main",
            remote="https://github.com/o/r.git",
            dirty=True,
            patch="patch.diff",
            patch_sha256="1" * 64,
            untracked=("notes.txt",),
        ),
        environment_digest=env.digest,
        created="2026-11-27T10:23:44Z",
        tool_version="0.1.0",
        command_kind="shell",
        dvc=DvcInfo(
            lock_digest="sha256:" + "2" * 64,
            outputs=(
                DvcOutput("data/out.csv", "3" * 32, stage="train"),
                DvcOutput("models", "4" * 32 + ".dir", hash_name="md5-dos2unix"),
            ),
            params={"train": {"lr": 0.1, "layers": [1, 2]}},
            stages=("train",),
            remote="storage",
            metrics_files=("metrics.json",),
        ),
        metrics={"metrics.json": {"acc": 0.9, "loss.final": 0.1}, INLINE_METRICS: {"n": 3}},
        outputs=(OutputFile("model.pkl", "5" * 64, 1024),),
        env={"OMP_NUM_THREADS": "4", "TZ": "UTC"},
        files={"environment.json": "sha256:" + "6" * 64, "patch.diff": "sha256:" + "1" * 64},
        supersedes="0123456789ab",
        run=RunUsage(
            0,
            wall_seconds=1.5,
            peak_memory_kib=2048,
            processes=2,
            modules={"numpy": ("numpy",), "<repo>": ("train", "util")},
            libraries=(LoadedLibrary("libgomp.so.1", "system:libgomp1"),),
            dlopen_failed=("libcuda.so",),
        ),
    )


def records() -> dict[str, Any]:
    """name -> record: every record type, with every field set and with only its defaults."""
    env = _full_environment()
    minimal_env = Environment(interpreter=Interpreter("cpython", "3.12.1"))
    exp = _full_experiment(env)
    minimal_exp = Experiment(
        name="min",
        command=None,
        cwd=".",
        git=GitInfo("a" * 7),
        environment_digest=minimal_env.digest,
        created="2026-01-31T12:00:00Z",
        tool_version="unknown",
        command_kind="none",
        files={"environment.json": "sha256:" + "0" * 64},
    )
    declared = dataclasses.replace(
        exp, id="", dvc=DvcInfo(), supersedes=None, run=RunUsage(3, source="declared")
    )
    return {
        "environment-full": env,
        "environment-minimal": minimal_env,
        "experiment-full": exp.with_id(),
        "experiment-minimal": minimal_exp.with_id(),
        "experiment-declared-run": declared.with_id(),
    }


def _text(record: Any) -> str:
    return pretty_json(record.to_dict())


@pytest.mark.parametrize("name", sorted(records()))
def test_each_record_is_written_as_the_first_release_wrote_it(name: str) -> None:
    record = records()[name]
    path = GOLDEN / f"{name}.json"
    if os.environ.get("REPROBOX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_text(record))
    assert path.is_file(), f"missing golden file {path}"
    assert _text(record) == path.read_text(encoding="utf-8")
    again = type(record).from_dict(json.loads(path.read_text(encoding="utf-8")), name)
    assert again == record
    assert _text(again) == path.read_text(encoding="utf-8")


def test_the_records_cover_every_record_type() -> None:
    seen: set[type] = set()

    def walk(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            seen.add(type(value))
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)

    for record in records().values():
        walk(record)
    assert seen == {
        GPU,
        AptSource,
        CondaEnvironment,
        CondaPackage,
        DvcInfo,
        DvcOutput,
        Environment,
        Experiment,
        GitInfo,
        Hardware,
        InstalledChange,
        Interpreter,
        LoadedLibrary,
        OSInfo,
        OutputFile,
        Package,
        PackageSource,
        RunUsage,
        SystemPackage,
    }


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_real_records_read_and_write_back_byte_for_byte(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    kind = Experiment if data["schema"].startswith("reprobox.experiment/") else Environment
    record = kind.from_dict(data, str(path))
    assert _text(record) == text
    if kind is Experiment:
        assert record.content_matches_id


def test_fixtures_were_found() -> None:
    assert len(FIXTURES) >= 5


def test_what_the_writer_leaves_out() -> None:
    assert "display_name" not in Package("a", "1", display_name="a").to_dict()
    assert Package("a", "1", display_name="A").to_dict()["display_name"] == "A"
    env = Environment(Interpreter("cpython", "3.11.7"), unowned_libraries=("z", "a"))
    assert env.to_dict()["unowned_libraries"] == ["a", "z"]
    assert "editable" not in PackageSource("index").to_dict()
    assert PackageSource("directory", path="x").to_dict()["editable"] is False
    assert (
        "run"
        not in Experiment.from_dict(
            json.loads((GOLDEN / "experiment-minimal.json").read_text(encoding="utf-8"))
        ).to_dict()
    )


def test_a_wrong_type_is_refused_naming_the_field() -> None:
    data = json.loads((GOLDEN / "experiment-full.json").read_text(encoding="utf-8"))
    data["git"]["dirty"] = "yes"
    with pytest.raises(RecordRefused, match="'dirty'"):
        Experiment.from_dict(data)
    data = json.loads((GOLDEN / "environment-full.json").read_text(encoding="utf-8"))
    data["packages"][0]["wheel_tags"] = [1]
    with pytest.raises(RecordRefused, match="wheel_tags"):
        Environment.from_dict(data)
    del data["interpreter"]["version"]
    with pytest.raises(RecordRefused, match="'version'"):
        Environment.from_dict(data)


def test_a_missing_or_unknown_schema_is_refused() -> None:
    data = json.loads((GOLDEN / "environment-minimal.json").read_text(encoding="utf-8"))
    data["schema"] = "reprobox.environment/99"
    with pytest.raises(SchemaError, match="reprobox.environment/99"):
        Environment.from_dict(data)
    del data["schema"]
    with pytest.raises(SchemaError, match="no schema field"):
        Environment.from_dict(data)


def test_a_changed_environment_is_refused_by_its_digest() -> None:
    data = json.loads((GOLDEN / "environment-full.json").read_text(encoding="utf-8"))
    data["packages"][0]["version"] = "9.9"
    with pytest.raises(RecordRefused, match="digest"):
        Environment.from_dict(data)


def test_unknown_enumerated_values_are_refused_naming_them() -> None:
    with pytest.raises(RecordRefused, match="'ftp'"):
        PackageSource.from_dict({"kind": "ftp"})
    with pytest.raises(RecordRefused, match="'renamed'"):
        InstalledChange.from_dict({"package": "a", "path": "b", "change": "renamed"})
    with pytest.raises(RecordRefused, match="exit_status"):
        RunUsage.from_dict({"exit_status": True})


def test_records_read_never_share_a_mutable_default() -> None:
    first, second = DvcInfo.from_dict({}), DvcInfo.from_dict({})
    assert first.params == {} and first.params is not second.params
    assert (
        Experiment.from_dict(
            {
                **json.loads((GOLDEN / "experiment-minimal.json").read_text(encoding="utf-8")),
                "cwd": None,
            }
        ).cwd
        == "."
    )


@dataclasses.dataclass(frozen=True)
class _Renamed(Record):
    _where = "renamed"

    python_version: str = dataclasses.field(metadata=meta(key="python"))
    tags: tuple[str, ...] = spec((), key="wheel-tags", sort=True)


def test_a_renamed_key_is_written_and_read_under_its_json_name() -> None:
    record = _Renamed("3.11.7", ("b", "a"))
    assert record.to_dict() == {"python": "3.11.7", "wheel-tags": ["a", "b"]}
    assert _Renamed.from_dict({"python": "3.12.1"}) == _Renamed("3.12.1")
    with pytest.raises(RecordRefused, match="missing field 'python'"):
        _Renamed.from_dict({"python_version": "3.12.1"})
