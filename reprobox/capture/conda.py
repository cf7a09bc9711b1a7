"""Conda-family environments: what ``conda-meta/*.json`` says about each package.

conda, mamba, micromamba, pixi and py-rattler all keep one JSON record per installed package in
``<prefix>/conda-meta/<name>-<version>-<build>.json``: name, version, build string and number,
channel, subdir, the archive's URL with its md5 (and sha256 on recent tools), its dependencies,
the files it put into the prefix and what the user asked for (conda and mamba:
``requested_spec``; rattler and pixi: ``requested_specs``; the ``history`` file lists the
specs of every ``install``/``update``/``remove``). These are plain JSON files, so they are read
here, on the host, from the prefix the probe reported: nothing runs in the target interpreter
for them.

What this module adds to a capture:

* the conda packages, with channels and URLs stripped of credentials and ``/t/<token>`` parts;
* which Python distributions of the prefix conda installed (their metadata folder is a file of a
  conda package): those are reported once, as conda packages, and the rest keep their pip record;
* which conda package owns each native library the environment's code loads from the prefix.

A record that cannot be read, or lacks a name, version or build, stops the capture with a message
naming the file, before anything is written.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import UsageError
from ..model import CondaEnvironment, CondaPackage, Package
from ..model.condacheck import KNOWN_SUBDIRS
from ..redact import strip_url_credentials
from ..names import canonical_name

CONDA_META = "conda-meta"

#: Where a bare channel name lives when no ``channel_alias`` says otherwise.
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org"
#: What conda's ``defaults`` stands for on Linux (its ``default_channels``).
DEFAULT_CHANNELS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")


_TOKEN = re.compile(r"/t/[^/]+(?=/|$)")
_CHANNEL_OK = re.compile(r"^[A-Za-z0-9_.:/@+~%-]+$")
_ARCHIVE = re.compile(r"\.(conda|tar\.bz2)$")


class CondaMetaError(UsageError):
    """A ``conda-meta`` record that cannot be read or lacks what every record has."""


# --------------------------------------------------------------------------- URLs and channels


def strip_token(url: str) -> str:
    """``https://host/t/<token>/chan`` -> ``https://host/chan``, user:password@ removed too."""
    cleaned = strip_url_credentials(url)
    if "://" not in cleaned:
        return cleaned
    parts = urlsplit(cleaned)
    return urlunsplit(
        (parts.scheme, parts.netloc, _TOKEN.sub("", parts.path), parts.query, parts.fragment)
    )


def channel_url(value: str, subdir: Optional[str] = None) -> str:
    """A channel as its base URL: no subdir, no trailing slash, no credentials.

    ``conda-forge`` -> ``https://conda.anaconda.org/conda-forge``; ``pkgs/main`` ->
    ``https://repo.anaconda.com/pkgs/main``; ``https://host/chan/linux-64/`` ->
    ``https://host/chan``; a local folder -> its ``file://`` URL.
    """
    value = value.strip()
    if value.startswith("/"):
        value = Path(value).as_uri()
    elif "://" not in value:
        name = value.strip("/")
        if name.startswith("pkgs/"):
            return f"https://repo.anaconda.com/{name}"
        value = f"{DEFAULT_CHANNEL_ALIAS}/{name}"
    value = strip_token(value).rstrip("/")
    last = value.rsplit("/", 1)[-1]
    if last in KNOWN_SUBDIRS and (subdir is None or last == subdir or last == "noarch"):
        value = value.rsplit("/", 1)[0]
    return value


def _channel_from_url(url: str) -> Optional[str]:
    """The channel part of a package URL (``<channel>/<subdir>/<file>``)."""
    parts = url.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not _ARCHIVE.search(parts[2]):
        return None
    return channel_url(parts[0])


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class CondaRecord:
    """One parsed record: the model's package, and the files it owns (prefix-relative)."""

    package: CondaPackage
    paths: tuple[str, ...]
    source: str  # the record file, for messages


def _installed_files(paths: Sequence[str]) -> list[str]:
    """The files that define what a package installed: byte-code caches are left out, since
    conda compiles them at link time and py-rattler does not (Python makes them on import)."""
    return [p for p in paths if not p.endswith((".pyc", ".pyo"))]


