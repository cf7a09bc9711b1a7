"""diff and pr for conda environments: build strings, channels, numerics warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reprobox.capture import conda
from reprobox.diff import blas_providers, diff_environments, render_markdown, render_text
from reprobox.model import CondaEnvironment, Environment, Interpreter

META = Path(__file__).parents[2] / "fixtures" / "conda" / "meta"


def _env(shape: str) -> Environment:
    return Environment(
        interpreter=Interpreter("cpython", "3.11.7"),
        conda=conda.read_prefix(META / shape).environment,
    )


def test_openblas_to_mkl_warns_and_shows_builds_and_channels() -> None:
    a, b = _env("conda-forge-openblas"), _env("defaults-mkl")
    d = diff_environments(a, b, label_a="cf", label_b="defaults")
    kinds = {w.kind for w in d.numerics_warnings}
    assert "blas" in kinds and "library" in kinds
    blas = next(w for w in d.numerics_warnings if w.kind == "blas")
    assert "conda package libopenblas 0.3.26 pthreads_h413a1c8_0" in blas.message
    assert "conda package mkl 2023.1.0 h213fc3f_46344" in blas.message
    numpy = next(c for c in d.conda_packages.downgraded if c.name == "numpy")
    assert numpy.a == "1.26.4 py311h64a7726_0 (conda-forge)"
    assert numpy.b == "1.24.3 py311h08b1b3b_1 (pkgs/main)"
    text = render_text(d)
    assert "conda packages (" in text
    assert (
        "numpy 1.26.4 py311h64a7726_0 (conda-forge) -> 1.24.3 py311h08b1b3b_1 (pkgs/main)" in text
    )
    md = render_markdown(d)
    assert "Conda packages" in md and r"py311h08b1b3b\_1 (pkgs/main)" in md
    assert "conda_packages" in d.to_dict()


def test_blas_variant_switch_by_build_string_alone_warns() -> None:
    a = _env("conda-forge-openblas")
    assert a.conda is not None
    pkgs = tuple(
        replace(p, build="21_linux64_mkl", sha256="0" * 64) if p.name == "libblas" else p
        for p in a.conda.packages
    )
    b = replace(a, conda=CondaEnvironment(packages=pkgs, channels=a.conda.channels))
    assert blas_providers(a)["conda package libblas"] == "3.9.0 21_linux64_openblas"
    d = diff_environments(a, b)
    assert [c.name for c in d.conda_packages.source_changed] == ["libblas"]
    assert any(w.kind == "blas" and "21_linux64_mkl" in w.message for w in d.numerics_warnings)


def test_pytorch_cuda_build_to_cpu_build_warns_cuda() -> None:
    a = _env("pytorch-cuda-micromamba")
    assert a.conda is not None
    pkgs = tuple(
        replace(p, build="py3.11_cpu_0", sha256="1" * 64) if p.name == "pytorch" else p
        for p in a.conda.packages
        if not p.name.startswith(("cuda-", "libcublas", "pytorch-cuda"))
    )
    b = replace(a, conda=CondaEnvironment(packages=pkgs, channels=a.conda.channels))
    d = diff_environments(a, b)
    cuda = next(w for w in d.numerics_warnings if w.kind == "cuda")
    assert "conda pytorch 2.1.0 py3.11_cuda12.1_cudnn8.9.2_0 (pytorch)" in cuda.message
    assert "conda cuda-cudart 12.1.105 0 (nvidia) -> absent" in cuda.message
    assert {c.name for c in d.conda_packages.removed} == {
        "cuda-cudart",
        "libcublas",
        "pytorch-cuda",
    }


def test_no_conda_no_conda_group() -> None:
    env = Environment(interpreter=Interpreter("cpython", "3.11.7"))
    d = diff_environments(env, env)
    assert d.empty and "conda_packages" not in d.to_dict()
    assert "Conda" not in render_markdown(d)
