"""The Environment of a probe's output: the OS packages owning the native libraries the packages
load, conda prefixes, the OS and the hardware."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..model import Environment
from ..progress import Progress
from . import conda as conda_mod
from . import hardware, system
from . import python as py
from . import record as rec

#: Sonames the NVIDIA driver provides on the host (absent on CPU-only machines: not a problem).
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-", "libnvcuvid.so", "libnvoptix.so")


def fingerprint_environment(
    root: Path,
    *,
    python: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    cache_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> tuple[Environment, list[str]]:
    """Interpreter, packages, the OS packages owning their native libraries, OS and hardware,
    of the interpreter a capture in ``root`` would record (the repository's own virtualenv when
    none is active and no ``python`` is given, as capture does)."""
    say = progress or (lambda _msg: None)
    environ = dict(os.environ if environ is None else environ)
    target, _repo_venv = py.resolve_target(Path(root), Path.cwd(), python, environ)
    say(f"probing {target}")
    raw = py.run_probe(
        target, cache_dir=(cache_dir / "probe") if cache_dir else None, environ=environ
    )
    return environment_from_probe(raw, Path(root), cache_dir=cache_dir)


def environment_from_probe(
    raw: Mapping[str, Any],
    root: Path,
    *,
    cache_dir: Optional[Path] = None,
    run_libraries: Optional[Mapping[str, Sequence[str]]] = None,
    dlopen_failed: Sequence[str] = (),
    declared_system_packages: Sequence[str] = (),
    dpkg_lists: Optional[system.DpkgLists] = None,
) -> tuple[Environment, list[str]]:
    """The Environment for a probe's output: OS packages owning the native libraries, hardware.

    Besides the libraries the extension modules need: those the packages' sources name to
    ctypes (a static scan), those a recorded run loaded (``run_libraries``: realpath ->
    sonames) and the packages declared by name (``declared_system_packages``).
    """
    warnings: list[str] = []
    probe = py.parse_probe(raw, Path(root))
    warnings.extend(probe.warnings)
    missing = sorted(soname for soname, path in probe.needed_libraries.items() if not path)
    # The GPU driver's own libraries come from the host at run time, never from a package.
    unexpected = [m for m in missing if not m.startswith(DRIVER_LIBRARIES)]
    # Sonames only optional binding modules need (cupy -> cutensor, numba -> tbb) are tried by
    # their package, which works without them: not reported unless a recorded run tried them.
    tried = [
        m
        for m in unexpected
        if system.only_tried(m, probe.library_files.get(m, ()))
        and not any(rec._answered(f, {m}) for f in dlopen_failed)
    ]
    unexpected = [m for m in unexpected if m not in tried]
    missing = [m for m in missing if m not in tried]
    # Libraries that only the interpreter's own extension modules load (_ssl, _lzma, _tkinter...)
    # belong to the base image of that exact Python, not to the packages: they are left out.
    by_path: dict[str, list[str]] = {}
    for path, sonames in probe.libraries_by_path().items():
        kept = [so for so in sonames if set(probe.library_users.get(so, ())) - {py.PYTHON_USER}]
        if kept:
            by_path[path] = kept
    ctypes_found = rec.resolve_library_names(
        n for names in rec.ctypes_names(raw).values() for n in names
    )
    extras: list[Mapping[str, Sequence[str]]] = [ctypes_found, run_libraries or {}]
    for extra in extras:
        for path, extra_sonames in extra.items():
            merged = by_path.setdefault(path, [])
            merged.extend(so for so in extra_sonames if so not in merged)
    sys_pkgs, unowned = system.owning_packages(
        sorted(by_path),
        by_path,
        cache_dir=(cache_dir / "system") if cache_dir else None,
        dpkg_lists=dpkg_lists,
    )
    if unexpected:
        warnings.append(
            "native libraries needed by installed packages are missing on this machine: "
            + ", ".join(
                f"{m} (needed by {', '.join(probe.library_users.get(m, ['?'])[:3])})"
                for m in unexpected
            )
        )
    if declared_system_packages:
        sys_pkgs, declared_warnings = system.add_declared(sys_pkgs, declared_system_packages)
        warnings.extend(declared_warnings)
    packages = list(probe.packages)
    conda_env = None
    prefix = (probe.raw.get("interpreter") or {}).get("prefix")
    if isinstance(prefix, str) and (
        probe.interpreter.kind == "conda"
        or (probe.interpreter.kind != "venv" and conda_mod.is_conda_prefix(prefix))
    ):
        # conda-meta is plain JSON: read on the host, from the prefix the probe reported.
        scan = conda_mod.read_prefix(prefix)
        packages, split_warnings = conda_mod.split_distributions(
            packages, probe.raw.get("distributions") or (), scan
        )
        conda_env, _outside = conda_mod.attribute_libraries(scan, probe.prefix_libraries)
        warnings.extend(scan.warnings + split_warnings)
    env = Environment(
        interpreter=probe.interpreter,
        packages=tuple(packages),
        system_packages=tuple(sys_pkgs),
        os=system.os_info(probe.os_raw),
        hardware=hardware.detect_hardware(probe.packages, probe.files),
        unowned_libraries=tuple(sorted(unowned)),
        missing_libraries=tuple(missing),
        conda=conda_env,
        installed_changes=probe.installed_changes,
        apt_sources=_apt_sources(sys_pkgs, warnings),
    )
    return env, warnings


def _apt_sources(sys_pkgs: Any, warnings: list[str]) -> tuple[Any, ...]:
    """The host's apt sources, recorded when the environment holds Debian packages."""
    if not sys_pkgs or any(s.manager != "dpkg" for s in sys_pkgs):
        return ()
    sources, notes = system.apt_sources()
    warnings.extend(notes)
    return sources
