"""The interpreter a base image carries: found on this machine, described, staged.

Relocatable builds (pyenv, python-build-standalone, uv-managed) are copied into ``/usr/local``:
the binary, libpython, the standard library without tests, caches or site-packages, the
headers, with the build prefix rewritten to ``/usr/local``. The shared libraries they load that
the root file system must provide are named by the Debian packages owning them
(:func:`reprobox.capture.system.owning_packages`, the same lookup a capture uses).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .. import proc
from ..capture import system
from ..errors import ReproboxError, UsageError
from .releases import check_python_release

#: Shared objects of the C library itself: present in every Debian root file system.
_GLIBC_SONAMES = re.compile(
    r"^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libnsl|libcrypt|ld-linux[\w-]*)"
    r"\.so(\.\d+)*$"
)

_DESCRIBE = r"""
import json, os, platform, sys, sysconfig
cv = sysconfig.get_config_var
print(json.dumps({
    "version": platform.python_version(),
    "implementation": sys.implementation.name,
    "executable": os.path.realpath(sys.executable),
    "base_prefix": sys.base_prefix,
    "build_prefix": cv("prefix"),
    "shared": bool(cv("Py_ENABLE_SHARED")),
    "ldlibrary": cv("LDLIBRARY"),
    "instsoname": cv("INSTSONAME"),
    "libdir": cv("LIBDIR"),
    "stdlib": sysconfig.get_path("stdlib"),
    "include": sysconfig.get_path("include"),
    "abiflags": getattr(sys, "abiflags", ""),
}))
"""


@dataclass(frozen=True)
class HostInterpreter:
    """A CPython installation on this machine, and what of it goes into an image."""

    executable: Path  # the real binary (symlinks resolved)
    version: str
    prefix: Path  # the installation's root (sys.base_prefix)
    build_prefix: str  # the prefix it was configured with (in sysconfig data and scripts)
    shared: bool
    instsoname: Optional[str]
    stdlib: Path
    include: Path
    abiflags: str
    kind: str  # pyenv | uv | python-build-standalone | other
    implementation: str = "cpython"

    @property
    def mm(self) -> str:
        return ".".join(self.version.split(".")[:2])


# --------------------------------------------------------------------------- the interpreter


def _candidate_paths(version: str) -> list[Path]:
    mm = ".".join(version.split(".")[:2])
    found: list[Path] = []
    base_bin = Path(sys.base_prefix) / "bin" / f"python{mm}"
    found.append(base_bin)
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        found.append(Path(root) / "versions" / version / "bin" / f"python{mm}")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    uv_dirs = [os.environ.get("UV_PYTHON_INSTALL_DIR"), os.path.join(data_home, "uv", "python")]
    for folder in filter(None, uv_dirs):
        for hit in sorted(glob.glob(os.path.join(folder, f"cpython-{version}-linux-*"))):
            found.append(Path(hit) / "bin" / f"python{mm}")
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for name in (f"python{mm}", "python3", "python"):
            found.append(Path(folder or ".") / name)
    found.append(Path("/usr/local/bin") / f"python{mm}")
    found.append(Path("/usr/bin") / f"python{mm}")
    return found


def describe_interpreter(python: Path) -> Optional[HostInterpreter]:
    """What an interpreter says about itself (run isolated, without site), or None if broken."""
    try:
        out = proc.run([str(python), "-I", "-S", "-c", _DESCRIBE], timeout=30).stdout
        data = json.loads(out)
    except (ReproboxError, ValueError):
        return None
    prefix = Path(data["base_prefix"])
    text = str(prefix)
    if "/.pyenv/versions/" in text:
        kind = "pyenv"
    elif "/uv/python/" in text:
        kind = "uv"
    elif data.get("build_prefix") == "/install":
        kind = "python-build-standalone"
    elif text in ("/usr", "/"):
        kind = "distribution"
    else:
        kind = "other"
    return HostInterpreter(
        executable=Path(data["executable"]),
        version=data["version"],
        prefix=prefix,
        build_prefix=data.get("build_prefix") or text,
        shared=bool(data.get("shared")),
        instsoname=data.get("instsoname") or None,
        stdlib=Path(data["stdlib"]),
        include=Path(data["include"]),
        abiflags=data.get("abiflags") or "",
        kind=kind,
        implementation=data.get("implementation") or "",
    )


def find_interpreter(version: str) -> HostInterpreter:
    """This machine's installation of exactly ``version``.

    A relocatable build (pyenv, python-build-standalone, uv) is preferred: it is copied into
    ``/usr/local``. Failing that, the distribution's own interpreter (``kind == "distribution"``,
    Debian's ``python3.X`` package), which the base then installs as the same package.
    """
    check_python_release(version, "--python")
    seen: set[str] = set()
    refused: list[str] = []
    packaged: Optional[HostInterpreter] = None
    for path in _candidate_paths(version):
        if not path.is_file():
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        interp = describe_interpreter(path)
        if interp is None or interp.version != version or interp.implementation != "cpython":
            continue
        if interp.kind == "distribution":
            packaged = packaged or interp  # Debian's own: usable only as its package, below
            continue
        if not (interp.stdlib / "os.py").is_file():
            refused.append(f"{path} (its standard library is not at {interp.stdlib})")
            continue
        return interp
    if packaged is not None:
        return packaged
    more = f"; found but not relocatable: {', '.join(refused)}" if refused else ""
    raise UsageError(
        f"no Python {version} installation on this machine can be copied into an image{more}",
        f"install it first: `pyenv install {version}` or `uv python install {version}`, "
        "then run `reprobox base` again",
    )


def needed_libraries(interp: HostInterpreter) -> list[Path]:
    """Shared libraries (outside the interpreter) that its binary and extension modules load.

    Tk is left out, as in the official slim images (``_tkinter`` is there, its libraries are
    not).
    """
    files = [interp.executable]
    if interp.shared and interp.instsoname:
        lib = _libpython(interp)
        if lib:
            files.append(lib)
    dynload = interp.stdlib / "lib-dynload"
    files += sorted(p for p in dynload.glob("*.so") if "tkinter" not in p.name)
    libs: dict[str, Path] = {}
    for chunk in _chunks(files, 40):
        out = proc.run(["ldd", *map(str, chunk)], check=False, timeout=60).stdout or ""
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+) \(0x", line)
            if not m:
                continue
            soname, path = m.groups()
            if soname.startswith("libpython") or _GLIBC_SONAMES.match(soname):
                continue
            libs.setdefault(soname, Path(path))
    return [libs[k] for k in sorted(libs)]


def _chunks(items: list[Path], size: int) -> Iterable[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _libpython(interp: HostInterpreter) -> Optional[Path]:
    for folder in (interp.prefix / "lib", interp.executable.parent.parent / "lib"):
        if interp.instsoname and (folder / interp.instsoname).exists():
            return folder / interp.instsoname
    return None


def owning_packages(paths: Iterable[Path]) -> tuple[set[str], list[Path]]:
    """The Debian packages owning ``paths`` (by dpkg), and the paths no package owns.

    Without a dpkg database, no path is owned: the base copies each library itself.
    """
    paths = list(paths)
    if system.package_manager() != "dpkg":
        return set(), paths
    packages, unowned = system.owning_packages([str(p) for p in paths])
    return {p.name for p in packages}, [Path(u) for u in unowned]


# --------------------------------------------------------------------------- staging

_SKIP_DIRS = {"__pycache__", "test", "tests", "idle_test", "site-packages"}


def stage_interpreter(interp: HostInterpreter, dest: Path, extra_libs: Iterable[Path] = ()) -> None:
    """Copy the interpreter into ``dest`` laid out as ``/usr/local`` will hold it."""
    mm = interp.mm
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    (dest / "include").mkdir()
    shutil.copy2(interp.executable, dest / "bin" / f"python{mm}")
    libpython = _libpython(interp) if interp.shared else None
    if libpython:
        shutil.copy2(libpython, dest / "lib" / libpython.name)
        for alias in (f"libpython{mm}{interp.abiflags}.so", "libpython3.so"):
            src = libpython.parent / alias
            if src.is_symlink():
                os.symlink(os.readlink(src), dest / "lib" / alias)
            elif src.is_file():
                shutil.copy2(src, dest / "lib" / alias)
    stdlib_dest = dest / "lib" / f"python{mm}"
    shutil.copytree(interp.stdlib, stdlib_dest, symlinks=True, ignore=_ignore_stdlib)
    (stdlib_dest / "site-packages").mkdir(exist_ok=True)
    readme = interp.stdlib / "site-packages" / "README.txt"
    if readme.is_file():
        shutil.copy2(readme, stdlib_dest / "site-packages" / "README.txt")
    if interp.include.is_dir():
        shutil.copytree(interp.include, dest / "include" / interp.include.name, symlinks=True)
    pkgconfig = interp.prefix / "lib" / "pkgconfig"
    if pkgconfig.is_dir():
        shutil.copytree(pkgconfig, dest / "lib" / "pkgconfig", symlinks=True)
    for script in (f"python{mm}-config", f"pydoc{mm}", f"idle{mm}", f"2to3-{mm}"):
        src = interp.prefix / "bin" / script
        if src.is_file() and not src.is_symlink():
            shutil.copy2(src, dest / "bin" / script)
    for lib in extra_libs:
        shutil.copy2(lib, dest / "lib" / lib.name)
    _relocate(dest, interp.build_prefix, str(interp.prefix))


def _ignore_stdlib(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in _SKIP_DIRS and os.path.isdir(os.path.join(folder, n))}
    skip |= {
        n
        for n in names
        if n.endswith((".pyc", ".pyo")) or (n.startswith("libpython") and n.endswith(".a"))
    }
    return skip


def _relocate(dest: Path, *old_prefixes: str) -> None:
    """Rewrite the build prefix to /usr/local in sysconfig data, Makefile, pkg-config, scripts."""
    olds = sorted(
        {p for p in old_prefixes if p and p not in ("/usr/local", "/")}, key=len, reverse=True
    )
    targets: list[Path] = []
    targets += dest.glob("lib/python*/_sysconfigdata_*.py")
    targets += dest.glob("lib/python*/config-*/Makefile")
    targets += dest.glob("lib/python*/config-*/python-config.py")
    targets += dest.glob("lib/pkgconfig/*.pc")
    targets += (dest / "bin").iterdir()
    for path in targets:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # a binary (the interpreter itself)
        text = data.decode("utf-8", errors="surrogateescape")
        new = text
        for old in olds:
            new = new.replace(old, "/usr/local")
        if new.startswith("#!") and "python" in new.split("\n", 1)[0]:
            first, _, rest = new.partition("\n")
            mm = re.search(r"python(\d+\.\d+)", first)
            if mm:
                new = f"#!/usr/local/bin/python{mm.group(1)}\n{rest}"
        if new != text:
            mode = stat.S_IMODE(path.stat().st_mode)
            path.write_bytes(new.encode("utf-8", errors="surrogateescape"))
            os.chmod(path, mode)
