"""Choosing the conda backend, and verify's pure comparison of conda records."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.backends import choose_backend
from reprobox.backends.conda import CondaBackend
from reprobox.lock.condafetch import require_conda
from reprobox.capture import conda
from reprobox.errors import UsageError
from reprobox.model import CondaEnvironment, Environment, Interpreter
from reprobox.verify import Observed, compare_conda, compare_environments

META = Path(__file__).parents[2] / "fixtures" / "conda" / "meta"


def _conda_env() -> Environment:
    return Environment(
        interpreter=Interpreter("cpython", "3.11.8"),
        conda=conda.read_prefix(META / "conda-forge-openblas").environment,
    )


class _Engine:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def available(self) -> bool:
        return self.answers


def test_auto_picks_docker_then_the_conda_backend_for_a_conda_capture() -> None:
    from reprobox.backends.docker import DockerBackend

    env = _conda_env()
    backend, why = choose_backend("auto", _Engine(True), environment=env)
    assert isinstance(backend, DockerBackend) and why == "auto: the container engine answered"
    backend, why = choose_backend("auto", _Engine(False), environment=env)
    assert isinstance(backend, CondaBackend)
    assert why.startswith("auto: no container engine") and "conda environment" in why
    backend, why = choose_backend("conda")
    assert isinstance(backend, CondaBackend) and why == "--backend conda"


def test_venv_backend_refuses_a_conda_capture() -> None:
    with pytest.raises(UsageError) as err:
        choose_backend("venv", environment=_conda_env())
    assert "--backend venv" in err.value.message
    assert "--backend conda" in (err.value.hint or "")


def test_conda_backend_refuses_a_capture_without_conda() -> None:
    env = Environment(interpreter=Interpreter("cpython", "3.11.7"))
    with pytest.raises(UsageError) as err:
        require_conda(env, "abc123def456")
    assert "abc123def456" in err.value.message and "--backend venv" in (err.value.hint or "")


def test_compare_conda_names_each_difference() -> None:
    expected = _conda_env().conda
    assert expected is not None
    assert compare_conda(expected, expected) == []
    pkgs = {p.name: p for p in expected.packages}
    observed = CondaEnvironment(
        packages=(
            replace(pkgs["numpy"], build="py311hXXXX_0"),
            replace(pkgs["libopenblas"], files_sha256="0" * 64),
            *[p for n, p in pkgs.items() if n not in ("numpy", "libopenblas", "tqdm")],
            replace(pkgs["tqdm"], name="extra-pkg"),
        )
    )
    messages = [d.message for d in compare_conda(expected, observed)]
    assert (
        "conda package numpy: build differ (captured py311h64a7726_0, rebuilt py311hXXXX_0)"
        in messages
    )
    assert any(m.startswith("conda package libopenblas: its files differ") for m in messages)
    assert any(
        m.startswith("conda package tqdm 4.66.2 (pyhd8ed1ab_0) is missing") for m in messages
    )
    assert any(
        m.startswith("conda package extra-pkg 4.66.2") and "not in the captured" in m
        for m in messages
    )
    none = compare_conda(expected, None)
    assert len(none) == 1 and "no conda-meta records" in none[0].message


def test_environment_comparison_includes_conda() -> None:
    env = _conda_env()
    obs = Observed(interpreter=env.interpreter, packages=(), system_packages={}, conda=None)
    diffs = compare_environments(env, obs)
    assert [d.kind for d in diffs] == ["conda-package"]


def test_conda_dockerfile_is_offline_and_pure() -> None:
    from reprobox.build.condaimage import render_conda_dockerfile

    kwargs = dict(
        base_image="python:3.11.7-slim-bookworm",
        experiment_id="abc123def456",
        rattler_wheel="py_rattler-0.28.0-cp38-abi3-manylinux_2_17_x86_64.whl",
        conda_count=4,
        workdir="/workspace",
    )
    with_pip = render_conda_dockerfile(pip_count=2, **kwargs)  # type: ignore[arg-type]
    without = render_conda_dockerfile(pip_count=0, **kwargs)  # type: ignore[arg-type]
    assert with_pip == render_conda_dockerfile(pip_count=2, **kwargs)  # type: ignore[arg-type]
    assert with_pip.splitlines()[3] == "FROM python:3.11.7-slim-bookworm"
    assert "--require-hashes" in with_pip and "--no-index" in with_pip
    assert "pip/" not in without and "the 4 conda packages" in without
    for text in (with_pip, without):
        assert "--mount=type=secret" not in text and "http" not in text
        assert "ENV PATH=/opt/conda-env/bin:$PATH CONDA_PREFIX=/opt/conda-env" in text
