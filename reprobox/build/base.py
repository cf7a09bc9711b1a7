"""``reprobox base``: a ``python:X.Y.Z-slim-<codename>`` image made without any registry.

Air-gapped sites and offline CI cannot pull the official Python images, yet every build starts
from one. This builds a stand-in laid out the same way, from what the machine already has:

1. a Debian root file system made by ``debootstrap --variant=minbase`` from the host's own APT
   mirror (read from its sources, never assumed), with ca-certificates, netbase, tzdata and the
   packages that own the shared libraries the interpreter links to; slimmed like Debian's
   ``-slim`` images and imported as ``reprobox/rootfs:<codename>-<hash>`` (cached by content);
2. the exact interpreter copied from this machine's own installation (pyenv,
   python-build-standalone or uv-managed builds, which are relocatable) into ``/usr/local``:
   the binary, libpython, the standard library without tests, caches or site-packages, the
   headers, with the build prefix rewritten to ``/usr/local``; then ``ldconfig``, the
   ``python3``/``python`` links and pip from the interpreter's own ``ensurepip`` (no network).

The recipe of step 2 is ``templates/base.Dockerfile.j2`` (shown as ``Dockerfile.base`` at the
top of the repository).

When the only interpreter of that version is the distribution's own (Debian's ``python3.X``
package, which is not relocatable: it is spread over /usr and patched), the base installs the same
package in the root file system instead, pinned to this machine's revision while Debian's archive
still has it (``templates/base-debian.Dockerfile.j2``); that is possible only for this machine's
own Debian release. The result is tagged ``python:X.Y.Z-slim-<codename>`` so that
``reprobox build`` finds it, and ``reprobox/python:X.Y.Z-slim-<codename>`` as well.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .. import proc
from ..errors import CommandError, ReproboxError, ToolMissing, UsageError
from .images import DEBIAN_RELEASES, check_codename, check_python_release
from .render import render_template

Progress = Callable[[str], None]

#: What every slim Debian image carries besides the minimal base.
SLIM_PACKAGES = ("ca-certificates", "netbase", "tzdata")
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
        yield items[i:i + size]


def _libpython(interp: HostInterpreter) -> Optional[Path]:
    for folder in (interp.prefix / "lib", interp.executable.parent.parent / "lib"):
        if interp.instsoname and (folder / interp.instsoname).exists():
            return folder / interp.instsoname
    return None


def _usr_variants(path: Path) -> list[str]:
    """dpkg knows a file by the path its package ships, which /usr-merge may have moved."""
    real = os.path.realpath(path)
    out = [str(path), real]
    for p in (str(path), real):
        if p.startswith("/usr/"):
            out.append(p[4:])
        else:
            out.append("/usr" + p)
    return list(dict.fromkeys(out))


def owning_packages(paths: Iterable[Path]) -> tuple[set[str], list[Path]]:
    """The Debian packages owning ``paths`` (by dpkg), and the paths no package owns."""
    owners: set[str] = set()
    unowned: list[Path] = []
    if not shutil.which("dpkg-query"):
        return owners, list(paths)
    for path in paths:
        pkg = None
        for candidate in _usr_variants(path):
            res = proc.run(["dpkg-query", "-S", candidate], check=False, timeout=30)
            if res.returncode == 0 and res.stdout:
                pkg = res.stdout.split(":", 1)[0].split(",")[0].strip()
                break
        if pkg:
            owners.add(pkg)
        else:
            unowned.append(path)
    return owners, unowned


# --------------------------------------------------------------------------- the host's OS


def host_release() -> tuple[Optional[str], Optional[str]]:
    """(ID, VERSION_CODENAME) from /etc/os-release."""
    data: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            data[key] = value.strip().strip('"')
    except OSError:
        pass
    return data.get("ID"), data.get("VERSION_CODENAME")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: Optional[str] = None


def apt_sources(root: Path = Path("/")) -> list[AptSource]:
    """The host's APT sources (deb822 ``.sources`` files and one-line ``.list`` files)."""
    out: list[AptSource] = []
    etc = root / "etc" / "apt"
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            for uri in fields.get("uris", "").split():
                out.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                     tuple(fields.get("components", "main").split()),
                                     fields.get("signed-by")))
    lists = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in lists:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if m:
                out.append(AptSource(m.group(1), (m.group(2),), tuple(m.group(3).split()) or
                                     ("main",)))
    return out


