"""Environment diff: what changed between two captures, and which changes move numbers.

Pure: two :class:`~reprobox.model.Environment` values (and, when known, their experiments) in, one
frozen :class:`EnvDiff` out; three renderers turn it into text for a terminal, markdown for a pull
request, or JSON for scripts. Nothing here reads files or runs commands.

Changes are grouped the way a reviewer reads them: interpreter, Python packages (added, removed,
upgraded, downgraded, source changed), system packages, OS, hardware, replayable environment
variables, git. Separately, :attr:`EnvDiff.numerics_warnings` lists the changes known to move
floating-point results even when the code is identical: the BLAS/LAPACK provider, CUDA/cuDNN and the
GPU, the CPU instruction set, glibc's libm, and the versions of the numerical libraries.

Every value shown comes from a capture, which may be hostile: the text renderer escapes control and
invisible characters (no terminal escape sequences), the markdown renderer escapes markdown and
HTML (:func:`md_escape`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from .model import (
    CondaEnvironment,
    Environment,
    Experiment,
    Package,
    PackageSource,
    SystemPackage,
    pretty_json,
)
from .termsafe import escape_json

# --------------------------------------------------------------------------- result objects


@dataclass(frozen=True)
class Change:
    """One field that differs; ``None`` on a side means absent there."""

    key: str
    a: Any = None
    b: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class PackageChange:
    """A package present on one side or both; versions and source descriptions per side."""

    name: str
    a: str | None = None
    b: str | None = None
    a_source: str | None = None
    b_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "a": self.a, "b": self.b}
        if self.a_source is not None or self.b_source is not None:
            out["a_source"] = self.a_source
            out["b_source"] = self.b_source
        return out


_PACKAGE_GROUPS = ("added", "removed", "upgraded", "downgraded", "source_changed")


@dataclass(frozen=True)
class PackageDiff:
    """Packages by kind of change. A package whose version *and* source changed is in both lists."""

    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    upgraded: tuple[PackageChange, ...] = ()
    downgraded: tuple[PackageChange, ...] = ()
    source_changed: tuple[PackageChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, g) for g in _PACKAGE_GROUPS)

    def counts(self) -> dict[str, int]:
        return {g: len(getattr(self, g)) for g in _PACKAGE_GROUPS}

    def names(self) -> set[str]:
        return {c.name for g in _PACKAGE_GROUPS for c in getattr(self, g)}

    def to_dict(self) -> dict[str, Any]:
        return {g: [c.to_dict() for c in getattr(self, g)] for g in _PACKAGE_GROUPS}


@dataclass(frozen=True)
class NumericsWarning:
    """A change known to move numerical results. ``kind``: blas, cuda, gpu, cpu, libm, library."""

    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class EnvDiff:
    """Everything that differs between environment A and environment B."""

    label_a: str
    label_b: str
    digest_a: str
    digest_b: str
    interpreter: tuple[Change, ...] = ()
    packages: PackageDiff = field(default_factory=PackageDiff)
    system_packages: PackageDiff = field(default_factory=PackageDiff)
    os: tuple[Change, ...] = ()
    hardware: tuple[Change, ...] = ()
    cpu_flags_added: tuple[str, ...] = ()
    cpu_flags_removed: tuple[str, ...] = ()
    env: tuple[Change, ...] = ()
    git: tuple[Change, ...] = ()
    numerics_warnings: tuple[NumericsWarning, ...] = ()
    #: What could not be compared (e.g. env vars and git when B is the current environment).
    notes: tuple[str, ...] = ()
    #: conda packages; versions read ``1.26.4 py311h64a7726_0 (conda-forge)``.
    conda_packages: PackageDiff = field(default_factory=PackageDiff)

    @property
    def empty(self) -> bool:
        """True when nothing differs in any group (hardware, env vars and git included)."""
        return not (
            self.interpreter or not self.packages.empty or not self.system_packages.empty
            or self.os or self.hardware or self.cpu_flags_added or self.cpu_flags_removed
            or self.env or self.git or not self.conda_packages.empty
        )

    @property
    def same_digest(self) -> bool:
        """True when what defines the environment (interpreter + packages) is identical."""
        return self.digest_a == self.digest_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"label": self.label_a, "digest": self.digest_a},
            "b": {"label": self.label_b, "digest": self.digest_b},
            "empty": self.empty,
            "same_digest": self.same_digest,
            "interpreter": [c.to_dict() for c in self.interpreter],
            "packages": self.packages.to_dict(),
            "system_packages": self.system_packages.to_dict(),
            "os": [c.to_dict() for c in self.os],
            "hardware": {
                "changes": [c.to_dict() for c in self.hardware],
                "cpu_flags_added": list(self.cpu_flags_added),
                "cpu_flags_removed": list(self.cpu_flags_removed),
            },
            "env": [c.to_dict() for c in self.env],
            "git": [c.to_dict() for c in self.git],
            "numerics_warnings": [w.to_dict() for w in self.numerics_warnings],
            "notes": list(self.notes),
            **({"conda_packages": self.conda_packages.to_dict()}
               if not self.conda_packages.empty else {}),
        }


# --------------------------------------------------------------------------- version order


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as PEP 440 orders ``a`` and ``b``; plain string order when either is invalid.

    Two spellings of one version (``1.0`` and ``1.0.0``) are ordered by their text, so that a
    difference in the recorded string is never reported as "no change".
    """
    from packaging.version import InvalidVersion, Version

    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion:
        return (a > b) - (a < b)
    if va != vb:
        return 1 if va > vb else -1
    return (a > b) - (a < b)


