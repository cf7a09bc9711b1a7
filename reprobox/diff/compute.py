"""The one environment comparison: what differs between two environments, field by field.

Pure: values in, frozen values out; nothing here reads files or runs commands. Two callers:

* :func:`diff_environments` compares two captures (``reprobox diff``, ``reprobox pr``): every
  group, hardware, environment variables and git included, with the numerics warnings.
* ``reprobox verify`` compares a capture with what the probe saw inside the rebuilt environment.
  It calls the same functions (:func:`field_changes` with :data:`INTERPRETER_REBUILT`,
  :func:`diff_python_packages`, :func:`diff_system_packages`, :func:`conda_field_changes`,
  :func:`installed_file_changes`) and words their result as its own differences, so that both
  commands compare the same fields and describe a source in the same words
  (:func:`describe_source`).

The field lists below are the single place that says what is compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable, Optional

from ..model import (
    CondaEnvironment,
    CondaPackage,
    Environment,
    Experiment,
    InstalledChange,
    Package,
    PackageSource,
    SystemPackage,
)
from .model import PACKAGE_GROUPS, Change, EnvDiff, FileChange, PackageChange, PackageDiff
from .numerics import numerics_warnings
from .versions import compare_system_versions, compare_versions

# --------------------------------------------------------------------------- what is compared

#: The interpreter's fields, in display order. ``diff`` compares them all.
INTERPRETER_FIELDS = (
    "implementation",
    "version",
    "abi",
    "soabi",
    "platform",
    "build",
    "compiler",
    "kind",
    "gil_disabled",
)
#: Where and how the interpreter was built: a rebuild runs another build of the same release
#: (the image's CPython, possibly on another platform than a macOS capture), so ``verify`` does
#: not hold these against it; ``diff`` shows them.
INTERPRETER_BUILD_FIELDS = ("platform", "build", "compiler", "kind")
#: What of the interpreter a rebuild must reproduce: ``verify`` compares these (when both sides
#: know them).
INTERPRETER_REBUILT = tuple(f for f in INTERPRETER_FIELDS if f not in INTERPRETER_BUILD_FIELDS)
#: Interpreter fields compared by neither: the host's path, and tags derived from the rest.
INTERPRETER_NOT_COMPARED = ("executable", "platform_tags")

#: What of a conda record must be the same on both sides, in display order (``depends`` and the
#: requested specs are not: each tool writes them its own way; ``libraries`` are what the code
#: loads, not what is installed).
CONDA_FIELDS = (
    "version",
    "build",
    "build_number",
    "channel",
    "subdir",
    "url",
    "md5",
    "sha256",
    "files",
    "files_sha256",
)
CONDA_NOT_COMPARED = ("name", "depends", "requested_spec", "noarch", "libraries")

OS_FIELDS = ("system", "id", "version_id", "codename", "glibc", "arch", "kernel")
HARDWARE_FIELDS = ("cpu_model", "cpu_vendor", "cpu_cores", "memory_bytes", "cuda_runtime", "cudnn")
GIT_FIELDS = ("commit", "branch", "remote", "dirty")

#: How an installed file that matches its RECORD is described.
AS_INSTALLED = "as installed"


# --------------------------------------------------------------------------- descriptions


def label_for(exp: Experiment | None) -> str:
    """How a side is named in every rendering: ``<id> (<name>)``, or the current environment."""
    if exp is None:
        return "current environment"
    if exp.id and exp.name:
        return f"{exp.id} ({exp.name})"
    return exp.id or exp.name or "experiment"


def describe_source(src: PackageSource) -> str:
    """Where a package came from, in the words every command uses.

    ``index``; ``git+https://host/repo@<full commit>#subdirectory=py`` (the full commit: two
    commits sharing a prefix must not read the same); ``editable directory src/pkg of the
    repository``; ``archive https://host/pkg.whl (sha256=...)``.
    """
    if src.kind == "index":
        return "index"
    if src.kind == "vcs":
        sub = f"#subdirectory={src.subdirectory}" if src.subdirectory else ""
        return f"{src.vcs or 'vcs'}+{src.url or '?'}@{src.commit or '?'}{sub}"
    if src.kind == "directory":
        where = src.path or src.url or "?"
        return f"{'editable ' if src.editable else ''}directory {where}" + (
            " of the repository" if src.in_repo else ""
        )
    return f"archive {src.url or '?'}" + (f" ({src.hash})" if src.hash else "")


#: Where conda's channels live when named without a host (conda's default ``channel_alias``, and
#: the ``defaults`` channels' host).
_CONDA_CHANNEL_HOSTS = ("https://conda.anaconda.org/", "https://repo.anaconda.com/")


def channel_display(url: Optional[str]) -> str:
    """A conda channel as people name it: ``conda-forge``, ``pkgs/main``, else its URL."""
    if not url:
        return "(local build)"
    for prefix in _CONDA_CHANNEL_HOSTS:
        if url.startswith(prefix):
            return url[len(prefix) :]
    return url


def conda_label(version: str, build: str, channel: str | None) -> str:
    """``1.26.4 py311h64a7726_0 (conda-forge)``: what a reviewer needs to tell two builds apart."""
    return f"{version} {build} ({channel_display(channel)})"


def describe_installed_change(c: InstalledChange | None) -> str:
    """How an installed file stands against its RECORD: ``missing``, ``modified after install
    (sha256 0123456789ab)``, ``added after install``; ``as installed`` for None."""
    if c is None:
        return AS_INSTALLED
    if c.change == "missing":
        return "missing"
    what = "modified after install" if c.change == "modified" else "added after install"
    return f"{what} (sha256 {c.sha256[:12]})" if c.sha256 else what


def _describe_gpu(g: Any) -> str:
    extra = [
        x
        for x in (
            f"driver {g.driver}" if g.driver else "",
            f"CUDA {g.cuda_driver}" if g.cuda_driver else "",
            f"compute {g.compute_capability}" if g.compute_capability else "",
            f"{g.memory_mib} MiB" if g.memory_mib else "",
        )
        if x
    ]
    return g.name + (f" ({', '.join(extra)})" if extra else "")


def _digest(env: Environment) -> str:
    """The environment digest; a record holding undecodable text (a lone surrogate from a file
    name read with ``surrogateescape``) cannot be hashed as UTF-8 and is named as such."""
    try:
        return env.digest
    except UnicodeEncodeError:
        return "unhashable (the record holds undecodable text)"


# --------------------------------------------------------------------------- field by field


def field_changes(
    a: Any, b: Any, keys: Sequence[str], *, known_only: bool = False
) -> tuple[Change, ...]:
    """The ``keys`` whose values differ between ``a`` and ``b``, in the order of ``keys``.

    ``known_only``: a field that one side does not know (None) is not a change.
    """
    out = []
    for k in keys:
        va, vb = getattr(a, k), getattr(b, k)
        if va == vb or (known_only and (va is None or vb is None)):
            continue
        out.append(Change(k, va, vb))
    return tuple(out)


def diff_python_packages(
    a: Sequence[Package],
    b: Sequence[Package],
    *,
    same_source: Callable[[Package, Package], bool] | None = None,
) -> PackageDiff:
    """Python packages by kind of change, sorted by name.

    Sources differ when their identity does (what goes into the digest), unless ``same_source``
    says that B's is the one A recorded, rebuilt another way (verify: from the wheelhouse).
    """
    amap = {p.name: p for p in a}
    bmap = {p.name: p for p in b}
    groups: dict[str, list[PackageChange]] = {g: [] for g in PACKAGE_GROUPS}
    for name in sorted(set(amap) | set(bmap)):
        pa, pb = amap.get(name), bmap.get(name)
        if pa is None and pb is not None:
            groups["added"].append(
                PackageChange(name, None, pb.version, None, describe_source(pb.source))
            )
            continue
        if pb is None and pa is not None:
            groups["removed"].append(
                PackageChange(name, pa.version, None, describe_source(pa.source))
            )
            continue
        assert pa is not None and pb is not None
        order = compare_versions(pa.version, pb.version) if pa.version != pb.version else 0
        if order < 0:
            groups["upgraded"].append(PackageChange(name, pa.version, pb.version))
        elif order > 0:
            groups["downgraded"].append(PackageChange(name, pa.version, pb.version))
        if pa.source.identity() != pb.source.identity() and not (
            same_source is not None and same_source(pa, pb)
        ):
            groups["source_changed"].append(
                PackageChange(
                    name,
                    pa.version,
                    pb.version,
                    describe_source(pa.source),
                    describe_source(pb.source),
                )
            )
    return PackageDiff(**{g: tuple(v) for g, v in groups.items()})


def system_key(s: SystemPackage) -> str:
    """How a system package is matched across sides: its name (``manager:name`` off dpkg)."""
    return s.name if s.manager == "dpkg" else f"{s.manager}:{s.name}"


def diff_system_packages(a: Sequence[SystemPackage], b: Sequence[SystemPackage]) -> PackageDiff:
    """System packages by kind of change (dpkg's version order), keyed by :func:`system_key`."""

    def where(s: SystemPackage) -> str:
        return s.manager + (f" {s.arch}" if s.arch else "")

    amap = {system_key(s): s for s in a}
    bmap = {system_key(s): s for s in b}
    groups: dict[str, list[PackageChange]] = {g: [] for g in PACKAGE_GROUPS}
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


def conda_field_changes(
    a: CondaPackage, b: CondaPackage, *, a_is_reference: bool = False
) -> tuple[Change, ...]:
    """The :data:`CONDA_FIELDS` whose values differ between A and B, in that order.

    ``a_is_reference`` (verify: A is the capture, B its rebuild): a field that A does not record
    is not held against B (the rebuild's tool may write more than the capture's did).
    """
    out = []
    for k in CONDA_FIELDS:
        va, vb = getattr(a, k), getattr(b, k)
        if va == vb or (a_is_reference and va is None):
            continue
        out.append(Change(k, va, vb))
    return tuple(out)


def _conda_source(p: CondaPackage, changes: Sequence[Change]) -> str:
    extra = "".join(
        f", {c.key} {'(none)' if getattr(p, c.key) is None else getattr(p, c.key)}"
        for c in changes
        if c.key not in ("version", "build", "channel")
    )
    return f"build {p.build} from {p.channel}{extra}"


def diff_conda_packages(a: CondaEnvironment | None, b: CondaEnvironment | None) -> PackageDiff:
    """conda packages by kind of change; versions read ``1.26.4 py311h64a7726_0 (conda-forge)``.

    Same version, but another build, channel, archive or files (:func:`conda_field_changes`):
    source changed.
    """
    amap = {p.name: p for p in (a.packages if a else ())}
    bmap = {p.name: p for p in (b.packages if b else ())}
    groups: dict[str, list[PackageChange]] = {g: [] for g in PACKAGE_GROUPS}
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
        else:
            changes = conda_field_changes(pa, pb)
            if changes:
                groups["source_changed"].append(
                    PackageChange(
                        name, la, lb, _conda_source(pa, changes), _conda_source(pb, changes)
                    )
                )
    return PackageDiff(**{g: tuple(v) for g, v in groups.items()})


def installed_file_changes(
    a: Sequence[InstalledChange], b: Sequence[InstalledChange]
) -> tuple[FileChange, ...]:
    """Installed files changed after install, A against B.

    Both sides list the files that differ from their distribution's RECORD (and the files added
    in its package folders). The same change with the same content on both sides is no
    difference; anything else is: a change that B lacks (its file is as installed), or one B has
    and A had not. A's files first, in A's order, then B's own, sorted.
    """
    out: list[FileChange] = []
    seen = {(c.package, c.path): c for c in b}
    for want in a:
        got = seen.pop((want.package, want.path), None)
        if got is not None and got.change == want.change and got.sha256 == want.sha256:
            continue
        out.append(
            FileChange(
                want.package,
                want.path,
                describe_installed_change(want),
                describe_installed_change(got),
            )
        )
    for (package, path), got in sorted(seen.items()):
        out.append(FileChange(package, path, AS_INSTALLED, describe_installed_change(got)))
    return tuple(out)


# --------------------------------------------------------------------------- the diff


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
    hardware = list(field_changes(hw_a, hw_b, HARDWARE_FIELDS))
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
        git_changes = field_changes(exp_a.git, exp_b.git, GIT_FIELDS)
        if exp_a.git.patch_sha256 != exp_b.git.patch_sha256:
            git_changes += (Change("patch_sha256", exp_a.git.patch_sha256, exp_b.git.patch_sha256),)
    else:
        missing = "A" if exp_a is None else "B"
        notes.append(
            f"environment variables and git were not compared: {missing} is not a "
            "recorded experiment"
        )

    result = EnvDiff(
        label_a=label_a or label_for(exp_a),
        label_b=label_b or label_for(exp_b),
        digest_a=_digest(a),
        digest_b=_digest(b),
        interpreter=field_changes(a.interpreter, b.interpreter, INTERPRETER_FIELDS),
        packages=diff_python_packages(a.packages, b.packages),
        system_packages=diff_system_packages(a.system_packages, b.system_packages),
        os=field_changes(a.os, b.os, OS_FIELDS),
        hardware=tuple(hardware),
        cpu_flags_added=tuple(sorted(flags_b - flags_a)),
        cpu_flags_removed=tuple(sorted(flags_a - flags_b)),
        env=env_changes,
        git=git_changes,
        notes=tuple(notes),
        conda_packages=diff_conda_packages(a.conda, b.conda),
        installed_files=installed_file_changes(a.installed_changes, b.installed_changes),
    )
    return replace(result, numerics_warnings=numerics_warnings(result, a, b))


__all__ = [
    "AS_INSTALLED",
    "CONDA_FIELDS",
    "CONDA_NOT_COMPARED",
    "GIT_FIELDS",
    "HARDWARE_FIELDS",
    "INTERPRETER_BUILD_FIELDS",
    "INTERPRETER_FIELDS",
    "INTERPRETER_NOT_COMPARED",
    "INTERPRETER_REBUILT",
    "OS_FIELDS",
    "channel_display",
    "conda_field_changes",
    "conda_label",
    "describe_installed_change",
    "describe_source",
    "diff_conda_packages",
    "diff_environments",
    "diff_python_packages",
    "diff_system_packages",
    "field_changes",
    "installed_file_changes",
    "label_for",
    "system_key",
]
