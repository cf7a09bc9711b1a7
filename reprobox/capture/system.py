"""The OS, and the OS packages that own the native libraries Python packages load.

A rebuilt environment needs the same system libraries as the captured one (``libgomp1``,
``libstdc++6``, ``libgl1``...). The probe says which library files the extension modules resolve
to; this module asks the package manager which packages own them, in as few process calls as
possible because it runs on every capture:

* dpkg: the file lists under ``/var/lib/dpkg/info/*.list`` are scanned once in-process (about
  four times faster than ``dpkg-query -S``, measured on Debian 12: 20 ms against 70 ms), then
  one ``dpkg-query -W`` gives versions and architectures. ``dpkg-query -S`` is still used,
  once for all paths, when the lists cannot be read or a path is diverted (``dpkg-divert``).
* rpm: one ``rpm -qf`` for all paths.

With ``cache_dir`` the answer is remembered until the package database changes, so a second
capture costs no process call at all.

Paths are tried as given, as their realpath, and in their ``/usr``-less / ``/usr``-prefixed
variants: on merged-/usr systems the loader finds ``/usr/lib/x86_64-linux-gnu/libc.so.6`` while
the package database lists ``/lib/x86_64-linux-gnu/libc.so.6``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import proc
from ..model import grammar as validate
from ..errors import ReproboxError, ValidationError
from ..model import AptSource, OSInfo, SystemPackage

DPKG_INFO = Path("/var/lib/dpkg/info")
#: The answer of :func:`owning_packages`, kept in its cache folder.
SYSTEM_CACHE_FILE = "system-packages.json"
DPKG_STATUS = Path("/var/lib/dpkg/status")
DPKG_DIVERSIONS = Path("/var/lib/dpkg/diversions")
CACHE_VERSION = 1


# --------------------------------------------------------------------------- OS


def os_info(raw_os: Mapping[str, Any]) -> OSInfo:
    """Build :class:`OSInfo` from the probe's ``os`` section (os-release, uname, glibc)."""
    release = raw_os.get("release") or {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    return OSInfo(
        id=text(release.get("ID")),
        version_id=text(release.get("VERSION_ID")),
        codename=text(release.get("VERSION_CODENAME")) or text(release.get("UBUNTU_CODENAME")),
        pretty_name=text(release.get("PRETTY_NAME")),
        id_like=tuple((text(release.get("ID_LIKE")) or "").split()),
        kernel=text(raw_os.get("kernel")),
        glibc=text(raw_os.get("glibc")),
        arch=text(raw_os.get("machine")),
        system=text(raw_os.get("system")) or "Linux",
    )


# --------------------------------------------------------------------------- path variants


def path_variants(path: str) -> list[str]:
    """The spellings under which a package database may list ``path``, most likely first."""
    out: list[str] = []

    def add(p: str) -> None:
        p = os.path.normpath(p)
        if p not in out:
            out.append(p)
        if p.startswith("/usr/"):
            short = p[4:]
            if short not in out:
                out.append(short)
        elif p.startswith(("/lib", "/bin", "/sbin")):
            long = "/usr" + p
            if long not in out:
                out.append(long)

    add(path)
    try:
        add(os.path.realpath(path))
    except OSError:
        pass
    # a library reached through a symlinked folder (/usr/lib64 -> ...): real folder, same name
    add(os.path.join(os.path.realpath(os.path.dirname(path) or "/"), os.path.basename(path)))
    return out


# --------------------------------------------------------------------------- dpkg


def _so_lines(data: bytes) -> Iterator[bytes]:
    """The lines of one dpkg file list that contain ``.so`` (shared objects, among others)."""
    i = data.find(b".so")
    while i >= 0:
        start = data.rfind(b"\n", 0, i) + 1
        end = data.find(b"\n", i)
        if end < 0:
            end = len(data)
        yield data[start:end]
        i = data.find(b".so", end)


def _list_files(info_dir: Path) -> list[tuple[str, str]]:
    """(package[:arch], path) of each of dpkg's ``.list`` files."""
    with os.scandir(info_dir) as it:
        return [(e.name[: -len(".list")], e.path) for e in it if e.name.endswith(".list")]


class DpkgLists:
    """dpkg's file lists read ahead, while the probe runs (a capture waits for the probe, and
    reading ~800 lists takes ~20 ms): each listed path with ``.so`` in it -> the packages that
    list it, in the order a scan would find them."""

    def __init__(self, so_lines: dict[bytes, list[str]], info_dir: Path) -> None:
        self.so_lines = so_lines
        self.info_dir = info_dir

    @classmethod
    def read(cls, info_dir: Path = DPKG_INFO) -> "DpkgLists":
        index: dict[bytes, list[str]] = {}
        for pkg, path in _list_files(info_dir):
            with open(path, "rb") as f:
                data = f.read()
            for line in _so_lines(data):
                index.setdefault(line, []).append(pkg)
        return cls(index, info_dir)


def read_ahead(cache_dir: Path | None) -> DpkgLists | None:
    """dpkg's lists, read now for :func:`owning_packages` later, when it will need them: on a
    dpkg system, without an answer in the system-package cache yet (a first capture)."""
    if cache_dir is not None and (Path(cache_dir) / SYSTEM_CACHE_FILE).exists():
        return None
    if package_manager() != "dpkg":
        return None
    try:
        return DpkgLists.read(DPKG_INFO)
    except OSError:
        return None  # scanned (or queried) as usual, where the error is handled


def _dpkg_scan_lists(
    candidates: set[str], info_dir: Path = DPKG_INFO, lists: DpkgLists | None = None
) -> dict[str, list[str]]:
    """candidate path -> [package[:arch]] by scanning dpkg's file lists in-process.

    Libraries are found by looking only at lines containing ``.so``; any candidate without
    ``.so`` in its name is looked for line by line in the same pass. With ``lists`` read ahead
    from the same folder, candidates that all contain ``.so`` are looked up there instead.
    """
    want = {c.encode("utf-8", "surrogateescape") for c in candidates}
    odd = [w for w in want if b".so" not in w]
    if lists is not None and lists.info_dir == info_dir and not odd:
        return {
            w.decode("utf-8", "surrogateescape"): list(lists.so_lines[w])
            for w in want
            if w in lists.so_lines
        }
    owners: dict[str, list[str]] = {}
    for pkg, path in _list_files(info_dir):
        with open(path, "rb") as f:
            data = f.read()
        for line in _so_lines(data):
            if line in want:
                owners.setdefault(line.decode("utf-8", "surrogateescape"), []).append(pkg)
        for w in odd:
            if data.startswith(w + b"\n") or b"\n" + w + b"\n" in data or data.endswith(b"\n" + w):
                owners.setdefault(w.decode("utf-8", "surrogateescape"), []).append(pkg)
    return owners


def _diverted(candidates: set[str]) -> bool:
    try:
        lines = DPKG_DIVERSIONS.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line in candidates for line in lines)