def _deb_order(ch: str) -> int:
    if "A" <= ch <= "Z" or "a" <= ch <= "z":
        return ord(ch)
    if ch == "~":
        return -1
    return ord(ch) + 256


def _is_digit(s: str, i: int) -> bool:
    return i < len(s) and "0" <= s[i] <= "9"


def _deb_part_cmp(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (letters before symbols, ``~`` first) and numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not _is_digit(a, i)) or (j < len(b) and not _is_digit(b, j)):
            ac = _deb_order(a[i]) if i < len(a) and not _is_digit(a, i) else 0
            bc = _deb_order(b[j]) if j < len(b) and not _is_digit(b, j) else 0
            if ac != bc:
                return 1 if ac > bc else -1
            i += 0 if _is_digit(a, i) else 1
            j += 0 if _is_digit(b, j) else 1
        ni, nj = i, j
        while _is_digit(a, ni):
            ni += 1
        while _is_digit(b, nj):
            nj += 1
        # Compare the numbers as digit strings: no int() on hostile, arbitrarily long runs.
        na, nb = a[i:ni].lstrip("0"), b[j:nj].lstrip("0")
        if (len(na), na) != (len(nb), nb):
            return 1 if (len(na), na) > (len(nb), nb) else -1
        i, j = ni, nj
    return 0


