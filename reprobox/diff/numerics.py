"""What moves floating-point results even when the code is identical.

Knowledge, not computation: which Python, conda and OS packages are (or pick) the BLAS/LAPACK
implementation, which belong to the CUDA stack, which libraries change results between versions;
and, from a computed :class:`~reprobox.diff.model.EnvDiff`, the warnings a reviewer should read
first: the BLAS/LAPACK provider, CUDA/cuDNN and the GPU, the CPU instruction set, glibc's libm,
and the versions of the numerical libraries.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Environment
from .model import PACKAGE_GROUPS, EnvDiff, NumericsWarning, PackageDiff

NUMERIC_LIBRARIES = (
    "numpy",
    "scipy",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "jax",
    "jaxlib",
    "scikit-learn",
    "pandas",
)

#: Python distributions that are (or pick) the BLAS/LAPACK implementation.
_BLAS_PY = re.compile(
    r"(mkl|mkl[-_.].*|intel-openmp|scipy-openblas(32|64)|openblas.*|blis|"
    r"flexiblas|accelerate-blas)"
)
#: OS packages that provide BLAS/LAPACK (Debian, RPM and Alpine spellings).
_BLAS_SYS = re.compile(
    r"(libopenblas.*|openblas.*|libblas.*|blas|blas-.*|liblapack.*|lapack.*|"
    r"libmkl.*|intel-mkl.*|intel-oneapi-mkl.*|libblis.*|blis.*|libatlas.*|atlas.*|"
    r"libflexiblas.*|flexiblas.*|libarmpl.*|accelerate|libaccelerate.*)"
)
#: Shared libraries that are BLAS/LAPACK, by family (bundled in wheels such as numpy.libs too).
_BLAS_LIB = re.compile(
    r"(libscipy_openblas(?:64_)?|libopenblas(?:64_)?(?:p)?|libmkl_[a-z0-9]+|"
    r"libblis|libblas|liblapack|libcblas|libflexiblas|libarmpl|Accelerate)"
)
#: conda packages that are (or select) the BLAS/LAPACK implementation; ``libblas``, ``blas`` and
#: friends name the implementation in their build string (``21_linux64_openblas``, ``mkl``).
_BLAS_CONDA = re.compile(
    r"(mkl|mkl-.*|intel-openmp|libopenblas|openblas|libblas|libcblas|"
    r"liblapack|liblapacke|blas|blas-devel|blis|libflexiblas|accelerate)"
)
#: conda packages of the CUDA stack (their build strings also say ``cuda`` for framework builds).
_CUDA_CONDA = re.compile(
    r"(cudatoolkit|cuda-.*|libcu.*|libnpp.*|libnvjitlink.*|cudnn|libcudnn.*|"
    r"nccl|libnccl.*|pytorch-cuda|cupy.*|magma|libmagma.*|tensorrt.*)"
)
#: conda spellings of numerical libraries (``pytorch`` is ``torch`` on PyPI).
_NUMERIC_CONDA = frozenset({"pytorch", "tensorflow-base", "numpy-base", "jaxlib"})
#: GPU math libraries shipped as wheels (cuBLAS, cuDNN...) and GPU array libraries.
_CUDA_PY = re.compile(r"(nvidia-.*-cu[0-9]+|cupy.*|triton|jax-cuda[0-9]+-.*)")


def blas_providers(env: Environment) -> dict[str, str]:
    """Which BLAS/LAPACK implementations an environment holds: ``"<where> <name>" -> version``."""
    found: dict[str, str] = {}
    for p in env.packages:
        if _BLAS_PY.fullmatch(p.name):
            found[f"Python package {p.name}"] = p.version
    for s in env.system_packages:
        if _BLAS_SYS.fullmatch(s.name):
            found[f"system package {s.name}"] = s.version
    for c in env.conda.packages if env.conda else ():
        if _BLAS_CONDA.fullmatch(c.name):
            found[f"conda package {c.name}"] = f"{c.version} {c.build}"
    libs = list(env.unowned_libraries)
    for s in env.system_packages:
        libs.extend(s.libraries)
    for c in env.conda.packages if env.conda else ():
        libs.extend(c.libraries)
    for lib in libs:
        m = _BLAS_LIB.search(lib.rsplit("/", 1)[-1])
        if m:
            found.setdefault(f"library {m.group(1)}", "")
    return found


def _fmt_provider(key: str, version: str) -> str:
    return f"{key} {version}".rstrip()


def _blas_warning(a: Environment, b: Environment) -> NumericsWarning | None:
    pa, pb = blas_providers(a), blas_providers(b)
    if pa == pb:
        return None
    parts = []
    removed = [_fmt_provider(k, pa[k]) for k in sorted(set(pa) - set(pb))]
    added = [_fmt_provider(k, pb[k]) for k in sorted(set(pb) - set(pa))]
    changed = [f"{k} {pa[k]} -> {pb[k]}" for k in sorted(set(pa) & set(pb)) if pa[k] != pb[k]]
    if removed:
        parts.append("only in A: " + ", ".join(removed))
    if added:
        parts.append("only in B: " + ", ".join(added))
    if changed:
        parts.append("changed: " + ", ".join(changed))
    return NumericsWarning(
        "blas",
        "BLAS/LAPACK provider changed (" + "; ".join(parts) + "): matrix products, solvers and "
        "decompositions use different kernels and summation orders",
    )


def _package_changes(d: PackageDiff, names: Any) -> list[str]:
    """``name a -> b`` for every change of a package matching ``names`` (a set or a regex)."""

    def wanted(name: str) -> bool:
        if isinstance(names, (set, frozenset, tuple)):
            return name in names
        return bool(names.fullmatch(name))

    out: dict[str, str] = {}
    for c in d.added:
        if wanted(c.name):
            out[c.name] = f"{c.name} added ({c.b})"
    for c in d.removed:
        if wanted(c.name):
            out[c.name] = f"{c.name} removed ({c.a})"
    for c in (*d.upgraded, *d.downgraded):
        if wanted(c.name):
            out[c.name] = f"{c.name} {c.a} -> {c.b}"
    for c in d.source_changed:
        if wanted(c.name) and c.name not in out:
            out[c.name] = f"{c.name} rebuilt from another source ({c.a_source} -> {c.b_source})"
    return [out[k] for k in sorted(out)]


def _conda_cuda_changes(d: PackageDiff) -> list[str]:
    """Changes of CUDA conda packages, and of any conda package whose build says CUDA/cuDNN
    (``pytorch 2.1.0 py3.11_cuda12.1_cudnn8.9.2_0`` -> ``py3.11_cpu_0``)."""
    out = []
    for group in PACKAGE_GROUPS:
        for c in getattr(d, group):
            labels = f"{c.a or ''} {c.b or ''}".lower()
            if _CUDA_CONDA.fullmatch(c.name) or "cuda" in labels or "cudnn" in labels:
                out.append(f"conda {c.name} {c.a or 'absent'} -> {c.b or 'absent'}")
    return out


def numerics_warnings(d: EnvDiff, a: Environment, b: Environment) -> tuple[NumericsWarning, ...]:
    """The changes of ``d`` (between ``a`` and ``b``) known to move floating-point results."""
    warnings: list[NumericsWarning] = []
    blas = _blas_warning(a, b)
    if blas:
        warnings.append(blas)

    hw = {c.key: c for c in d.hardware}
    cuda = [
        f"{k} {hw[k].a or 'none'} -> {hw[k].b or 'none'}"
        for k in ("cuda_runtime", "cudnn")
        if k in hw
    ]
    cuda += _package_changes(d.packages, _CUDA_PY)
    cuda += _conda_cuda_changes(d.conda_packages)
    if cuda:
        warnings.append(
            NumericsWarning(
                "cuda",
                "CUDA / cuDNN changed (" + "; ".join(cuda) + "): GPU kernels, algorithm "
                "selection and reduction order differ between releases",
            )
        )
    if "gpus" in hw:
        ga = "; ".join(hw["gpus"].a) or "no GPU"
        gb = "; ".join(hw["gpus"].b) or "no GPU"
        warnings.append(
            NumericsWarning(
                "gpu",
                f"GPU changed ({ga} -> {gb}): another architecture runs other kernels "
                "(TF32, tensor cores, atomics) and rounds differently",
            )
        )

    cpu = []
    if d.cpu_flags_added:
        cpu.append("only in B: " + ", ".join(d.cpu_flags_added))
    if d.cpu_flags_removed:
        cpu.append("only in A: " + ", ".join(d.cpu_flags_removed))
    for k in ("cpu_vendor",):
        if k in hw:
            cpu.append(f"vendor {hw[k].a} -> {hw[k].b}")
    arch = next((c for c in d.os if c.key == "arch"), None)
    if arch is not None:
        cpu.append(f"architecture {arch.a} -> {arch.b}")
    if cpu:
        warnings.append(
            NumericsWarning(
                "cpu",
                "CPU instruction set changed (" + "; ".join(cpu) + "): BLAS and vectorised "
                "code dispatch to other kernels (FMA, AVX2, AVX-512) and round differently",
            )
        )

    glibc = next((c for c in d.os if c.key == "glibc"), None)
    if glibc is not None:
        warnings.append(
            NumericsWarning(
                "libm",
                f"glibc changed ({glibc.a} -> {glibc.b}): libm's exp, log, pow and "
                "trigonometric functions may round differently in the last bit",
            )
        )

    libs = _package_changes(d.packages, frozenset(NUMERIC_LIBRARIES))
    libs += _package_changes(d.conda_packages, frozenset(NUMERIC_LIBRARIES) | _NUMERIC_CONDA)
    if libs:
        warnings.append(
            NumericsWarning(
                "library",
                "numerical libraries changed (" + "; ".join(libs) + "): algorithms, "
                "defaults and random streams change between versions",
            )
        )
    return tuple(warnings)


__all__ = ["NUMERIC_LIBRARIES", "blas_providers", "numerics_warnings"]