def _files_sha256(paths: Sequence[str]) -> Optional[str]:
    if not paths:
        return None
    return hashlib.sha256("\n".join(sorted(paths)).encode("utf-8", "surrogateescape")).hexdigest()


def _requested(data: Mapping[str, Any]) -> Optional[str]:
    one = data.get("requested_spec")
    if isinstance(one, str) and one.strip():
        return one.strip()
    many = data.get("requested_specs")
    if isinstance(many, list):
        specs = [s.strip() for s in many if isinstance(s, str) and s.strip()]
        if specs:
            return ", ".join(specs)
    return None


def parse_record(data: Any, source: str) -> CondaRecord:
    """A ``conda-meta`` record (the JSON object) -> :class:`CondaRecord`.

    ``source`` names the file in messages. Name, version and build are required; everything else
    is taken when present and well-typed. Credentials and tokens never leave this function.
    """
    label = Path(source).name.removesuffix(".json")
    if not isinstance(data, Mapping):
        raise CondaMetaError(
            f"conda package {label}: its record {source} is not a JSON object",
            "repair the environment (`conda install --force-reinstall "
            f"{label.rsplit('-', 2)[0]}`) or recreate it, then capture again",
        )
    missing = [
        k
        for k in ("name", "version", "build")
        if not isinstance(data.get(k), str) or not data.get(k)
    ]
    if missing:
        raise CondaMetaError(
            f"conda package {label}: its record {source} lacks {', '.join(missing)} "
            "(a partial or hand-edited conda-meta file)",
            f"reinstall that package (`conda install --force-reinstall "
            f"{data.get('name') or label.rsplit('-', 2)[0]}`) or recreate the environment, "
            "then capture again",
        )
    name, version, build = data["name"], data["version"], data["build"]
    subdir = data.get("subdir") if isinstance(data.get("subdir"), str) else None
    url = data.get("url") if isinstance(data.get("url"), str) and data.get("url") else None
    clean = strip_token(url) if url else None
    channel: Optional[str] = None
    if clean:
        channel = _channel_from_url(clean)
    raw_channel = data.get("channel")
    if channel is None and isinstance(raw_channel, str) and _CHANNEL_OK.match(raw_channel):
        # conda writes pseudo-channels such as "<develop>" or "<unknown>": no channel at all
        channel = channel_url(raw_channel, subdir)
    files = data.get("files")
    paths = tuple(f for f in files if isinstance(f, str)) if isinstance(files, list) else ()
    number = data.get("build_number")
    noarch = data.get("noarch")
    if isinstance(noarch, bool):
        noarch = "generic" if noarch else None
    md5 = data.get("md5") if isinstance(data.get("md5"), str) else None
    sha = data.get("sha256") if isinstance(data.get("sha256"), str) else None
    depends = data.get("depends")
    return CondaRecord(
        package=CondaPackage(
            name=name,
            version=version,
            build=build,
            build_number=number if isinstance(number, int) and not isinstance(number, bool) else 0,
            channel=channel,
            subdir=subdir,
            url=clean,
            md5=md5.lower() if md5 else None,
            sha256=sha.lower() if sha else None,
            depends=tuple(d for d in depends if isinstance(d, str))
            if isinstance(depends, list)
            else (),
            requested_spec=_requested(data),
            noarch=noarch if isinstance(noarch, str) else None,
            files=len(_installed_files(paths)),
            files_sha256=_files_sha256(_installed_files(paths)),
        ),
        paths=paths,
        source=source,
    )


def read_record(path: Path) -> CondaRecord:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CondaMetaError(
            f"conda package {path.stem}: cannot read its record {path}: {exc.strerror or exc}",
            "check the environment's permissions, or recreate it",
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CondaMetaError(
            f"conda package {path.stem}: its record {path} is not valid JSON ({exc}); "
            "the file is truncated or corrupt",
            f"reinstall that package (`conda install --force-reinstall "
            f"{path.stem.rsplit('-', 2)[0]}`) or recreate the environment, then capture again",
        ) from None
    return parse_record(data, str(path))


# --------------------------------------------------------------------------- history, manager

_SPECS_LINE = re.compile(r"^#\s*(update|install|create|remove|neutered) specs:\s*(.*)$")


def _spec_list(text: str) -> list[str]:
    text = text.strip()
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value if isinstance(v, str)]
    return [s.strip().strip("'\"") for s in text.strip("[]").split(",") if s.strip()]