def compare_system_versions(a: str, b: str) -> int:
    """-1, 0 or 1 in dpkg's order (``[epoch:]upstream[-revision]``); also sensible for rpm/apk."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, sep, rest = v.partition(":")
        if not sep or not epoch.isdigit() or not epoch.isascii():
            epoch, rest = "0", v
        upstream, dash, revision = rest.rpartition("-")
        if not dash:
            upstream, revision = rest, ""
        return int(epoch[:18]), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return 1 if ea > eb else -1
    result = _deb_part_cmp(ua, ub) or _deb_part_cmp(ra, rb)
    if result == 0 and a != b:
        return (a > b) - (a < b)
    return result


# --------------------------------------------------------------------------- the diff


def label_for(exp: Experiment | None) -> str:
    """How a side is named in every rendering: ``<id> (<name>)``, or the current environment."""
    if exp is None:
        return "current environment"
    if exp.id and exp.name:
        return f"{exp.id} ({exp.name})"
    return exp.id or exp.name or "experiment"


def describe_source(src: PackageSource) -> str:
    """A one-line description of where a package came from."""
    if src.kind == "index":
        return "index"
    if src.kind == "vcs":
        commit = (src.commit or "")[:12]
        sub = f" ({src.subdirectory})" if src.subdirectory else ""
        return f"{src.vcs or 'vcs'}+{src.url or '?'}@{commit}{sub}"
    if src.kind == "directory":
        where = src.path or src.url or "?"
        return f"{'editable ' if src.editable else ''}directory {where}"
    return f"archive {src.url or '?'}" + (f" ({src.hash})" if src.hash else "")


def _diff_python_packages(a: Sequence[Package], b: Sequence[Package]) -> PackageDiff:
    amap = {p.name: p for p in a}
    bmap = {p.name: p for p in b}
    groups: dict[str, list[PackageChange]] = {g: [] for g in _PACKAGE_GROUPS}
    for name in sorted(set(amap) | set(bmap)):
        pa, pb = amap.get(name), bmap.get(name)
        if pa is None and pb is not None:
            groups["added"].append(PackageChange(name, None, pb.version, None, describe_source(pb.source)))
            continue
        if pb is None and pa is not None:
            groups["removed"].append(PackageChange(name, pa.version, None, describe_source(pa.source)))
            continue
        assert pa is not None and pb is not None
        order = compare_versions(pa.version, pb.version) if pa.version != pb.version else 0
        if order < 0:
            groups["upgraded"].append(PackageChange(name, pa.version, pb.version))
        elif order > 0:
            groups["downgraded"].append(PackageChange(name, pa.version, pb.version))
        if pa.source.identity() != pb.source.identity():
            groups["source_changed"].append(PackageChange(
                name, pa.version, pb.version, describe_source(pa.source), describe_source(pb.source)
            ))
    return PackageDiff(**{g: tuple(v) for g, v in groups.items()})


def _diff_system_packages(a: Sequence[SystemPackage], b: Sequence[SystemPackage]) -> PackageDiff:
    def key(s: SystemPackage) -> str:
        return s.name if s.manager == "dpkg" else f"{s.manager}:{s.name}"

    def where(s: SystemPackage) -> str:
        return s.manager + (f" {s.arch}" if s.arch else "")

    amap = {key(s): s for s in a}
    bmap = {key(s): s for s in b}
    groups: dict[str, list[PackageChange]] = {g: [] for g in _PACKAGE_GROUPS}
    for name in sorted(set(amap) | set(bmap)):
        sa, sb = amap.get(name), bmap.get(name)
        if sa is None and sb is not None:
            groups["added"].append(PackageChange(name, None, sb.version))
        elif sb is None and sa is not None:
            groups["removed"].append(PackageChange(name, sa.version, None))
        else:
            assert sa is not None and sb is not None
            order = compare_system_versions(sa.version, sb.version)
            if order < 0:
                groups["upgraded"].append(PackageChange(name, sa.version, sb.version))
            elif order > 0:
                groups["downgraded"].append(PackageChange(name, sa.version, sb.version))
            if (sa.manager, sa.arch) != (sb.manager, sb.arch):
                groups["source_changed"].append(
                    PackageChange(name, sa.version, sb.version, where(sa), where(sb))
                )
    return PackageDiff(**{g: tuple(v) for g, v in groups.items()})


def conda_label(version: str, build: str, channel: str | None) -> str:
    """``1.26.4 py311h64a7726_0 (conda-forge)``: what a reviewer needs to tell two builds apart."""
    from .capture.conda import channel_display

    return f"{version} {build} ({channel_display(channel)})"


def _diff_conda_packages(a: CondaEnvironment | None, b: CondaEnvironment | None) -> PackageDiff:
    amap = {p.name: p for p in (a.packages if a else ())}
    bmap = {p.name: p for p in (b.packages if b else ())}
    groups: dict[str, list[PackageChange]] = {g: [] for g in _PACKAGE_GROUPS}
    for name in sorted(set(amap) | set(bmap)):
        pa, pb = amap.get(name), bmap.get(name)
        la = conda_label(pa.version, pa.build, pa.channel) if pa else None
        lb = conda_label(pb.version, pb.build, pb.channel) if pb else None
        if pa is None:
            groups["added"].append(PackageChange(name, None, lb))
        elif pb is None:
            groups["removed"].append(PackageChange(name, la, None))
        elif pa.version != pb.version:
            order = compare_versions(pa.version, pb.version)
            groups["upgraded" if order <= 0 else "downgraded"].append(PackageChange(name, la, lb))
        elif (pa.build, pa.channel, pa.sha256 or pa.md5) != (pb.build, pb.channel,
                                                            pb.sha256 or pb.md5):
            groups["source_changed"].append(PackageChange(
                name, la, lb, f"build {pa.build} from {pa.channel}",
                f"build {pb.build} from {pb.channel}"))
    return PackageDiff(**{g: tuple(v) for g, v in groups.items()})


def _fields(a: Any, b: Any, keys: Sequence[str]) -> tuple[Change, ...]:
    return tuple(
        Change(k, getattr(a, k), getattr(b, k)) for k in keys if getattr(a, k) != getattr(b, k)
    )


def _describe_gpu(g: Any) -> str:
    extra = [x for x in (
        f"driver {g.driver}" if g.driver else "",
        f"CUDA {g.cuda_driver}" if g.cuda_driver else "",
        f"compute {g.compute_capability}" if g.compute_capability else "",
        f"{g.memory_mib} MiB" if g.memory_mib else "",
    ) if x]
    return g.name + (f" ({', '.join(extra)})" if extra else "")


def _digest(env: Environment) -> str:
    """The environment digest; a record holding undecodable text (a lone surrogate from a file
    name read with ``surrogateescape``) cannot be hashed as UTF-8 and is named as such."""
    try:
        return env.digest
    except UnicodeEncodeError:
        return "unhashable (the record holds undecodable text)"


_INTERPRETER_FIELDS = ("implementation", "version", "abi", "soabi", "platform", "build", "compiler",
                       "kind", "gil_disabled")
_OS_FIELDS = ("system", "id", "version_id", "codename", "glibc", "arch", "kernel")
_HW_FIELDS = ("cpu_model", "cpu_vendor", "cpu_cores", "memory_bytes", "cuda_runtime", "cudnn")


def diff_environments(
    a: Environment,
    b: Environment,
    *,
    exp_a: Experiment | None = None,
    exp_b: Experiment | None = None,
    label_a: str | None = None,
    label_b: str | None = None,
) -> EnvDiff:
    """Compare environment A with environment B (B is usually the newer one).

    Env vars and git come from the experiments, so they are compared only when both are given;
    otherwise :attr:`EnvDiff.notes` says so.
    """
    hw_a, hw_b = a.hardware, b.hardware
    hardware = list(_fields(hw_a, hw_b, _HW_FIELDS))
    gpus_a = [_describe_gpu(g) for g in hw_a.gpus]
    gpus_b = [_describe_gpu(g) for g in hw_b.gpus]
    if gpus_a != gpus_b:
        hardware.append(Change("gpus", gpus_a, gpus_b))
    flags_a, flags_b = set(hw_a.cpu_flags), set(hw_b.cpu_flags)

    env_changes: tuple[Change, ...] = ()
    git_changes: tuple[Change, ...] = ()
    notes: list[str] = []
    if exp_a is not None and exp_b is not None:
        env_changes = tuple(
            Change(k, exp_a.env.get(k), exp_b.env.get(k))
            for k in sorted(set(exp_a.env) | set(exp_b.env))
            if exp_a.env.get(k) != exp_b.env.get(k)
        )
        git_changes = _fields(exp_a.git, exp_b.git, ("commit", "branch", "remote", "dirty"))
        if exp_a.git.patch_sha256 != exp_b.git.patch_sha256:
            git_changes += (Change("patch_sha256", exp_a.git.patch_sha256, exp_b.git.patch_sha256),)
    else:
        missing = "A" if exp_a is None else "B"
        notes.append(f"environment variables and git were not compared: {missing} is not a "
                     "recorded experiment")

    result = EnvDiff(
        label_a=label_a or label_for(exp_a),
        label_b=label_b or label_for(exp_b),
        digest_a=_digest(a),
        digest_b=_digest(b),
        interpreter=_fields(a.interpreter, b.interpreter, _INTERPRETER_FIELDS),
        packages=_diff_python_packages(a.packages, b.packages),
        system_packages=_diff_system_packages(a.system_packages, b.system_packages),
        os=_fields(a.os, b.os, _OS_FIELDS),
        hardware=tuple(hardware),
        cpu_flags_added=tuple(sorted(flags_b - flags_a)),
        cpu_flags_removed=tuple(sorted(flags_a - flags_b)),
        env=env_changes,
        git=git_changes,
        notes=tuple(notes),
        conda_packages=_diff_conda_packages(a.conda, b.conda),
    )
    return _with_warnings(result, a, b)


# --------------------------------------------------------------------------- numerics warnings

#: Python libraries whose version changes are known to change results bit for bit.
NUMERIC_LIBRARIES = ("numpy", "scipy", "torch", "tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                     "jax", "jaxlib", "scikit-learn", "pandas")

#: Python distributions that are (or pick) the BLAS/LAPACK implementation.
_BLAS_PY = re.compile(r"(mkl|mkl[-_.].*|intel-openmp|scipy-openblas(32|64)|openblas.*|blis|"
                      r"flexiblas|accelerate-blas)")
#: OS packages that provide BLAS/LAPACK (Debian, RPM and Alpine spellings).
_BLAS_SYS = re.compile(r"(libopenblas.*|openblas.*|libblas.*|blas|blas-.*|liblapack.*|lapack.*|"
                       r"libmkl.*|intel-mkl.*|intel-oneapi-mkl.*|libblis.*|blis.*|libatlas.*|atlas.*|"
                       r"libflexiblas.*|flexiblas.*|libarmpl.*|accelerate|libaccelerate.*)")
#: Shared libraries that are BLAS/LAPACK, by family (bundled in wheels such as numpy.libs too).
_BLAS_LIB = re.compile(r"(libscipy_openblas(?:64_)?|libopenblas(?:64_)?(?:p)?|libmkl_[a-z0-9]+|libblis|"
                       r"libblas|liblapack|libcblas|libflexiblas|libarmpl|Accelerate)")
#: conda packages that are (or select) the BLAS/LAPACK implementation; ``libblas``, ``blas`` and
#: friends name the implementation in their build string (``21_linux64_openblas``, ``mkl``).
_BLAS_CONDA = re.compile(r"(mkl|mkl-.*|intel-openmp|libopenblas|openblas|libblas|libcblas|"
                         r"liblapack|liblapacke|blas|blas-devel|blis|libflexiblas|accelerate)")
#: conda packages of the CUDA stack (their build strings also say ``cuda`` for framework builds).
_CUDA_CONDA = re.compile(r"(cudatoolkit|cuda-.*|libcu.*|libnpp.*|libnvjitlink.*|cudnn|libcudnn.*|"
                         r"nccl|libnccl.*|pytorch-cuda|cupy.*|magma|libmagma.*|tensorrt.*)")
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
        return name in names if isinstance(names, (set, frozenset, tuple)) else bool(names.fullmatch(name))

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
    for group in _PACKAGE_GROUPS:
        for c in getattr(d, group):
            labels = f"{c.a or ''} {c.b or ''}".lower()
            if _CUDA_CONDA.fullmatch(c.name) or "cuda" in labels or "cudnn" in labels:
                out.append(f"conda {c.name} {c.a or 'absent'} -> {c.b or 'absent'}")
    return out


def _with_warnings(d: EnvDiff, a: Environment, b: Environment) -> EnvDiff:
    warnings: list[NumericsWarning] = []
    blas = _blas_warning(a, b)
    if blas:
        warnings.append(blas)

    hw = {c.key: c for c in d.hardware}
    cuda = [f"{k} {hw[k].a or 'none'} -> {hw[k].b or 'none'}" for k in ("cuda_runtime", "cudnn") if k in hw]
    cuda += _package_changes(d.packages, _CUDA_PY)
    cuda += _conda_cuda_changes(d.conda_packages)
    if cuda:
        warnings.append(NumericsWarning(
            "cuda", "CUDA / cuDNN changed (" + "; ".join(cuda) + "): GPU kernels, algorithm "
            "selection and reduction order differ between releases",
        ))
    if "gpus" in hw:
        ga = "; ".join(hw["gpus"].a) or "no GPU"
        gb = "; ".join(hw["gpus"].b) or "no GPU"
        warnings.append(NumericsWarning(
            "gpu", f"GPU changed ({ga} -> {gb}): another architecture runs other kernels "
            "(TF32, tensor cores, atomics) and rounds differently",
        ))

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
        warnings.append(NumericsWarning(
            "cpu", "CPU instruction set changed (" + "; ".join(cpu) + "): BLAS and vectorised "
            "code dispatch to other kernels (FMA, AVX2, AVX-512) and round differently",
        ))

    glibc = next((c for c in d.os if c.key == "glibc"), None)
    if glibc is not None:
        warnings.append(NumericsWarning(
            "libm", f"glibc changed ({glibc.a} -> {glibc.b}): libm's exp, log, pow and "
            "trigonometric functions may round differently in the last bit",
        ))

    libs = _package_changes(d.packages, frozenset(NUMERIC_LIBRARIES))
    libs += _package_changes(d.conda_packages, frozenset(NUMERIC_LIBRARIES) | _NUMERIC_CONDA)
    if libs:
        warnings.append(NumericsWarning(
            "library", "numerical libraries changed (" + "; ".join(libs) + "): algorithms, "
            "defaults and random streams change between versions",
        ))
    return replace(d, numerics_warnings=tuple(warnings))


# --------------------------------------------------------------------------- escaping

#: Zero-width space: after :func:`visible`, the only ones left in a value are those inserted here.
_ZWSP = "\u200b"


def visible(value: Any) -> str:
    """A value as one line of terminal text: control and invisible characters shown as escapes."""
    text = value if isinstance(value, str) else str(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


#: How each character that markdown or HTML may interpret is written: HTML's own as entities,
#: markdown's with a backslash (valid inside table cells too, ``\|`` included), ``$`` (GitHub math)
#: in a span as GitHub's documentation advises, and the zero-width spaces that :func:`_defuse`
#: inserted as an entity.
_MD_REPLACE = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "|": "\\|",
    "~": "\\~", "$": "<span>$</span>", _ZWSP: "&#8203;",
}

#: What GitHub turns into a link, a notification or a picture when it meets it in plain text:
#: URLs (``scheme://``, ``www.``), e-mail addresses and ``@mentions`` (at ``@``), issue and pull
#: request references (``#12``, ``owner/repo#12``, ``GH-12``), emoji shortcodes (``:rocket:``).
#: A zero-width space after the character that starts each one breaks the pattern; the text reads
#: the same.
_AUTOLINK_TRIGGERS = re.compile(
    r"(?<=[A-Za-z0-9+.\-]):(?=/)"  # scheme://  (also scheme:/ which some renderers accept)
    r"|(?i:(?<![A-Za-z0-9])www)(?=\.)"  # www.host
    r"|@"  # @mention, user@host
    r"|#(?=\d)"  # #12, owner/repo#12
    r"|(?i:(?<![A-Za-z0-9])gh)(?=-\d)"  # GH-12
    r"|:(?=[A-Za-z0-9_+\-]+:)"  # :emoji:
)


def _defuse(text: str) -> str:
    return _AUTOLINK_TRIGGERS.sub(lambda m: m.group() + _ZWSP, text)


def md_escape(value: Any) -> str:
    """A capture value made inert in GitHub markdown: no HTML, no table break, no formatting,
    no math, no autolinked URL, no @mention, no issue reference, no emoji; control and invisible
    characters shown as escapes.
    """
    return "".join(_MD_REPLACE.get(ch, ch) for ch in _defuse(visible(value)))


def md_code(value: Any) -> str:
    """An escaped value shown in a monospace ``<code>`` element (safe inside table cells)."""
    return f"<code>{md_escape(value)}</code>"


# --------------------------------------------------------------------------- text


_ANSI = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def _style(text: str, color: bool, *styles: str) -> str:
    if not color or not styles:
        return text
    codes = ";".join(_ANSI[s] for s in styles)
    return f"\x1b[{codes}m{text}\x1b[0m"


def _show(value: Any, key: str = "") -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "memory_bytes" and isinstance(value, int):
        return f"{value / 2**30:.1f} GiB"
    if isinstance(value, (list, tuple)):
        return "; ".join(visible(v) for v in value) or "(none)"
    return visible(value)


def _text_changes(lines: list[str], title: str, changes: Sequence[Change], color: bool) -> None:
    if not changes:
        return
    lines.append(_style(title, color, "bold"))
    width = max(len(c.key) for c in changes)
    for c in changes:
        lines.append(f"  {visible(c.key):<{width}}  {_show(c.a, c.key)} -> {_show(c.b, c.key)}")


def _text_packages(lines: list[str], title: str, d: PackageDiff, color: bool) -> None:
    if d.empty:
        return
    counts = d.counts()
    summary = ", ".join(f"{n} {g.replace('_', ' ')}" for g, n in counts.items() if n)
    lines.append(_style(f"{title} ({summary})", color, "bold"))
    rows: list[tuple[str, str, str]] = []
    for c in d.added:
        rows.append(("added", "green", f"{visible(c.name)} {visible(c.b)}"))
    for c in d.removed:
        rows.append(("removed", "red", f"{visible(c.name)} {visible(c.a)}"))
    for c in d.upgraded:
        rows.append(("upgraded", "yellow", f"{visible(c.name)} {visible(c.a)} -> {visible(c.b)}"))
    for c in d.downgraded:
        rows.append(("downgraded", "yellow", f"{visible(c.name)} {visible(c.a)} -> {visible(c.b)}"))
    for c in d.source_changed:
        rows.append(("source", "yellow",
                     f"{visible(c.name)}: {visible(c.a_source)} -> {visible(c.b_source)}"))
    for label, col, body in rows:
        lines.append(f"  {_style(f'{label:<10}', color, col)}  {body}")


def _groups(d: EnvDiff) -> list[tuple[str, Union[PackageDiff, Sequence[Change]]]]:
    """The diff's groups in display order, shared by the text and markdown renderers."""
    hw = list(d.hardware)
    if d.cpu_flags_added or d.cpu_flags_removed:
        hw.append(_flags_change(d))
    return [
        ("Interpreter", d.interpreter),
        ("Packages", d.packages),
        *([("Conda packages", d.conda_packages)] if not d.conda_packages.empty else []),
        ("System packages", d.system_packages),
        ("OS", d.os),
        ("Hardware", hw),
        ("Environment variables", d.env),
        ("Git", d.git),
    ]