def debian_mirror(codename: str) -> tuple[str, list[AptSource]]:
    """The host's Debian mirror for ``codename``, and its sources for that release.

    ``REPROBOX_DEBIAN_MIRROR`` overrides it (a local mirror or an apt proxy such as
    apt-cacher-ng). Otherwise the host must run Debian: its own sources say where the archive is.
    """
    forced = os.environ.get("REPROBOX_DEBIAN_MIRROR")
    sources = apt_sources()
    host_id, _host_code = host_release()
    if forced:
        return forced, [AptSource(forced, (codename,), ("main",))]
    debian = [s for s in sources if host_id == "debian" or "debian" in s.uri]
    main = [s for s in debian if any(su in DEBIAN_RELEASES or su in ("stable", "testing",
                                                                       "unstable", "sid")
                                     for su in s.suites)]
    if not main:
        raise UsageError(
            "cannot tell which Debian mirror to use: this machine's APT sources name none",
            "set REPROBOX_DEBIAN_MIRROR to a Debian mirror URL (for example your local mirror) "
            "and run `reprobox base` again",
        )
    uri = main[0].uri
    # The same archive's sources, moved to the requested release (updates, security).
    release_sources: list[AptSource] = []
    for src in debian:
        suites = tuple(s for s in (_retarget_suite(x, codename) for x in src.suites) if s)
        if suites:
            release_sources.append(AptSource(src.uri, suites, src.components, src.signed_by))
    return uri, release_sources


def _retarget_suite(suite: str, codename: str) -> Optional[str]:
    for known in DEBIAN_RELEASES:
        if suite == known or suite.startswith((known + "-", known + "/")):
            return codename + suite[len(known):]
    return None


def _sources_file(sources: list[AptSource]) -> str:
    stanzas = []
    for src in sources:
        lines = ["Types: deb", f"URIs: {src.uri}", f"Suites: {' '.join(src.suites)}",
                 f"Components: {' '.join(src.components)}"]
        if src.signed_by and "\n" not in src.signed_by:
            lines.append(f"Signed-By: {src.signed_by}")
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


# --------------------------------------------------------------------------- root file system

_DPKG_SLIM = """\
# Written by reprobox base, as in Debian's -slim images: no documentation, manuals or locales.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""

_APT_CLEAN = """\
# Written by reprobox base, as in Debian's container images.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""

_APT_NO_LANG = 'Acquire::Languages "none";\n'
_APT_NO_RECOMMENDS = 'APT::Install-Recommends "false";\nAPT::AutoRemove::SuggestsImportant "false";\n'


def _slim(root: Path) -> None:
    """Drop what -slim images drop, and what a build must not find (apt lists, debs)."""
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "usr/share/groff", "usr/share/lintian", "usr/share/linda"):
        folder = root / rel
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if rel == "usr/share/doc" and entry.is_dir() and (entry / "copyright").exists():
                for sub in entry.iterdir():
                    if sub.name != "copyright":
                        _remove(sub)
                continue
            _remove(entry)
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/apt"):
        folder = root / rel
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in ("partial", "archives", "lock", "auxfiles") or entry.is_file() and entry.suffix == ".deb":
                    _remove(entry)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        _remove(deb)
    for rel in ("var/log",):
        for entry in (root / rel).rglob("*"):
            if entry.is_file():
                entry.write_bytes(b"")
    _remove(root / "etc" / "resolv.conf")
    (root / "etc" / "hostname").write_text("localhost\n") if (root / "etc").is_dir() else None


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _apt_in_root(root: Path, args: list[str], progress: Progress) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "LC_ALL": "C"}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc.run(["chroot", str(root), "apt-get", *args], env=env, timeout=1800,
             what=f"apt-get {' '.join(a for a in args if not a.startswith('-'))} in the new root "
                  "file system",
             hint="check that this machine reaches its Debian mirror")
    del progress