def parse_dpkg_search(text: str) -> dict[str, list[str]]:
    """Parse ``dpkg-query -S`` output (``pkg1:arch, pkg2: /path``) into path -> packages."""
    owners: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("diversion by "):
            continue
        pkgs, sep, path = line.partition(": ")
        if not sep or not path.startswith("/"):
            continue
        owners.setdefault(path, []).extend(p.strip() for p in pkgs.split(",") if p.strip())
    return owners


def _dpkg_search(candidates: set[str]) -> dict[str, list[str]]:
    """One ``dpkg-query -S`` for every candidate (exit status 1 just means "some not found")."""
    result = proc.run(
        ["dpkg-query", "-S", *sorted(candidates)],
        check=False,
        what="dpkg-query -S",
    )
    if result.returncode not in (0, 1):
        raise ReproboxError(
            f"dpkg-query -S failed with exit status {result.returncode}: "
            f"{(result.stderr or '').strip()[-300:]}",
            "check that the dpkg database under /var/lib/dpkg is readable",
        )
    return parse_dpkg_search(result.stdout or "")


_DPKG_FORMAT = "${binary:Package}\t${Package}\t${Architecture}\t${Version}\t${db:Status-Abbrev}\n"


def parse_dpkg_versions(text: str) -> dict[str, tuple[str, str, str | None]]:
    """Parse the ``dpkg-query -W`` output this module asks for.

    Returns both ``pkg`` and ``pkg:arch`` spellings -> (name, version, arch), installed only.
    """
    out: dict[str, tuple[str, str, str | None]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        binary, name, arch, version, status = parts[:5]
        if not version or not status.startswith("i"):
            continue
        rec = (name, version, arch or None)
        out[binary] = rec
        out.setdefault(name, rec)
        if arch:
            out[f"{name}:{arch}"] = rec
    return out


def dpkg_versions(packages: Iterable[str]) -> dict[str, tuple[str, str, str | None]]:
    names = sorted(set(packages))
    if not names:
        return {}
    result = proc.run(
        ["dpkg-query", "-W", "-f", _DPKG_FORMAT, *names], check=False, what="dpkg-query -W"
    )
    return parse_dpkg_versions(result.stdout or "")


def _dpkg_owners(
    paths: list[str], lists: DpkgLists | None = None
) -> tuple[dict[str, list[str]], str]:
    """path -> owning ``pkg[:arch]`` names, and how they were found."""
    variants = {p: path_variants(p) for p in paths}
    candidates = {v for vs in variants.values() for v in vs}
    how = "dpkg info lists"
    try:
        if _diverted(candidates):
            raise OSError("diverted")
        found = _dpkg_scan_lists(candidates, DPKG_INFO, lists)
    except OSError:
        how = "dpkg-query -S"
        found = _dpkg_search(candidates)
    owners: dict[str, list[str]] = {}
    for path, vs in variants.items():
        for v in vs:
            if v in found:
                owners[path] = found[v]
                break
    return owners, how


# --------------------------------------------------------------------------- rpm


_RPM_FORMAT = "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"


def parse_rpm_query(paths: list[str], text: str) -> dict[str, tuple[str, str, str]] | None:
    """Match ``rpm -qf`` output lines back to the queried paths (one line per path).

    Returns None when the line count does not match (a file with several owners), so the
    caller can ask path by path instead.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != len(paths):
        return None
    out: dict[str, tuple[str, str, str]] = {}
    for path, line in zip(paths, lines):
        parts = line.split("\t")
        if len(parts) != 3:
            continue  # "file ... is not owned by any package"
        name, version, arch = parts
        version = version.removeprefix("0:")
        out[path] = (name, version, arch)
    return out


def _rpm_owners(paths: list[str]) -> dict[str, tuple[str, str, str]]:
    """path -> (name, version, arch) with one ``rpm -qf`` (per-path only when ambiguous)."""
    queried: list[str] = []
    original: dict[str, str] = {}
    for p in paths:
        for v in path_variants(p):
            if os.path.lexists(v) and v not in original:
                original[v] = p
                queried.append(v)
                break
    if not queried:
        return {}
    result = proc.run(["rpm", "-qf", "--qf", _RPM_FORMAT, *queried], check=False, what="rpm -qf")
    found = parse_rpm_query(queried, result.stdout or "")
    if found is None:
        found = {}
        for q in queried:
            one = proc.run(["rpm", "-qf", "--qf", _RPM_FORMAT, q], check=False, what="rpm -qf")
            line = (one.stdout or "").splitlines()[:1]
            parsed = parse_rpm_query([q], line[0] if line else "")
            if parsed:
                found.update(parsed)
    return {original[q]: rec for q, rec in found.items()}


# --------------------------------------------------------------------------- public


def package_manager() -> str | None:
    """``dpkg``, ``rpm`` or None: which database owns this system's files."""
    if DPKG_STATUS.is_file() and proc.which("dpkg-query"):
        return "dpkg"
    if proc.which("rpm"):
        return "rpm"
    return None


def _cache_key(manager: str, paths: list[str]) -> str | None:
    db = DPKG_STATUS if manager == "dpkg" else Path("/var/lib/rpm")
    try:
        st = db.stat()
    except OSError:
        return None
    digest = hashlib.sha256("\n".join(sorted(paths)).encode("utf-8", "surrogateescape"))
    return f"{manager}:{st.st_size}:{st.st_mtime_ns}:{digest.hexdigest()}"


def _load_cache(cache_file: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("version") == CACHE_VERSION and data.get("key") == key:
        return data
    return None


def _save_cache(
    cache_file: Path, key: str, packages: list[SystemPackage], unowned: list[str]
) -> None:
    data = {
        "version": CACHE_VERSION,
        "key": key,
        "packages": [p.to_dict() for p in packages],
        "unowned": unowned,
    }
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, cache_file)
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache that cannot be written only costs speed


def owning_packages(
    paths: Iterable[str],
    libraries_by_path: Mapping[str, list[str]] | None = None,
    *,
    cache_dir: Path | None = None,
    dpkg_lists: DpkgLists | None = None,
) -> tuple[list[SystemPackage], list[str]]:
    """Map library files to the OS packages owning them.

    ``libraries_by_path`` maps each path to the sonames needed under it, which become
    :attr:`SystemPackage.libraries` (default: the file names). Returns the packages, sorted by
    name, and the paths no package owns (on a system without dpkg or rpm: all of them).
    ``dpkg_lists``: dpkg's lists read ahead (:func:`read_ahead`).
    """
    wanted = sorted({p for p in paths if p})
    if not wanted:
        return [], []
    manager = package_manager()
    if manager is None:
        return [], wanted
    cache_file = key = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / SYSTEM_CACHE_FILE
        key = _cache_key(manager, wanted)
        cached = _load_cache(cache_file, key) if key else None
        if cached is not None:
            return (
                [SystemPackage.from_dict(p) for p in cached["packages"]],
                list(cached["unowned"]),
            )

    def libs_of(path: str) -> list[str]:
        if libraries_by_path and path in libraries_by_path:
            return list(libraries_by_path[path])
        return [os.path.basename(path)]

    merged: dict[tuple[str, str | None], dict[str, Any]] = {}
    unowned: list[str] = []
    if manager == "dpkg":
        owners, _how = _dpkg_owners(wanted, dpkg_lists)
        versions = dpkg_versions(p for ps in owners.values() for p in ps)
        for path in wanted:
            pkgs = [p for p in owners.get(path, []) if p in versions]
            if not pkgs:
                unowned.append(path)
                continue
            for full in pkgs:
                name, version, arch = versions[full]
                rec = merged.setdefault(
                    (name, arch), {"version": version, "libraries": set(), "manager": "dpkg"}
                )
                rec["libraries"].update(libs_of(path))
    else:
        found = _rpm_owners(wanted)
        for path in wanted:
            if path not in found:
                unowned.append(path)
                continue
            name, version, arch = found[path]
            rec = merged.setdefault(
                (name, arch), {"version": version, "libraries": set(), "manager": "rpm"}
            )
            rec["libraries"].update(libs_of(path))
    packages = [
        SystemPackage(
            name=name,
            version=rec["version"],
            manager=rec["manager"],
            arch=arch,
            libraries=tuple(sorted(rec["libraries"])),
        )
        for (name, arch), rec in sorted(merged.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
    if cache_file is not None and key is not None:
        _save_cache(cache_file, key, packages, unowned)
    return packages, unowned


# --------------------------------------------------------------------------- library attribution


def _stem(name: str) -> str:
    """``libcutensorMg.so.2`` -> ``cutensormg``; ``tbbpool.cpython-311-x86_64-linux-gnu.so`` ->
    ``tbbpool``."""
    base = os.path.basename(name).split(".", 1)[0].lower()
    return base[3:] if base.startswith("lib") else base


def only_tried(soname: str, needing_files: Iterable[str]) -> bool:
    """Whether a soname that does not resolve is needed only by optional binding modules.

    Packages ship a binding module per optional library and import it only when that library
    is present (cupy's ``cupy_backends/cuda/libs/cutensor`` for libcutensor, numba's
    ``np/ufunc/tbbpool`` for libtbb): such a module lies in a subpackage and is named after the
    library it binds. When every file needing the soname is one, the package works without it,
    so it is not reported missing (a recorded run that tries it and fails is).
    """
    files = [f for f in needing_files if f]
    if not files:
        return False
    lib = _stem(soname)
    if len(lib) < 3:
        return False
    for f in files:
        mod = _stem(f)
        parts = f.replace("\\", "/").split("/")
        in_subpackage = (
            "site-packages" in parts
            and len(parts) - parts.index("site-packages") >= 4
            or "dist-packages" in parts
            and len(parts) - parts.index("dist-packages") >= 4
        )
        if not in_subpackage or len(mod) < 3 or not (mod in lib or lib in mod):
            return False
    return True


def add_declared(
    found: list[SystemPackage], names: Iterable[str]
) -> tuple[list[SystemPackage], list[str]]:
    """``found`` plus the packages declared by name, at the version installed on this machine
    (dpkg only). A declared package already found keeps its record; one not installed here is
    left out with a warning (its version cannot be known)."""
    have = {p.name for p in found}
    wanted = sorted(set(names) - have)
    if not wanted:
        return list(found), []
    if package_manager() != "dpkg":
        return list(found), [
            f"--system-package {', '.join(wanted)}: this machine has no dpkg database to take "
            "the version from; left out"
        ]
    versions = dpkg_versions(wanted)
    out = list(found)
    warnings: list[str] = []
    for name in wanted:
        rec = versions.get(name)
        if rec is None:
            warnings.append(
                f"system package {name} is declared but not installed on this "
                f"machine: left out (install it, `apt-get install {name}`, and "
                "capture again)"
            )
            continue
        pname, version, arch = rec
        out.append(SystemPackage(name=pname, version=version, manager="dpkg", arch=arch))
    return sorted(out, key=lambda p: p.name), warnings


# --------------------------------------------------------------------------- apt sources
#
# Where the host's Debian/Ubuntu packages come from: the one-line ``sources.list`` format and the
# deb822 ``*.sources`` files. Recorded: URI (credentials removed), suites, components, the key
# file's name, and the archive time of a snapshot URI (snapshot.debian.org/archive/debian/<time>),
# which pins the archive's state. ``deb-src`` lines, disabled entries, ``cdrom:``/``file:``/
# ``mirror+`` URIs and anything off the grammar of :func:`reprobox.model.grammar.apt_source` are
# left out, with a warning naming the file.

APT_DIR = Path("/etc/apt")
#: A sources file bigger than this is not read.
MAX_APT_FILE_BYTES = 256 * 1024
_SNAPSHOT_TAIL = __import__("re").compile(r"/([0-9]{8}T[0-9]{6}Z)/?$")


def _strip_uri_credentials(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _apt_entry(
    uri: str,
    suites: list[str],
    components: list[str],
    signed_by: str | None,
    where: str,
    warnings: list[str],
) -> Any:
    uri = _strip_uri_credentials(uri.strip())
    key = None
    if signed_by:
        signed_by = signed_by.strip()
        # a path names a key file; an inline key block is not recorded
        key = os.path.basename(signed_by) if signed_by.startswith("/") else None
    m = _SNAPSHOT_TAIL.search(uri)
    src = AptSource(
        uri=uri,
        suites=tuple(suites),
        components=tuple(components),
        signed_by=key,
        snapshot=m.group(1) if m else None,
    )
    try:
        validate.apt_source(src, "apt source")
    except ValidationError as exc:
        warnings.append(f"the apt source {uri!r} in {where} is not recorded ({exc.message})")
        return None
    return src


def _read_small(path: Path) -> str | None:
    try:
        if path.is_symlink() and not path.exists():
            return None
        if path.stat().st_size > MAX_APT_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_sources_list(text: str, where: str, warnings: list[str]) -> list[Any]:
    """The ``deb`` lines of a one-line-format file (``deb [opts] URI SUITE [COMPONENT...]``)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue  # deb-src, comments, blank lines
        rest = line[3:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                warnings.append(f"an unreadable line in {where} is not recorded")
                continue
            for opt in rest[1:end].split():
                k, _, v = opt.partition("=")
                options[k] = v
            rest = rest[end + 1 :].strip()
        words = rest.split()
        if len(words) < 2:
            continue
        entry = _apt_entry(
            words[0], [words[1]], words[2:], options.get("signed-by"), where, warnings
        )
        if entry is not None:
            out.append(entry)
    return out


def parse_deb822_sources(text: str, where: str, warnings: list[str]) -> list[Any]:
    """The ``Types: deb`` entries of a deb822 ``.sources`` file (one entry per URI)."""
    out = []
    for para in __import__("re").split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for raw in para.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and current:
                fields[current] += "\n" + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if not sep:
                continue
            current = name.strip().lower()
            fields[current] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            entry = _apt_entry(
                uri,
                fields.get("suites", "").split(),
                fields.get("components", "").split(),
                fields.get("signed-by", "").split("\n", 1)[0] or None,
                where,
                warnings,
            )
            if entry is not None:
                out.append(entry)
    return out


def apt_sources(apt_dir: Path = APT_DIR) -> tuple[tuple[Any, ...], list[str]]:
    """The host's apt sources (see above) and the warnings about those left out."""
    warnings: list[str] = []
    found: list[Any] = []
    main = apt_dir / "sources.list"
    text = _read_small(main)
    if text is not None:
        found += parse_sources_list(text, str(main), warnings)
    folder = apt_dir / "sources.list.d"
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    for name in names:
        path = folder / name
        if name.endswith(".list"):
            text = _read_small(path)
            if text is not None:
                found += parse_sources_list(text, str(path), warnings)
        elif name.endswith(".sources"):
            text = _read_small(path)
            if text is not None:
                found += parse_deb822_sources(text, str(path), warnings)
    unique = list(dict.fromkeys(found))
    if len(unique) > validate.MAX_APT_SOURCES:
        warnings.append(
            f"{len(unique)} apt sources: only the first {validate.MAX_APT_SOURCES} are recorded"
        )
        unique = unique[: validate.MAX_APT_SOURCES]
    return tuple(unique), warnings
