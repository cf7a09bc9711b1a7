"""conda-meta records in the shapes conda, micromamba and pixi/rattler write them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reprobox.capture import conda
from reprobox.diff import channel_display
from reprobox.model import (
    CondaEnvironment,
    CondaPackage,
    Environment,
    Interpreter,
    Package,
    PackageSource,
)

META = Path(__file__).parents[2] / "fixtures" / "conda" / "meta"


def test_conda_forge_numpy_with_openblas() -> None:
    scan = conda.read_prefix(META / "conda-forge-openblas")
    env = scan.environment
    assert env.manager == "conda"
    assert env.platform == "linux-64"
    assert env.channels == ("https://conda.anaconda.org/conda-forge",)
    numpy = env.package("numpy")
    assert numpy is not None
    assert (numpy.version, numpy.build, numpy.build_number) == ("1.26.4", "py311h64a7726_0", 0)
    assert numpy.url == (
        "https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-py311h64a7726_0.conda"
    )
    assert numpy.channel == "https://conda.anaconda.org/conda-forge"
    assert numpy.subdir == "linux-64"
    assert numpy.md5 and len(numpy.md5) == 32 and numpy.sha256 and len(numpy.sha256) == 64
    assert numpy.requested_spec == "conda-forge::numpy=1.26"
    assert numpy.files == 4 and numpy.files_sha256
    assert "libcblas >=3.9.0,<4.0a0" in numpy.depends
    blas = env.package("libblas")
    assert blas is not None and blas.build == "21_linux64_openblas" and blas.build_number == 21
    tqdm = env.package("tqdm")
    assert tqdm is not None and tqdm.noarch == "python" and tqdm.subdir == "noarch"
    # history: what the user asked for, in order, across two commands
    assert env.requested_specs == ("python=3.11", "conda-forge::numpy=1.26", "tqdm")
    assert scan.owners["lib/libopenblas.so.0"] == "libopenblas"
    assert scan.owners["lib/python3.11/site-packages/numpy-1.26.4.dist-info/METADATA"] == "numpy"


def test_byte_code_caches_do_not_count_as_files(tmp_path: Path) -> None:
    # conda compiles noarch packages at link time and lists the .pyc; py-rattler does not
    prefix = _copy(tmp_path)
    rec = prefix / "conda-meta" / "tqdm-4.66.2-pyhd8ed1ab_0.json"
    before = conda.read_prefix(prefix).environment.package("tqdm")
    data = json.loads(rec.read_text())
    data["files"].append("lib/python3.11/site-packages/tqdm/__pycache__/__init__.cpython-311.pyc")
    rec.write_text(json.dumps(data))
    after = conda.read_prefix(prefix).environment.package("tqdm")
    assert before is not None and after is not None
    assert (after.files, after.files_sha256) == (before.files, before.files_sha256)


def test_defaults_numpy_with_mkl_older_conda_without_sha256() -> None:
    env = conda.read_prefix(META / "defaults-mkl").environment
    assert env.channels == ("https://repo.anaconda.com/pkgs/main",)
    assert channel_display(env.channels[0]) == "pkgs/main"
    mkl = env.package("mkl")
    assert mkl is not None and mkl.sha256 is None and mkl.md5
    assert mkl.build == "h213fc3f_46344" and mkl.build_number == 46344
    assert env.package("blas") is not None and env.package("blas").build == "mkl"  # type: ignore
    assert env.requested_specs == ("python=3.11", "numpy")


def test_pytorch_with_cuda_from_micromamba() -> None:
    env = conda.read_prefix(META / "pytorch-cuda-micromamba").environment
    assert env.manager == "micromamba"
    assert set(env.channels) == {
        "https://conda.anaconda.org/conda-forge",
        "https://conda.anaconda.org/pytorch",
        "https://conda.anaconda.org/nvidia",
    }
    torch = env.package("pytorch")
    assert torch is not None and torch.build == "py3.11_cuda12.1_cudnn8.9.2_0"
    assert torch.requested_spec is None  # micromamba writes "" there
    assert channel_display(env.package("cuda-cudart").channel) == "nvidia"  # type: ignore
    assert env.requested_specs == ("pytorch", "pytorch-cuda=12.1")


def test_pixi_rattler_shape_and_tokens_never_kept() -> None:
    scan = conda.read_prefix(META / "pixi-rattler")
    env = scan.environment
    assert env.manager == "pixi"
    lib = env.package("internal-lib")
    assert lib is not None
    assert lib.url == "https://conda.corp.example/private/linux-64/internal-lib-2.0-h1234_0.conda"
    assert lib.channel == "https://conda.corp.example/private"
    assert lib.requested_spec == "internal-lib"
    text = json.dumps(env.to_dict())
    assert "SECRETTOKEN" not in text and "hunter2" not in text
    assert env.requested_specs == ("internal-lib", "python 3.12.*")  # record order


def test_rattler_without_history_is_named_rattler(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    shutil.copytree(META / "pixi-rattler", prefix)
    (prefix / "conda-meta" / "pixi").unlink()
    (prefix / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert conda.read_prefix(prefix).environment.manager == "rattler"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("conda-forge", "https://conda.anaconda.org/conda-forge"),
        ("pkgs/main", "https://repo.anaconda.com/pkgs/main"),
        (
            "https://conda.anaconda.org/conda-forge/linux-64",
            "https://conda.anaconda.org/conda-forge",
        ),
        ("https://conda.anaconda.org/conda-forge/", "https://conda.anaconda.org/conda-forge"),
        ("https://h.example/t/abc-123/chan/noarch", "https://h.example/chan"),
        ("file:///srv/channel/", "file:///srv/channel"),
        ("/srv/channel", "file:///srv/channel"),
    ],
)
def test_channel_urls(value: str, expected: str) -> None:
    assert conda.channel_url(value) == expected


# --------------------------------------------------------------------------- bad input


def _copy(tmp_path: Path, shape: str = "conda-forge-openblas") -> Path:
    prefix = tmp_path / "env"
    shutil.copytree(META / shape, prefix)
    return prefix


def test_corrupt_record_names_the_package(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    rec = prefix / "conda-meta" / "libopenblas-0.3.26-pthreads_h413a1c8_0.json"
    rec.write_text(rec.read_text()[:200])  # truncated
    with pytest.raises(conda.CondaMetaError) as err:
        conda.read_prefix(prefix)
    assert "libopenblas-0.3.26-pthreads_h413a1c8_0" in err.value.message
    assert "not valid JSON" in err.value.message
    assert err.value.exit_code == 2
    assert "force-reinstall libopenblas" in (err.value.hint or "")


def test_partial_record_names_the_package_and_the_missing_field(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    rec = prefix / "conda-meta" / "numpy-1.26.4-py311h64a7726_0.json"
    data = json.loads(rec.read_text())
    del data["build"]
    rec.write_text(json.dumps(data))
    with pytest.raises(conda.CondaMetaError) as err:
        conda.read_prefix(prefix)
    assert "numpy-1.26.4-py311h64a7726_0" in err.value.message and "build" in err.value.message


def test_record_that_is_not_an_object(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    (prefix / "conda-meta" / "tqdm-4.66.2-pyhd8ed1ab_0.json").write_text("[1, 2]")
    with pytest.raises(conda.CondaMetaError) as err:
        conda.read_prefix(prefix)
    assert "tqdm-4.66.2-pyhd8ed1ab_0" in err.value.message


def test_package_without_url_is_recorded_with_a_warning_naming_it(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    rec = prefix / "conda-meta" / "tqdm-4.66.2-pyhd8ed1ab_0.json"
    data = json.loads(rec.read_text())
    data.pop("url")
    data["channel"] = "<develop>"
    rec.write_text(json.dumps(data))
    scan = conda.read_prefix(prefix)
    assert any("tqdm 4.66.2" in w and "no download URL" in w for w in scan.warnings)
    tqdm = scan.environment.package("tqdm")
    assert tqdm is not None and tqdm.url is None and tqdm.channel is None


def test_pip_over_conda_is_recorded_twice_and_said(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    scan = conda.read_prefix(prefix)
    sp = prefix / "lib/python3.11/site-packages"
    dists = [{"name": "numpy", "metadata_dir": str(sp / "numpy-2.0.0.dist-info")}]
    kept, warnings = conda.split_distributions(
        [Package("numpy", "2.0.0", installer="pip")], dists, scan
    )
    assert [p.version for p in kept] == ["2.0.0"]
    assert warnings == [
        "numpy 2.0.0 was installed by pip over conda's numpy 1.26.4: both are "
        "recorded, and a rebuild installs them in that order"
    ]


# --------------------------------------------------------------------------- split, libraries


def test_python_distributions_owned_by_conda_are_reported_once(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    scan = conda.read_prefix(prefix)
    sp = prefix / "lib/python3.11/site-packages"
    dists = [
        {"name": "numpy", "metadata_dir": str(sp / "numpy-1.26.4.dist-info")},
        {"name": "six", "metadata_dir": str(sp / "six-1.16.0.dist-info")},
        {"name": "stray", "metadata_dir": str(sp / "stray-1.0.dist-info")},
    ]
    pkgs = [
        Package("numpy", "1.26.4", installer="conda"),
        Package("six", "1.16.0", installer="pip"),
        Package("stray", "1.0", installer="conda"),
    ]
    kept, warnings = conda.split_distributions(pkgs, dists, scan)
    assert [p.name for p in kept] == ["six", "stray"]
    assert kept[0].installer == "pip"
    assert any(w.startswith("stray 1.0 says conda installed it") for w in warnings)


def test_libraries_map_to_the_owning_conda_package(tmp_path: Path) -> None:
    prefix = _copy(tmp_path)
    scan = conda.read_prefix(prefix)
    env, unowned = conda.attribute_libraries(
        scan,
        {
            "libopenblas.so.0": str(prefix / "lib" / "libopenblasp-r0.3.26.so"),
            "libstdc++.so.6": str(prefix / "lib" / "libstdc++.so.6.0.32"),
            "libmystery.so.1": str(prefix / "lib" / "libmystery.so.1"),
        },
    )
    assert env.package("libopenblas").libraries == ("libopenblas.so.0",)  # type: ignore
    assert env.package("libstdcxx-ng").libraries == ("libstdc++.so.6",)  # type: ignore
    assert list(unowned) == ["libmystery.so.1"]


# --------------------------------------------------------------------------- the model


def _env(conda_env: CondaEnvironment | None = None) -> Environment:
    return Environment(
        interpreter=Interpreter("cpython", "3.11.7"),
        packages=(Package("six", "1.16.0", PackageSource("index")),),
        conda=conda_env,
    )


def test_digest_without_conda_is_unchanged() -> None:
    # pinned: the same as before conda support existed (no "conda" key in the identity)
    env = _env()
    assert "conda" not in env.identity() and "conda" not in env.to_dict()
    assert env.digest == ("sha256:15f7b11a1c1161645ce217b639607bc674a5adcbe0a2a5648ff5144bbf951a13")


def test_digest_covers_conda_packages_and_round_trips() -> None:
    scan = conda.read_prefix(META / "conda-forge-openblas")
    env = _env(scan.environment)
    assert env.digest != _env().digest
    again = Environment.from_dict(json.loads(json.dumps(env.to_dict())))
    assert again == env and again.digest == env.digest
    pkgs = list(scan.environment.packages)
    from dataclasses import replace

    pkgs[0] = replace(pkgs[0], build=pkgs[0].build + "x")
    assert (
        _env(CondaEnvironment(packages=tuple(pkgs))).digest
        != _env(CondaEnvironment(packages=scan.environment.packages)).digest
    )


def test_conda_package_from_dict_refuses_wrong_types() -> None:
    from reprobox.errors import StoreError

    with pytest.raises(StoreError) as err:
        CondaPackage.from_dict({"name": "numpy", "version": "1", "build": 3})
    assert "'numpy'" in err.value.message and "build" in err.value.message