def rootfs_tag(codename: str, packages: Iterable[str], mirror: str) -> str:
    key = json.dumps([codename, sorted(set(packages)), mirror], separators=(",", ":"))
    return f"reprobox/rootfs:{codename}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def make_rootfs(codename: str, packages: list[str], engine, progress: Progress,  # type: ignore[no-untyped-def]
                pins: Optional[dict[str, str]] = None, check_python: Optional[str] = None) -> str:
    """A slim Debian ``codename`` root file system with ``packages``, imported as an image.

    ``pins`` (package -> version) are installed at exactly those versions after the release's
    updates; ``check_python`` (``"3.11:3.11.2"``) is verified inside the new root.
    """
    mirror, sources = debian_mirror(codename)
    tag = rootfs_tag(codename, [*packages, *(f"{k}={v}" for k, v in sorted((pins or {}).items()))],
                     mirror)
    if engine.image_exists(tag):
        progress(f"root file system {tag} already built")
        return tag
    if not shutil.which("debootstrap"):
        raise ToolMissing("`debootstrap` is not installed", proc.INSTALL_HINTS["debootstrap"])
    if os.geteuid() != 0:
        raise UsageError("debootstrap needs root to create a root file system",
                         "run `sudo reprobox base ...`")
    work = Path(tempfile.mkdtemp(prefix="reprobox-rootfs-", dir=_scratch_dir()))
    root = work / "root"
    try:
        progress(f"debootstrap {codename} (minbase) from {mirror}")
        dpkg_cfg = root / "etc" / "dpkg" / "dpkg.cfg.d"
        dpkg_cfg.mkdir(parents=True)
        (dpkg_cfg / "docker").write_text(_DPKG_SLIM)
        proc.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(sorted(set(packages))),
             codename, str(root), mirror],
            timeout=3600, what=f"debootstrap {codename}",
            hint="check that this machine reaches the Debian mirror (or set "
                 "REPROBOX_DEBIAN_MIRROR)",
        )
        apt_conf = root / "etc" / "apt" / "apt.conf.d"
        (apt_conf / "docker-clean").write_text(_APT_CLEAN)
        (apt_conf / "docker-no-languages").write_text(_APT_NO_LANG)
        (apt_conf / "docker-no-recommends").write_text(_APT_NO_RECOMMENDS)
        if sources:
            (root / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(
                _sources_file(sources))
            _remove(root / "etc" / "apt" / "sources.list")
            # The release's updates and security fixes, like the official images carry.
            shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
            progress(f"applying {codename} updates and security fixes")
            _apt_in_root(root, ["-q", "update"], progress)
            _apt_in_root(root, ["-q", "-y", "upgrade"], progress)
            if pins:
                specs = [f"{k}={v}" for k, v in sorted(pins.items())]
                try:
                    _apt_in_root(root, ["-q", "-y", "--allow-downgrades", "install", *specs],
                                 progress)
                    progress("installed " + ", ".join(specs))
                except CommandError:
                    # Debian's archive keeps only the newest revision of a release's packages.
                    progress("warning: " + ", ".join(specs) + " are no longer in the archive; "
                             f"keeping {codename}'s current revision")
            _apt_in_root(root, ["-q", "clean"], progress)
        if check_python:
            mm, _, wanted = check_python.partition(":")
            got = proc.run(["chroot", str(root), f"python{mm}", "-c",
                            "import platform; print(platform.python_version())"],
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                           timeout=60,
                           what=f"python{mm} in the new root file system").stdout.strip()
            if got != wanted:
                raise UsageError(
                    f"Debian {codename}'s python{mm} package is Python {got}, not {wanted}",
                    f"install a relocatable Python {wanted} (`uv python install {wanted}` or "
                    f"`pyenv install {wanted}`) and run `reprobox base` again",
                )
        _slim(root)
        tarball = work / "rootfs.tar"
        proc.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
                 timeout=1800, what="packing the root file system")
        progress(f"importing the root file system as {tag}")
        engine.import_rootfs(tarball, tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def _scratch_dir() -> str:
    folder = os.environ.get("REPROBOX_SCRATCH") or "/var/tmp"
    return folder if os.path.isdir(folder) else tempfile.gettempdir()


# --------------------------------------------------------------------------- the interpreter tree

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
    skip |= {n for n in names if n.endswith((".pyc", ".pyo")) or
             (n.startswith("libpython") and n.endswith(".a"))}
    return skip


def _relocate(dest: Path, *old_prefixes: str) -> None:
    """Rewrite the build prefix to /usr/local in sysconfig data, Makefile, pkg-config, scripts."""
    olds = sorted({p for p in old_prefixes if p and p not in ("/usr/local", "/")}, key=len,
                  reverse=True)
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


# --------------------------------------------------------------------------- the image


def base_tags(version: str, codename: str) -> tuple[str, str]:
    return f"python:{version}-slim-{codename}", f"reprobox/python:{version}-slim-{codename}"


def render_base_dockerfile(version: str, codename: str, rootfs: str, source: str) -> str:
    """The recipe laying the staged interpreter out like the official image (pure)."""
    check_python_release(version, "--python")
    check_codename(codename, "--os")
    mm = ".".join(version.split(".")[:2])
    from ..model import grammar as validate

    source = validate.label_value(source, "interpreter source")
    return render_template("base.Dockerfile.j2", version=version, mm=mm, codename=codename,
                           rootfs=rootfs, source=source)


def _dpkg_versions(names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        res = proc.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", name], check=False,
                       timeout=30)
        status, _, version = (res.stdout or "").partition("\t")
        if res.returncode == 0 and status.endswith(" installed") and version:
            out[name] = version
    return out


def _build_packaged_base(interp: HostInterpreter, codename: str, engine,  # type: ignore[no-untyped-def]
                         report: Progress) -> str:
    """The base for Debian's own interpreter: the same ``pythonX.Y`` packages, same versions."""
    from .engine import BuildRequest

    version, mm = interp.version, interp.mm
    host_id, host_code = host_release()
    if host_id != "debian" or host_code != codename or not shutil.which("dpkg-query"):
        raise UsageError(
            f"the only Python {version} here is {host_id or 'the system'} {host_code or ''}'s "
            f"own ({interp.executable}), which exists as such only on Debian {host_code or '?'}",
            f"install a relocatable Python {version} (`uv python install {version}` or `pyenv "
            f"install {version}`) to build a {codename} base, or build on a Debian {codename} "
            "machine",
        )
    names = [f"python{mm}", f"python{mm}-minimal", f"libpython{mm}-minimal",
             f"libpython{mm}-stdlib"]
    pins = _dpkg_versions(names)
    if f"python{mm}-minimal" not in pins:
        raise UsageError(f"{interp.executable} does not come from Debian's python{mm} package",
                         f"install a relocatable Python {version}: `uv python install {version}`")
    report(f"interpreter: {interp.executable} (Debian's python{mm} {pins[f'python{mm}-minimal']})")
    rootfs = make_rootfs(codename, sorted(set(SLIM_PACKAGES) | {f"python{mm}"}), engine, report,
                         pins=pins, check_python=f"{mm}:{version}")
    tag, alias = base_tags(version, codename)
    got = engine.run_container(rootfs, ["dpkg-query", "-W", "-f=${Version}",
                                        f"python{mm}-minimal"])
    package_version = got.output.strip()
    if got.exit_code != 0 or not re.fullmatch(r"[0-9A-Za-z.+~:-]{1,100}", package_version):
        raise ReproboxError(f"cannot read the python{mm} package version in {rootfs}: "
                            f"{got.output.strip()[:200]}")
    if package_version != pins[f"python{mm}-minimal"]:
        report(f"warning: the base has Debian's python{mm} {package_version}, this machine "
               f"{pins[f'python{mm}-minimal']} (both Python {version})")
    work = Path(tempfile.mkdtemp(prefix="reprobox-base-", dir=_scratch_dir()))
    try:
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(render_template(
            "base-debian.Dockerfile.j2", version=version, mm=mm, codename=codename,
            rootfs=rootfs, package_version=package_version))
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = engine.build(
            BuildRequest(context=work, dockerfile=dockerfile, tag=tag,
                         labels={"org.opencontainers.image.created": created},
                         buildkit=engine.buildkit() is not None),
            report,
        )
        engine.tag_image(result.image_id, alias)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"tagged {tag} and {alias}")
    return tag


