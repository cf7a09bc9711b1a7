"""The root file system under a base image: a slim Debian release made by debootstrap.

Made from the host's own APT mirror (read from its sources, never assumed), with
ca-certificates, netbase, tzdata and the packages a base needs; slimmed like Debian's ``-slim``
images and imported as ``reprobox/rootfs:<codename>-<hash>`` (cached by content).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .. import proc
from ..engine import Engine
from ..errors import CommandError, ToolMissing, UsageError
from ..payload.probe import os_release
from ..progress import Progress
from .releases import DEBIAN_RELEASES

#: What every slim Debian image carries besides the minimal base.
SLIM_PACKAGES = ("ca-certificates", "netbase", "tzdata")


# --------------------------------------------------------------------------- the host's OS


def host_release() -> tuple[Optional[str], Optional[str]]:
    """(ID, VERSION_CODENAME) of this machine, from its os-release file."""
    fields = os_release()
    return fields.get("ID"), fields.get("VERSION_CODENAME")


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
                out.append(
                    AptSource(
                        uri,
                        tuple(fields.get("suites", "").split()),
                        tuple(fields.get("components", "main").split()),
                        fields.get("signed-by"),
                    )
                )
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
                out.append(
                    AptSource(m.group(1), (m.group(2),), tuple(m.group(3).split()) or ("main",))
                )
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
    main = [
        s
        for s in debian
        if any(
            su in DEBIAN_RELEASES or su in ("stable", "testing", "unstable", "sid")
            for su in s.suites
        )
    ]
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
            return codename + suite[len(known) :]
    return None


def _sources_file(sources: list[AptSource]) -> str:
    stanzas = []
    for src in sources:
        lines = [
            "Types: deb",
            f"URIs: {src.uri}",
            f"Suites: {' '.join(src.suites)}",
            f"Components: {' '.join(src.components)}",
        ]
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

_APT_REMOVE = (
    '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true"'
)
_APT_CLEAN = f"""\
# Written by reprobox base, as in Debian's container images.
DPkg::Post-Invoke {{ {_APT_REMOVE}; }};
APT::Update::Post-Invoke {{ {_APT_REMOVE}; }};
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""

_APT_NO_LANG = 'Acquire::Languages "none";\n'
_APT_NO_RECOMMENDS = (
    'APT::Install-Recommends "false";\nAPT::AutoRemove::SuggestsImportant "false";\n'
)


def _slim(root: Path) -> None:
    """Drop what -slim images drop, and what a build must not find (apt lists, debs)."""
    for rel in (
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/groff",
        "usr/share/lintian",
        "usr/share/linda",
    ):
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
                if (
                    entry.name not in ("partial", "archives", "lock", "auxfiles")
                    or entry.is_file()
                    and entry.suffix == ".deb"
                ):
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
    env = {
        "DEBIAN_FRONTEND": "noninteractive",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
    }
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc.run(
        ["chroot", str(root), "apt-get", *args],
        env=env,
        timeout=1800,
        what=f"apt-get {' '.join(a for a in args if not a.startswith('-'))} in the new root "
        "file system",
        hint="check that this machine reaches its Debian mirror",
    )
    del progress


def rootfs_tag(codename: str, packages: Iterable[str], mirror: str) -> str:
    key = json.dumps([codename, sorted(set(packages)), mirror], separators=(",", ":"))
    return f"reprobox/rootfs:{codename}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def make_rootfs(
    codename: str,
    packages: list[str],
    engine: Engine,
    progress: Progress,
    pins: Optional[dict[str, str]] = None,
    check_python: Optional[str] = None,
) -> str:
    """A slim Debian ``codename`` root file system with ``packages``, imported as an image.

    ``pins`` (package -> version) are installed at exactly those versions after the release's
    updates; ``check_python`` (``"3.11:3.11.2"``) is verified inside the new root.
    """
    mirror, sources = debian_mirror(codename)
    tag = rootfs_tag(
        codename, [*packages, *(f"{k}={v}" for k, v in sorted((pins or {}).items()))], mirror
    )
    if engine.image_exists(tag):
        progress(f"root file system {tag} already built")
        return tag
    if not shutil.which("debootstrap"):
        raise ToolMissing("`debootstrap` is not installed", proc.INSTALL_HINTS["debootstrap"])
    if os.geteuid() != 0:
        raise UsageError(
            "debootstrap needs root to create a root file system", "run `sudo reprobox base ...`"
        )
    work = Path(tempfile.mkdtemp(prefix="reprobox-rootfs-", dir=scratch_dir()))
    root = work / "root"
    try:
        progress(f"debootstrap {codename} (minbase) from {mirror}")
        dpkg_cfg = root / "etc" / "dpkg" / "dpkg.cfg.d"
        dpkg_cfg.mkdir(parents=True)
        (dpkg_cfg / "docker").write_text(_DPKG_SLIM)
        proc.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(sorted(set(packages))),
                codename,
                str(root),
                mirror,
            ],
            timeout=3600,
            what=f"debootstrap {codename}",
            hint="check that this machine reaches the Debian mirror (or set "
            "REPROBOX_DEBIAN_MIRROR)",
        )
        apt_conf = root / "etc" / "apt" / "apt.conf.d"
        (apt_conf / "docker-clean").write_text(_APT_CLEAN)
        (apt_conf / "docker-no-languages").write_text(_APT_NO_LANG)
        (apt_conf / "docker-no-recommends").write_text(_APT_NO_RECOMMENDS)
        if sources:
            (root / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(
                _sources_file(sources)
            )
            _remove(root / "etc" / "apt" / "sources.list")
            # The release's updates and security fixes, like the official images carry.
            shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
            progress(f"applying {codename} updates and security fixes")
            _apt_in_root(root, ["-q", "update"], progress)
            _apt_in_root(root, ["-q", "-y", "upgrade"], progress)
            if pins:
                specs = [f"{k}={v}" for k, v in sorted(pins.items())]
                try:
                    _apt_in_root(
                        root, ["-q", "-y", "--allow-downgrades", "install", *specs], progress
                    )
                    progress("installed " + ", ".join(specs))
                except CommandError:
                    # Debian's archive keeps only the newest revision of a release's packages.
                    progress(
                        "warning: " + ", ".join(specs) + " are no longer in the archive; "
                        f"keeping {codename}'s current revision"
                    )
            _apt_in_root(root, ["-q", "clean"], progress)
        if check_python:
            mm, _, wanted = check_python.partition(":")
            got = proc.run(
                [
                    "chroot",
                    str(root),
                    f"python{mm}",
                    "-c",
                    "import platform; print(platform.python_version())",
                ],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                timeout=60,
                what=f"python{mm} in the new root file system",
            ).stdout.strip()
            if got != wanted:
                raise UsageError(
                    f"Debian {codename}'s python{mm} package is Python {got}, not {wanted}",
                    f"install a relocatable Python {wanted} (`uv python install {wanted}` or "
                    f"`pyenv install {wanted}`) and run `reprobox base` again",
                )
        _slim(root)
        tarball = work / "rootfs.tar"
        proc.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
            timeout=1800,
            what="packing the root file system",
        )
        progress(f"importing the root file system as {tag}")
        engine.import_rootfs(tarball, tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def scratch_dir() -> str:
    folder = os.environ.get("REPROBOX_SCRATCH") or "/var/tmp"
    return folder if os.path.isdir(folder) else tempfile.gettempdir()