def _flags_change(d: EnvDiff) -> Change:
    """CPU flags shown as what each side has that the other lacks."""
    return Change("cpu_flags (only on this side)", list(d.cpu_flags_removed),
                  list(d.cpu_flags_added))


def render_text(d: EnvDiff, color: bool = False) -> str:
    """The diff for a terminal; ANSI colours only when ``color`` (the CLI decides: TTY, NO_COLOR)."""
    lines = [
        f"A: {visible(d.label_a)}",
        f"B: {visible(d.label_b)}",
    ]
    if d.empty:
        lines.append("")
        lines.append(_style("no differences", color, "green"))
    else:
        if d.same_digest:
            lines.append(f"environment digest: {visible(d.digest_a)} (same on both sides)")
        else:
            lines.append(f"environment digest: {visible(d.digest_a)} -> {visible(d.digest_b)}")
        if d.numerics_warnings:
            lines.append("")
            lines.append(_style("may change numerical results:", color, "bold", "yellow"))
            for w in d.numerics_warnings:
                lines.append(f"  ! {visible(w.message)}")
        body: list[str] = []
        for title, group in _groups(d):
            if isinstance(group, PackageDiff):
                _text_packages(body, title.lower(), group, color)
            else:
                _text_changes(body, title.lower(), group, color)
        if body:
            lines.append("")
            lines.extend(body)
    for note in d.notes:
        lines.append(_style(f"note: {visible(note)}", color, "dim"))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- markdown