def build_base(python_version: str, codename: str = "bookworm", *,
               progress: Optional[Progress] = None, force: bool = False) -> str:
    """Build ``python:<python_version>-slim-<codename>`` with no registry; return its tag."""
    from .engine import BuildRequest, get_engine

    report = progress or (lambda _line: None)
    check_python_release(python_version, "--python")
    check_codename(codename, "--os")
    if codename not in DEBIAN_RELEASES:
        raise UsageError(f"{codename!r} is not a Debian release reprobox knows",
                         "use one of: " + ", ".join(DEBIAN_RELEASES))
    engine = get_engine()
    tag, alias = base_tags(python_version, codename)
    if not force and engine.image_exists(tag):
        report(f"{tag} is already on this machine")
        return tag

    interp = find_interpreter(python_version)
    if interp.kind == "distribution":
        return _build_packaged_base(interp, codename, engine, report)
    report(f"interpreter: {interp.executable} ({interp.kind}, "
           f"{'shared' if interp.shared else 'static'} libpython)")
    libs = needed_libraries(interp)
    owners, unowned = owning_packages(libs)
    host_id, host_code = host_release()
    if owners and (host_id != "debian" or host_code != codename):
        raise UsageError(
            f"the Python {python_version} at {interp.prefix} links to this machine's "
            f"{host_id or 'system'} {host_code or ''} libraries ({', '.join(sorted(owners))}), "
            f"which Debian {codename} may not carry in the same versions",
            f"build the base on a Debian {codename} machine, or use a self-contained build: "
            f"`uv python install {python_version}`",
        )
    packages = sorted(set(SLIM_PACKAGES) | owners)
    rootfs = make_rootfs(codename, packages, engine, report)

    work = Path(tempfile.mkdtemp(prefix="reprobox-base-", dir=_scratch_dir()))
    try:
        report(f"copying Python {python_version} from {interp.prefix}")
        stage_interpreter(interp, work / "python", unowned)
        source = f"{interp.kind} build at {interp.prefix}"
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(render_base_dockerfile(python_version, codename, rootfs, source))
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        bk = engine.buildkit()
        result = engine.build(
            BuildRequest(context=work, dockerfile=dockerfile, tag=tag,
                         labels={"org.opencontainers.image.created": created},
                         buildkit=bk is not None),
            report,
        )
        engine.tag_image(result.image_id, alias)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"tagged {tag} and {alias}")
    return tag