def _spec_name(spec: str) -> str:
    head = re.split(r"[\s=<>!~\[]", spec.strip(), maxsplit=1)[0]
    return head.rsplit("::", 1)[-1].rsplit("/", 1)[-1].lower()


def history_specs(text: str) -> tuple[list[str], Optional[str]]:
    """Specs the user asked for (in order, removals applied) and the tool named by ``# cmd:``."""
    specs: dict[str, str] = {}
    manager: Optional[str] = None
    for line in text.splitlines():
        if line.startswith("# cmd:") and manager is None:
            words = line[len("# cmd:") :].split()
            if words:
                tool = os.path.basename(words[0]).lower()
                if tool.endswith("-script.py"):
                    tool = tool[: -len("-script.py")]
                for known in ("micromamba", "mamba", "conda", "pixi"):
                    if known in tool:
                        manager = known
                        break
            continue
        m = _SPECS_LINE.match(line)
        if not m:
            continue
        action, items = m.group(1), _spec_list(m.group(2))
        for spec in items:
            name = _spec_name(spec)
            if action == "remove":
                specs.pop(name, None)
            elif action != "neutered":
                specs[name] = spec
    return list(specs.values()), manager


# --------------------------------------------------------------------------- the prefix


@dataclass
class CondaScan:
    """Everything read from one prefix."""

    prefix: Path
    environment: CondaEnvironment
    #: prefix-relative path -> name of the conda package owning it
    owners: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def is_conda_prefix(prefix: Optional[str | os.PathLike[str]]) -> bool:
    return bool(prefix) and (Path(prefix) / CONDA_META).is_dir()  # type: ignore[arg-type]


def read_prefix(prefix: str | os.PathLike[str]) -> CondaScan:
    """Read every ``conda-meta/*.json`` record of ``prefix`` (a conda-family environment)."""
    prefix = Path(prefix)
    meta = prefix / CONDA_META
    try:
        names = sorted(n for n in os.listdir(meta) if n.endswith(".json"))
    except OSError as exc:
        raise CondaMetaError(
            f"cannot list {meta}: {exc.strerror or exc}",
            "check the environment's permissions, or recreate it",
        ) from None
    records = [read_record(meta / n) for n in names]
    history_text = ""
    try:
        with open(meta / "history", encoding="utf-8", errors="replace") as f:
            history_text = f.read()
    except OSError:
        pass
    return scan_records(prefix, records, history_text, _manager_hint(prefix))


def _manager_hint(prefix: Path) -> Optional[str]:
    if (prefix / CONDA_META / "pixi").exists() or f"{os.sep}.pixi{os.sep}envs{os.sep}" in str(
        prefix
    ) + os.sep:
        return "pixi"
    if (prefix / "CACHEDIR.TAG").exists():
        return "rattler"
    return None


def scan_records(
    prefix: Path,
    records: Sequence[CondaRecord],
    history_text: str,
    manager_hint: Optional[str] = None,
) -> CondaScan:
    """The environment made of parsed records (read here, or inside a container)."""
    meta = prefix / CONDA_META
    requested, tool = history_specs(history_text)
    owners: dict[str, str] = {}
    warnings: list[str] = []
    seen: dict[str, str] = {}
    channels: list[str] = []
    packages: list[CondaPackage] = []
    subdirs: set[str] = set()
    for rec in records:
        pkg = rec.package
        if pkg.name in seen:
            raise CondaMetaError(
                f"conda package {pkg.name} has two records in {meta}: {seen[pkg.name]} and "
                f"{Path(rec.source).name}",
                "an interrupted install left a stale record: reinstall the package or "
                "recreate the environment",
            )
        seen[pkg.name] = Path(rec.source).name
        packages.append(pkg)
        for p in rec.paths:
            owners[p] = pkg.name
        if pkg.channel and pkg.channel not in channels:
            channels.append(pkg.channel)
        if pkg.subdir and pkg.subdir != "noarch":
            subdirs.add(pkg.subdir)
        if not pkg.url:
            warnings.append(
                f"conda package {pkg.name} {pkg.version} ({pkg.build}) has no download URL "
                "(built or installed locally): no rebuild can fetch it"
            )
    if not requested:
        requested = [p.requested_spec for p in packages if p.requested_spec]
    env = CondaEnvironment(
        packages=tuple(packages),
        channels=tuple(channels),
        platform=sorted(subdirs)[0] if len(subdirs) == 1 else (",".join(sorted(subdirs)) or None),
        manager="pixi" if manager_hint == "pixi" else (tool or manager_hint),
        requested_specs=tuple(requested),
    )
    return CondaScan(prefix=prefix, environment=env, owners=owners, warnings=warnings)