def _md_value(value: Any, key: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return "<br>".join(md_code(v) for v in value) or "—"
    return md_code(_show(value, key))


def _md_table(lines: list[str], header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")


def _md_changes(lines: list[str], title: str, changes: Sequence[Change], h: str) -> None:
    if not changes:
        return
    lines.append(f"{h} {title}")
    lines.append("")
    _md_table(lines, ("", "A", "B"),
              [(md_escape(c.key), _md_value(c.a, c.key), _md_value(c.b, c.key)) for c in changes])


def _md_packages(lines: list[str], title: str, d: PackageDiff, h: str) -> None:
    if d.empty:
        return
    summary = ", ".join(f"{n} {g.replace('_', ' ')}" for g, n in d.counts().items() if n)
    lines.append(f"{h} {title} ({summary})")
    lines.append("")
    rows = []
    for group in _PACKAGE_GROUPS:
        for c in getattr(d, group):
            if group == "source_changed":
                a = _md_value(f"{c.a} from {c.a_source}")
                b = _md_value(f"{c.b} from {c.b_source}")
            else:
                a, b = _md_value(c.a), _md_value(c.b)
            rows.append((group.replace("_", " "), md_code(c.name), a, b))
    _md_table(lines, ("change", "package", "A", "B"), rows)


def render_warnings_markdown(d: EnvDiff) -> str:
    """The numerics warnings as a GitHub alert block (empty string when there are none)."""
    if not d.numerics_warnings:
        return ""
    lines = ["> [!WARNING]", "> **These changes may move numerical results:**"]
    for w in d.numerics_warnings:
        lines.append(f"> - {md_escape(w.message)}")
    return "\n".join(lines) + "\n"


def render_markdown(d: EnvDiff, *, heading_level: int = 3, include_warnings: bool = True) -> str:
    """The diff as GitHub markdown: one table per group, every capture value escaped."""
    h = "#" * max(1, min(heading_level, 6))
    sub = "#" * max(1, min(heading_level + 1, 6))
    lines = [f"{h} Environment diff", ""]
    lines.append(f"**A**: {md_code(d.label_a)}  ")
    lines.append(f"**B**: {md_code(d.label_b)}")
    lines.append("")
    if d.empty:
        lines.append("No differences.")
        lines.append("")
    else:
        digest = (f"Environment digest unchanged: {md_code(d.digest_a)}" if d.same_digest
                  else f"Environment digest: {md_code(d.digest_a)} → {md_code(d.digest_b)}")
        lines.append(digest)
        lines.append("")
        if include_warnings and d.numerics_warnings:
            lines.append(render_warnings_markdown(d))
        for title, group in _groups(d):
            if isinstance(group, PackageDiff):
                _md_packages(lines, title, group, sub)
            else:
                _md_changes(lines, title, group, sub)
    for note in d.notes:
        lines.append(f"_{md_escape(note)}_")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- json


def render_json(d: EnvDiff) -> str:
    """The diff as JSON: sorted keys, two-space indent, trailing newline.

    Non-ASCII text is written as is, unless a value holds a lone surrogate (an undecodable file
    name read from the current environment): then everything is ``\\u``-escaped, so that the
    output is still valid JSON that any terminal or pipe can carry. Characters a terminal would
    obey (DEL, C1, bidi and invisible ones) are always ``\\u``-escaped: same data, inert text.
    """
    text = pretty_json(d.to_dict())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(d.to_dict(), sort_keys=True, indent=2, ensure_ascii=True) + "\n"
    return escape_json(text)


__all__ = [
    "NUMERIC_LIBRARIES",
    "Change",
    "EnvDiff",
    "NumericsWarning",
    "PackageChange",
    "PackageDiff",
    "blas_providers",
    "compare_system_versions",
    "compare_versions",
    "describe_source",
    "diff_environments",
    "label_for",
    "md_code",
    "md_escape",
    "render_json",
    "render_markdown",
    "render_text",
    "render_warnings_markdown",
    "visible",
]