def _prefix_relative(path: str, prefix: Path, real_prefix: str) -> Optional[str]:
    for root in (str(prefix), real_prefix):
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return path[len(root.rstrip(os.sep)) + 1 :]
    return None


def split_distributions(
    packages: Iterable[Package],
    distributions: Iterable[Mapping[str, Any]],
    scan: CondaScan,
) -> tuple[list[Package], list[str]]:
    """The Python distributions pip (or another Python installer) put into the prefix.

    A distribution whose metadata folder is a file of a conda package is that conda package's,
    and is reported once, as a conda package; the others keep their pip records. Returns the
    remaining distributions and warnings for an INSTALLER that disagrees with the ownership.
    """
    real_prefix = os.path.realpath(scan.prefix)
    conda_owned: dict[str, str] = {}
    for rec in distributions:
        meta = rec.get("metadata_dir")
        name = rec.get("name")
        if not isinstance(meta, str) or not isinstance(name, str):
            continue
        rel = _prefix_relative(meta, scan.prefix, real_prefix)
        if rel is None:
            continue
        owner = None
        for candidate in (rel + "/METADATA", rel + "/PKG-INFO", rel):
            owner = scan.owners.get(candidate)
            if owner:
                break
        if owner:
            conda_owned[canonical_name(name)] = owner
    kept: list[Package] = []
    warnings: list[str] = []
    conda_versions = {p.name: p.version for p in scan.environment.packages}
    for pkg in packages:
        if pkg.name in conda_owned:
            continue
        if pkg.name in conda_versions and conda_versions[pkg.name] != pkg.version:
            warnings.append(
                f"{pkg.display_name or pkg.name} {pkg.version} was installed by "
                f"{pkg.installer or 'pip'} over conda's {pkg.name} {conda_versions[pkg.name]}: "
                "both are recorded, and a rebuild installs them in that order"
            )
        if (pkg.installer or "").strip().lower() == "conda":
            warnings.append(
                f"{pkg.display_name or pkg.name} {pkg.version} says conda installed it, but no "
                "conda-meta record owns it: it is recorded as a Python package"
            )
        kept.append(pkg)
    return kept, warnings


def attribute_libraries(
    scan: CondaScan, libraries: Mapping[str, str]
) -> tuple[CondaEnvironment, dict[str, str]]:
    """Give each native library of the prefix (soname -> realpath) to the conda package owning
    the file; returns the environment with ``libraries`` filled and the sonames left unowned."""
    real_prefix = os.path.realpath(scan.prefix)
    by_package: dict[str, set[str]] = {}
    unowned: dict[str, str] = {}
    for soname, path in libraries.items():
        rel = _prefix_relative(path, scan.prefix, real_prefix)
        owner = scan.owners.get(rel) if rel else None
        if owner is None and rel is not None:
            # the soname link (lib/libz.so.1) may be the owned file, not its target
            owner = scan.owners.get(str(Path(rel).parent / soname))
        if owner is None:
            unowned[soname] = path
            continue
        by_package.setdefault(owner, set()).add(soname)

    env = scan.environment
    packages = tuple(
        replace(p, libraries=tuple(sorted(by_package[p.name]))) if p.name in by_package else p
        for p in env.packages
    )
    return replace(env, packages=packages), unowned
