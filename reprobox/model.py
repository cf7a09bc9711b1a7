"""The data reprobox records, as frozen dataclasses with their on-disk (dict) form.

Raw dicts live at the edges (JSON files, the probe's output); everything inside the tool passes
these immutable objects. Each top-level document carries a schema name and version; reading a
newer or unknown one is refused with a message saying what can read it.

The environment digest and the experiment id are hashes over a *canonical* form (sorted keys, no
whitespace, UTF-8). Changing what goes into them is a breaking change: tests pin known values.
"""

from __future__ import annotations

import hashlib
import json
import re
from itertools import accumulate
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from .errors import RecordRefused, SchemaError

ENVIRONMENT_SCHEMA = "reprobox.environment"
EXPERIMENT_SCHEMA = "reprobox.experiment"
RUN_SCHEMA = "reprobox.run"
SCHEMA_VERSION = 1
#: experiment.json 2: the id seals the whole record (every field but the id, and through the
#: ``files`` manifest every other file of the folder); the image tag left for local state.
EXPERIMENT_VERSION = 2

Json = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """The byte form hashed for digests and ids: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def pretty_json(obj: Any) -> str:
    """The form written to disk: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Deepest nesting of arrays/objects reprobox parses from a file (its own records reach about 8).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``text`` nests arrays/objects deeper than ``limit``: checked before parsing, in
    one linear pass (no recursion), so a crafted file never reaches a RecursionError."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > limit


def check_schema(data: Mapping[str, Any], name: str, where: str, version: int = SCHEMA_VERSION,
                 oldest: int = 1, older_hint: Optional[str] = None) -> None:
    """Refuse a document whose schema is not ``name/<a version from oldest to version>``."""
    schema = data.get("schema")
    if not isinstance(schema, str) or "/" not in schema:
        raise SchemaError(
            f"{where} has no schema field (expected {name}/{version})",
            "the file is not a reprobox record or was edited by hand; re-capture the experiment",
        )
    got_name, _, got_version = schema.rpartition("/")
    if got_name != name:
        raise SchemaError(f"{where} is a {got_name!r} document, expected {name!r}")
    try:
        got = int(got_version)
    except ValueError:
        raise SchemaError(f"{where} has an unreadable schema version {got_version!r}") from None
    if got > version:
        raise SchemaError(
            f"{where} uses schema {schema}, newer than this reprobox reads ({name}/{version})",
            f"upgrade reprobox to a release that reads {name}/{got}: `pip install -U reprobox`",
        )
    if 1 <= got < oldest:
        raise SchemaError(
            f"{where} uses schema {schema}, an older record this reprobox no longer acts on "
            f"(it reads {name}/{version})",
            older_hint or "re-capture the experiment with this reprobox",
        )
    if got < 1:
        raise SchemaError(f"{where} has an unknown schema version {got}")


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordRefused(f"{where}: expected an object, got {type(data).__name__}")
    return data


def _req(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    data = _mapping(data, where)
    if key not in data:
        raise RecordRefused(f"{where}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise RecordRefused(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = _mapping(data, where).get(key)
    if value is not None and not isinstance(value, kind):
        raise RecordRefused(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _strs(values: Any, where: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RecordRefused(f"{where}: expected a list of strings")
    return tuple(values)


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class PackageSource:
    """Where an installed distribution came from (PEP 610 direct_url.json, or an index).

    kind: ``index`` (no direct_url.json), ``vcs`` (url + commit), ``directory`` (local folder,
    ``editable`` or not; ``path`` relative to the repo root when inside it, with ``in_repo``),
    ``archive`` (url + ``hash`` such as ``sha256=...``).
    """

    kind: str
    url: Optional[str] = None
    vcs: Optional[str] = None
    commit: Optional[str] = None
    requested_revision: Optional[str] = None
    subdirectory: Optional[str] = None
    path: Optional[str] = None
    editable: bool = False
    in_repo: bool = False
    hash: Optional[str] = None

    def to_dict(self) -> Json:
        out: Json = {"kind": self.kind}
        for key in ("url", "vcs", "commit", "requested_revision", "subdirectory", "path", "hash"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.kind == "directory":
            out["editable"] = self.editable
            out["in_repo"] = self.in_repo
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "source") -> "PackageSource":
        kind = _req(data, "kind", str, where)
        if kind not in ("index", "vcs", "directory", "archive"):
            raise RecordRefused(f"{where}: unknown source kind {kind!r}")
        return cls(
            kind=kind,
            url=_opt(data, "url", str, where),
            vcs=_opt(data, "vcs", str, where),
            commit=_opt(data, "commit", str, where),
            requested_revision=_opt(data, "requested_revision", str, where),
            subdirectory=_opt(data, "subdirectory", str, where),
            path=_opt(data, "path", str, where),
            editable=bool(_opt(data, "editable", bool, where) or False),
            in_repo=bool(_opt(data, "in_repo", bool, where) or False),
            hash=_opt(data, "hash", str, where),
        )

    def identity(self) -> Json:
        """What of the source defines the environment (goes into the digest)."""
        if self.kind == "index":
            return {"kind": "index"}
        if self.kind == "vcs":
            return {"kind": "vcs", "url": self.url, "commit": self.commit, "sub": self.subdirectory}
        if self.kind == "directory":
            return {"kind": "directory", "path": self.path, "editable": self.editable}
        return {"kind": "archive", "url": self.url, "hash": self.hash}


@dataclass(frozen=True)
class Package:
    """One installed distribution, as found in the target interpreter's site-packages."""

    name: str  # PEP 503 normalized
    version: str
    source: PackageSource = field(default_factory=lambda: PackageSource("index"))
    installer: Optional[str] = None
    requested: bool = False
    wheel_tags: tuple[str, ...] = ()
    display_name: Optional[str] = None  # the name as the distribution spells it

    def to_dict(self) -> Json:
        out: Json = {
            "name": self.name,
            "version": self.version,
            "source": self.source.to_dict(),
            "requested": self.requested,
            "wheel_tags": list(self.wheel_tags),
        }
        if self.installer is not None:
            out["installer"] = self.installer
        if self.display_name is not None and self.display_name != self.name:
            out["display_name"] = self.display_name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "package") -> "Package":
        name = _req(data, "name", str, where)
        where = f"{where} {name!r}"
        return cls(
            name=name,
            version=_req(data, "version", str, where),
            source=PackageSource.from_dict(_req(data, "source", dict, where), where + " source"),
            installer=_opt(data, "installer", str, where),
            requested=bool(_opt(data, "requested", bool, where) or False),
            wheel_tags=_strs(data.get("wheel_tags"), where + " wheel_tags"),
            display_name=_opt(data, "display_name", str, where),
        )


@dataclass(frozen=True)
class SystemPackage:
    """An OS package that owns native libraries the Python packages load."""

    name: str
    version: str
    manager: str = "dpkg"  # dpkg | rpm | apk
    arch: Optional[str] = None
    libraries: tuple[str, ...] = ()  # sonames needed from it

    def to_dict(self) -> Json:
        out: Json = {
            "name": self.name,
            "version": self.version,
            "manager": self.manager,
            "libraries": list(self.libraries),
        }
        if self.arch is not None:
            out["arch"] = self.arch
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "system package") -> "SystemPackage":
        return cls(
            name=_req(data, "name", str, where),
            version=_req(data, "version", str, where),
            manager=_opt(data, "manager", str, where) or "dpkg",
            arch=_opt(data, "arch", str, where),
            libraries=_strs(data.get("libraries"), where + " libraries"),
        )


@dataclass(frozen=True)
class Interpreter:
    implementation: str  # "cpython"
    version: str  # exact "3.11.7"
    abi: Optional[str] = None  # "cp311"
    soabi: Optional[str] = None  # "cpython-311-x86_64-linux-gnu"
    platform: Optional[str] = None  # sysconfig.get_platform(): "linux-x86_64"
    build: Optional[str] = None  # sys.version's build part
    compiler: Optional[str] = None
    kind: Optional[str] = None  # venv | conda | system | pyenv | uv | python-build-standalone
    gil_disabled: bool = False
    platform_tags: tuple[str, ...] = ()  # most specific compatible wheel tags first (a few)
    executable: Optional[str] = None  # informational only, never used to rebuild

    def to_dict(self) -> Json:
        out: Json = {
            "implementation": self.implementation,
            "version": self.version,
            "gil_disabled": self.gil_disabled,
            "platform_tags": list(self.platform_tags),
        }
        for key in ("abi", "soabi", "platform", "build", "compiler", "kind", "executable"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "interpreter") -> "Interpreter":
        return cls(
            implementation=_req(data, "implementation", str, where),
            version=_req(data, "version", str, where),
            abi=_opt(data, "abi", str, where),
            soabi=_opt(data, "soabi", str, where),
            platform=_opt(data, "platform", str, where),
            build=_opt(data, "build", str, where),
            compiler=_opt(data, "compiler", str, where),
            kind=_opt(data, "kind", str, where),
            gil_disabled=bool(_opt(data, "gil_disabled", bool, where) or False),
            platform_tags=_strs(data.get("platform_tags"), where + " platform_tags"),
            executable=_opt(data, "executable", str, where),
        )

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def identity(self) -> Json:
        return {
            "implementation": self.implementation,
            "version": self.version,
            "abi": self.abi,
            "soabi": self.soabi,
            "platform": self.platform,
            "gil_disabled": self.gil_disabled,
        }


@dataclass(frozen=True)
class OSInfo:
    id: Optional[str] = None  # "debian"
    version_id: Optional[str] = None  # "12"
    codename: Optional[str] = None  # "bookworm"
    pretty_name: Optional[str] = None
    id_like: tuple[str, ...] = ()
    kernel: Optional[str] = None
    glibc: Optional[str] = None
    arch: Optional[str] = None  # "x86_64"
    system: str = "Linux"

    def to_dict(self) -> Json:
        out: Json = {"system": self.system, "id_like": list(self.id_like)}
        for key in ("id", "version_id", "codename", "pretty_name", "kernel", "glibc", "arch"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "os") -> "OSInfo":
        return cls(
            id=_opt(data, "id", str, where),
            version_id=_opt(data, "version_id", str, where),
            codename=_opt(data, "codename", str, where),
            pretty_name=_opt(data, "pretty_name", str, where),
            id_like=_strs(data.get("id_like"), where + " id_like"),
            kernel=_opt(data, "kernel", str, where),
            glibc=_opt(data, "glibc", str, where),
            arch=_opt(data, "arch", str, where),
            system=_opt(data, "system", str, where) or "Linux",
        )

    @property
    def debian_family(self) -> bool:
        return self.id in ("debian", "ubuntu") or "debian" in self.id_like


@dataclass(frozen=True)
class GPU:
    name: str
    memory_mib: Optional[int] = None
    driver: Optional[str] = None
    cuda_driver: Optional[str] = None  # highest CUDA the driver supports, e.g. "12.4"
    compute_capability: Optional[str] = None  # "9.0"

    def to_dict(self) -> Json:
        out: Json = {"name": self.name}
        for key in ("memory_mib", "driver", "cuda_driver", "compute_capability"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "gpu") -> "GPU":
        return cls(
            name=_req(data, "name", str, where),
            memory_mib=_opt(data, "memory_mib", int, where),
            driver=_opt(data, "driver", str, where),
            cuda_driver=_opt(data, "cuda_driver", str, where),
            compute_capability=_opt(data, "compute_capability", str, where),
        )


@dataclass(frozen=True)
class Hardware:
    cpu_model: Optional[str] = None
    cpu_vendor: Optional[str] = None
    cpu_cores: Optional[int] = None  # logical CPUs
    cpu_flags: tuple[str, ...] = ()  # only the ISA flags that change numerics
    memory_bytes: Optional[int] = None
    gpus: tuple[GPU, ...] = ()
    cuda_runtime: Optional[str] = None  # from installed packages (torch.version, nvidia-* wheels)
    cudnn: Optional[str] = None
    cuda_source: Optional[str] = None  # which package told us

    def to_dict(self) -> Json:
        out: Json = {"cpu_flags": list(self.cpu_flags), "gpus": [g.to_dict() for g in self.gpus]}
        for key in ("cpu_model", "cpu_vendor", "cpu_cores", "memory_bytes", "cuda_runtime",
                    "cudnn", "cuda_source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "hardware") -> "Hardware":
        gpus = _opt(data, "gpus", list, where) or []
        return cls(
            cpu_model=_opt(data, "cpu_model", str, where),
            cpu_vendor=_opt(data, "cpu_vendor", str, where),
            cpu_cores=_opt(data, "cpu_cores", int, where),
            cpu_flags=_strs(data.get("cpu_flags"), where + " cpu_flags"),
            memory_bytes=_opt(data, "memory_bytes", int, where),
            gpus=tuple(GPU.from_dict(g, f"{where} gpu") for g in gpus),
            cuda_runtime=_opt(data, "cuda_runtime", str, where),
            cudnn=_opt(data, "cudnn", str, where),
            cuda_source=_opt(data, "cuda_source", str, where),
        )


@dataclass(frozen=True)
class CondaPackage:
    """One package of a conda-family environment, as its ``conda-meta/<dist>.json`` records it.

    ``channel`` is the channel's base URL (no subdir, no credentials, no ``/t/<token>``);
    ``url`` the archive's URL, likewise cleaned (None for a package built locally). The files
    the package owns are summarised by their count and the sha256 of their sorted list;
    ``libraries`` are the sonames from it that the environment's code loads.
    """

    name: str
    version: str
    build: str
    build_number: int = 0
    channel: Optional[str] = None
    subdir: Optional[str] = None
    url: Optional[str] = None
    md5: Optional[str] = None
    sha256: Optional[str] = None
    depends: tuple[str, ...] = ()
    requested_spec: Optional[str] = None
    noarch: Optional[str] = None
    files: int = 0
    files_sha256: Optional[str] = None
    libraries: tuple[str, ...] = ()

    @property
    def file_name(self) -> Optional[str]:
        """The archive's file name (``numpy-1.26.4-py311h64a7726_0.conda``)."""
        if self.url:
            return self.url.rstrip("/").rsplit("/", 1)[-1]
        return None

    def to_dict(self) -> Json:
        out: Json = {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "depends": list(self.depends),
            "files": self.files,
            "libraries": list(self.libraries),
        }
        for key in ("channel", "subdir", "url", "md5", "sha256", "requested_spec", "noarch",
                    "files_sha256"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "conda package") -> "CondaPackage":
        name = _req(data, "name", str, where)
        where = f"{where} {name!r}"
        number = _opt(data, "build_number", int, where)
        files = _opt(data, "files", int, where)
        return cls(
            name=name,
            version=_req(data, "version", str, where),
            build=_req(data, "build", str, where),
            build_number=int(number or 0),
            channel=_opt(data, "channel", str, where),
            subdir=_opt(data, "subdir", str, where),
            url=_opt(data, "url", str, where),
            md5=_opt(data, "md5", str, where),
            sha256=_opt(data, "sha256", str, where),
            depends=_strs(data.get("depends"), where + " depends"),
            requested_spec=_opt(data, "requested_spec", str, where),
            noarch=_opt(data, "noarch", str, where),
            files=int(files or 0),
            files_sha256=_opt(data, "files_sha256", str, where),
            libraries=_strs(data.get("libraries"), where + " libraries"),
        )

    def identity(self) -> Json:
        return {"name": self.name, "version": self.version, "build": self.build,
                "build_number": self.build_number, "channel": self.channel,
                "subdir": self.subdir, "md5": self.md5, "sha256": self.sha256}


@dataclass(frozen=True)
class CondaEnvironment:
    """The conda part of an environment: its packages, channels (in priority order, cleaned),
    the platform subdir, the tool that made it and the specs the user asked for."""

    packages: tuple[CondaPackage, ...] = ()
    channels: tuple[str, ...] = ()
    platform: Optional[str] = None  # "linux-64"
    manager: Optional[str] = None  # conda | mamba | micromamba | pixi | rattler
    requested_specs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))

    def package(self, name: str) -> Optional[CondaPackage]:
        for p in self.packages:
            if p.name == name:
                return p
        return None

    def to_dict(self) -> Json:
        out: Json = {
            "packages": [p.to_dict() for p in self.packages],
            "channels": list(self.channels),
            "requested_specs": list(self.requested_specs),
        }
        if self.platform is not None:
            out["platform"] = self.platform
        if self.manager is not None:
            out["manager"] = self.manager
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "conda") -> "CondaEnvironment":
        return cls(
            packages=tuple(CondaPackage.from_dict(p, f"{where} package")
                           for p in _req(data, "packages", list, where)),
            channels=_strs(data.get("channels"), where + " channels"),
            platform=_opt(data, "platform", str, where),
            manager=_opt(data, "manager", str, where),
            requested_specs=_strs(data.get("requested_specs"), where + " requested_specs"),
        )

    def identity(self) -> Json:
        return {"platform": self.platform,
                "packages": [p.identity() for p in self.packages]}


@dataclass(frozen=True)
class InstalledChange:
    """A file of an installed distribution that differs from what its RECORD says.

    ``change``: ``modified`` (other size or content), ``missing`` (listed but gone) or ``added``
    (in the distribution's package folder, listed by no RECORD). ``path`` is relative to the
    site-packages folder. ``replay`` names the sealed file of the experiment holding the content
    (small text only) that the rebuild writes back after install; None: reported, not replayed.
    """

    package: str  # normalized name
    path: str
    change: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    replay: Optional[str] = None

    def to_dict(self) -> Json:
        out: Json = {"package": self.package, "path": self.path, "change": self.change}
        for key in ("size", "sha256", "replay"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  where: str = "installed change") -> "InstalledChange":
        change = _req(data, "change", str, where)
        if change not in ("modified", "missing", "added"):
            raise RecordRefused(f"{where}: unknown change {change!r}")
        size = _opt(data, "size", int, where)
        return cls(
            package=_req(data, "package", str, where),
            path=_req(data, "path", str, where),
            change=change,
            size=size,
            sha256=_opt(data, "sha256", str, where),
            replay=_opt(data, "replay", str, where),
        )

    def identity(self) -> Json:
        return {"package": self.package, "path": self.path, "change": self.change,
                "sha256": self.sha256}


@dataclass(frozen=True)
class AptSource:
    """One apt source of the capture host (``deb URI SUITE COMPONENT...``), credentials removed.

    ``signed_by`` is the key file's name only (never a key); ``snapshot`` the archive time of a
    snapshot.debian.org-style URI (``20250520T000000Z``), which pins the archive's state.
    """

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ()
    signed_by: Optional[str] = None
    snapshot: Optional[str] = None

    def to_dict(self) -> Json:
        out: Json = {"uri": self.uri, "suites": list(self.suites),
                     "components": list(self.components)}
        if self.signed_by is not None:
            out["signed_by"] = self.signed_by
        if self.snapshot is not None:
            out["snapshot"] = self.snapshot
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "apt source") -> "AptSource":
        return cls(
            uri=_req(data, "uri", str, where),
            suites=_strs(data.get("suites"), where + " suites"),
            components=_strs(data.get("components"), where + " components"),
            signed_by=_opt(data, "signed_by", str, where),
            snapshot=_opt(data, "snapshot", str, where),
        )


@dataclass(frozen=True)
class Environment:
    """Everything that defines (and describes) the software environment of a run."""

    interpreter: Interpreter
    packages: tuple[Package, ...] = ()
    system_packages: tuple[SystemPackage, ...] = ()
    os: OSInfo = field(default_factory=OSInfo)
    hardware: Hardware = field(default_factory=Hardware)
    #: Native libraries needed by packages that no OS package owns (path or soname), informational.
    unowned_libraries: tuple[str, ...] = ()
    #: Needed sonames that could not be resolved at all on the capture host.
    missing_libraries: tuple[str, ...] = ()
    #: The conda packages of a conda-family environment (None for a venv or system Python).
    conda: Optional[CondaEnvironment] = None
    #: Installed files that differ from their distribution's RECORD (changed after install).
    installed_changes: tuple[InstalledChange, ...] = ()
    #: The capture host's apt sources: where its system packages came from (the build installs
    #: from the same archive state). Descriptive: not part of the digest.
    apt_sources: tuple[AptSource, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "packages", tuple(sorted(self.packages, key=lambda p: p.name))
        )
        object.__setattr__(self, "installed_changes", tuple(sorted(
            self.installed_changes, key=lambda c: (c.package, c.path, c.change))))
        object.__setattr__(
            self, "system_packages", tuple(sorted(self.system_packages, key=lambda p: p.name))
        )

    def identity(self) -> Json:
        """What defines the environment: interpreter + packages + system packages, no hardware."""
        return {
            "interpreter": self.interpreter.identity(),
            "packages": [
                {"name": p.name, "version": p.version, "source": p.source.identity()}
                for p in self.packages
            ],
            "system_packages": [
                {"name": s.name, "version": s.version, "manager": s.manager}
                for s in self.system_packages
            ],
            # only when present: the digest of an environment without conda is unchanged
            **({"conda": self.conda.identity()} if self.conda is not None else {}),
            # only when present, like conda: older digests stay valid
            **({"installed_changes": [c.identity() for c in self.installed_changes]}
               if self.installed_changes else {}),
        }

    @property
    def digest(self) -> str:
        return "sha256:" + sha256_hex(canonical_json(self.identity()))

    def package(self, name: str) -> Optional[Package]:
        for p in self.packages:
            if p.name == name:
                return p
        return None

    def to_dict(self) -> Json:
        return {
            "schema": f"{ENVIRONMENT_SCHEMA}/{SCHEMA_VERSION}",
            "digest": self.digest,
            "interpreter": self.interpreter.to_dict(),
            "packages": [p.to_dict() for p in self.packages],
            "system_packages": [s.to_dict() for s in self.system_packages],
            "os": self.os.to_dict(),
            "hardware": self.hardware.to_dict(),
            "unowned_libraries": sorted(self.unowned_libraries),
            "missing_libraries": sorted(self.missing_libraries),
            **({"conda": self.conda.to_dict()} if self.conda is not None else {}),
            **({"installed_changes": [c.to_dict() for c in self.installed_changes]}
               if self.installed_changes else {}),
            **({"apt_sources": [a.to_dict() for a in self.apt_sources]}
               if self.apt_sources else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "environment.json") -> "Environment":
        check_schema(data, ENVIRONMENT_SCHEMA, where)
        env = cls(
            interpreter=Interpreter.from_dict(_req(data, "interpreter", dict, where)),
            packages=tuple(
                Package.from_dict(p, f"{where} package")
                for p in _req(data, "packages", list, where)
            ),
            system_packages=tuple(
                SystemPackage.from_dict(s, f"{where} system package")
                for s in (_opt(data, "system_packages", list, where) or [])
            ),
            os=OSInfo.from_dict(_opt(data, "os", dict, where) or {}),
            hardware=Hardware.from_dict(_opt(data, "hardware", dict, where) or {}),
            unowned_libraries=_strs(data.get("unowned_libraries"), where + " unowned_libraries"),
            missing_libraries=_strs(data.get("missing_libraries"), where + " missing_libraries"),
            conda=(CondaEnvironment.from_dict(data["conda"], where + " conda")
                   if data.get("conda") is not None else None),
            installed_changes=tuple(
                InstalledChange.from_dict(c, f"{where} installed change")
                for c in (_opt(data, "installed_changes", list, where) or [])
            ),
            apt_sources=tuple(
                AptSource.from_dict(a, f"{where} apt source")
                for a in (_opt(data, "apt_sources", list, where) or [])
            ),
        )
        recorded = data.get("digest")
        if recorded is not None and recorded != env.digest:
            raise RecordRefused(
                f"{where}: its digest {recorded} does not match its content ({env.digest}); "
                "the file was modified after capture",
                "restore it from git (`git checkout -- .reprobox/`) or re-capture the experiment",
            )
        return env


# --------------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class GitInfo:
    commit: str
    branch: Optional[str] = None
    remote: Optional[str] = None  # credentials stripped
    dirty: bool = False
    patch: Optional[str] = None  # file name in the experiment folder ("patch.diff")
    patch_sha256: Optional[str] = None
    untracked: tuple[str, ...] = ()

    def to_dict(self) -> Json:
        return {
            "commit": self.commit,
            "branch": self.branch,
            "remote": self.remote,
            "dirty": self.dirty,
            "patch": self.patch,
            "patch_sha256": self.patch_sha256,
            "untracked": list(self.untracked),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "git") -> "GitInfo":
        return cls(
            commit=_req(data, "commit", str, where),
            branch=_opt(data, "branch", str, where),
            remote=_opt(data, "remote", str, where),
            dirty=bool(_opt(data, "dirty", bool, where) or False),
            patch=_opt(data, "patch", str, where),
            patch_sha256=_opt(data, "patch_sha256", str, where),
            untracked=_strs(data.get("untracked"), where + " untracked"),
        )


@dataclass(frozen=True)
class DvcOutput:
    path: str  # relative to the repo root
    hash: str  # DVC's md5 (or other) of the output
    hash_name: str = "md5"
    stage: Optional[str] = None

    def to_dict(self) -> Json:
        return {"path": self.path, "hash": self.hash, "hash_name": self.hash_name,
                "stage": self.stage}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dvc output") -> "DvcOutput":
        return cls(
            path=_req(data, "path", str, where),
            hash=_req(data, "hash", str, where),
            hash_name=_opt(data, "hash_name", str, where) or "md5",
            stage=_opt(data, "stage", str, where),
        )


@dataclass(frozen=True)
class DvcInfo:
    lock_digest: Optional[str] = None  # sha256 of dvc.lock
    outputs: tuple[DvcOutput, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    remote: Optional[str] = None  # default remote name (never its credentials)
    metrics_files: tuple[str, ...] = ()

    def to_dict(self) -> Json:
        return {
            "lock_digest": self.lock_digest,
            "outputs": [o.to_dict() for o in self.outputs],
            "params": dict(self.params),
            "stages": list(self.stages),
            "remote": self.remote,
            "metrics_files": list(self.metrics_files),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dvc") -> "DvcInfo":
        return cls(
            lock_digest=_opt(data, "lock_digest", str, where),
            outputs=tuple(DvcOutput.from_dict(o)
                          for o in (_opt(data, "outputs", list, where) or [])),
            params=_opt(data, "params", dict, where) or {},
            stages=_strs(data.get("stages"), where + " stages"),
            remote=_opt(data, "remote", str, where),
            metrics_files=_strs(data.get("metrics_files"), where + " metrics_files"),
        )


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative to the repo root
    sha256: str
    size: int

    def to_dict(self) -> Json:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "output") -> "OutputFile":
        return cls(
            path=_req(data, "path", str, where),
            sha256=_req(data, "sha256", str, where),
            size=_req(data, "size", int, where),
        )


#: Name of the pseudo metrics file holding values passed to ``reprobox.capture(metrics=...)``.
INLINE_METRICS = "<inline>"

#: The experiment's own file in its folder; every other file is listed in its ``files`` manifest.
EXPERIMENT_FILE = "experiment.json"

_OLD_EXPERIMENT_HINT = (
    "this record was written by an older reprobox whose id did not seal every file of the "
    "experiment; re-capture it with this release (`reprobox capture ...` at the recorded commit) "
    "and commit the new record"
)


def seal_id(document: Mapping[str, Any]) -> str:
    """The experiment id of an experiment.json document: the first 12 hex digits of the sha256 of
    its canonical form (sorted keys, compact, UTF-8) without the ``id`` field itself.

    Everything else seals: name, command, git, metrics, ``created``, ``tool_version`` and the
    ``files`` manifest (sha256 of every other file of the folder, environment.json included), so
    the id changes when any committed byte of the capture does. Pinned by a test.
    """
    body = {k: v for k, v in document.items() if k != "id"}
    return sha256_hex(canonical_json(body))[:ID_LENGTH]


def file_digest(data: bytes) -> str:
    """How the manifest names a file's content: ``sha256:<hex>``."""
    return "sha256:" + sha256_hex(data)


@dataclass(frozen=True)
class LoadedLibrary:
    """A shared object a recorded run had mapped, and who provides it."""

    name: str  # file name (``libmagic.so.1.0.0``), never a host path
    #: ``package:<name>`` (inside a wheel), ``system:<name>`` (an OS package), ``python`` (the
    #: interpreter's own), ``driver`` (the GPU driver's, from the host) or ``unowned``.
    owner: str

    def to_dict(self) -> Json:
        return {"name": self.name, "owner": self.owner}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "library") -> "LoadedLibrary":
        return cls(name=_req(data, "name", str, where), owner=_req(data, "owner", str, where))


@dataclass(frozen=True)
class RunUsage:
    """What the command did and used: ``reprobox record`` measures it; ``capture --exit-status``
    states only the exit status (``source`` = ``declared``)."""

    exit_status: Optional[int]
    source: str = "recorded"  # recorded | declared
    wall_seconds: Optional[float] = None
    peak_memory_kib: Optional[int] = None
    processes: int = 0  # Python processes that reported
    #: distribution (normalized name, or ``<repo>`` / ``<unknown>``) -> top-level modules imported
    modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    libraries: tuple[LoadedLibrary, ...] = ()
    #: names handed to ctypes (``CDLL``/``find_library``) that no mapped object answers
    dlopen_failed: tuple[str, ...] = ()

    def to_dict(self) -> Json:
        return {
            "exit_status": self.exit_status,
            "source": self.source,
            "wall_seconds": self.wall_seconds,
            "peak_memory_kib": self.peak_memory_kib,
            "processes": self.processes,
            "modules": {k: list(v) for k, v in sorted(self.modules.items())},
            "libraries": [lib.to_dict() for lib in self.libraries],
            "dlopen_failed": list(self.dlopen_failed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run") -> "RunUsage":
        status = _opt(data, "exit_status", int, where)
        if isinstance(status, bool):
            raise RecordRefused(f"{where}: field 'exit_status' has the wrong type (bool)")
        modules = _opt(data, "modules", dict, where) or {}
        return cls(
            exit_status=status,
            source=_opt(data, "source", str, where) or "recorded",
            wall_seconds=_opt(data, "wall_seconds", (int, float), where),
            peak_memory_kib=_opt(data, "peak_memory_kib", int, where),
            processes=_opt(data, "processes", int, where) or 0,
            modules={str(k): _strs(v, f"{where} modules[{k!r}]") for k, v in modules.items()},
            libraries=tuple(LoadedLibrary.from_dict(x, f"{where} library")
                            for x in (_opt(data, "libraries", list, where) or [])),
            dlopen_failed=_strs(data.get("dlopen_failed"), where + " dlopen_failed"),
        )


@dataclass(frozen=True)
class Experiment:
    name: str
    command: Optional[str]  # shell command line, or None for "the DVC pipeline"
    cwd: str  # relative to the repo root, "." for the root
    git: GitInfo
    environment_digest: str
    created: str  # UTC ISO-8601 "2026-11-27T10:23:44Z"
    tool_version: str
    command_kind: str = "shell"  # shell | dvc | none
    dvc: Optional[DvcInfo] = None
    #: metrics file (repo-relative path, or INLINE_METRICS) -> flattened key -> value
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    outputs: tuple[OutputFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: The manifest: every other file of the folder -> ``sha256:<hex>`` (the store fills it).
    files: Mapping[str, str] = field(default_factory=dict)
    #: The id of the record this one replaced when files were added after capture (a lock).
    supersedes: Optional[str] = None
    #: What the command did and used (``reprobox record``, ``capture --exit-status``); the field
    #: is written only when set, so the ids of records without it are unchanged.
    run: Optional[RunUsage] = None
    id: str = ""

    def body(self) -> Json:
        """What the run was: the fields two captures of the same run share."""
        return {
            "name": self.name,
            "command": self.command,
            "command_kind": self.command_kind,
            "cwd": self.cwd,
            "git": self.git.to_dict(),
            "dvc": self.dvc.to_dict() if self.dvc else None,
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "outputs": [o.to_dict() for o in self.outputs],
            "env": dict(self.env),
            "environment_digest": self.environment_digest,
            **({"run": self.run.to_dict()} if self.run is not None else {}),
        }

    def sealed(self) -> Json:
        """The whole document but its id: what the id is the hash of."""
        out = self.body()
        out.update(
            {
                "schema": f"{EXPERIMENT_SCHEMA}/{EXPERIMENT_VERSION}",
                "created": self.created,
                "tool_version": self.tool_version,
                "files": dict(sorted(self.files.items())),
                "supersedes": self.supersedes,
            }
        )
        return out

    def compute_id(self) -> str:
        return seal_id(self.sealed())

    def with_id(self) -> "Experiment":
        return replace(self, id=self.compute_id())

    def to_dict(self) -> Json:
        out = self.sealed()
        out["id"] = self.id or self.compute_id()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "experiment.json") -> "Experiment":
        check_schema(data, EXPERIMENT_SCHEMA, where, version=EXPERIMENT_VERSION,
                     oldest=EXPERIMENT_VERSION, older_hint=_OLD_EXPERIMENT_HINT)
        metrics = _opt(data, "metrics", dict, where) or {}
        for mfile, values in metrics.items():
            if not isinstance(values, dict):
                raise RecordRefused(f"{where}: metrics for {mfile!r} are not a mapping")
        env = _opt(data, "env", dict, where) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise RecordRefused(f"{where}: env must map names to strings")
        files = _req(data, "files", dict, where)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise RecordRefused(f"{where}: files must map file names to sha256 digests")
        dvc = _opt(data, "dvc", dict, where)
        run = _opt(data, "run", dict, where)
        return cls(
            id=_req(data, "id", str, where),
            name=_req(data, "name", str, where),
            command=_opt(data, "command", str, where),
            command_kind=_opt(data, "command_kind", str, where) or "shell",
            cwd=_opt(data, "cwd", str, where) or ".",
            git=GitInfo.from_dict(_req(data, "git", dict, where)),
            dvc=DvcInfo.from_dict(dvc) if dvc else None,
            metrics=metrics,
            outputs=tuple(OutputFile.from_dict(o)
                          for o in (_opt(data, "outputs", list, where) or [])),
            env=env,
            environment_digest=_req(data, "environment_digest", str, where),
            created=_req(data, "created", str, where),
            tool_version=_req(data, "tool_version", str, where),
            files=files,
            supersedes=_opt(data, "supersedes", str, where),
            run=RunUsage.from_dict(run, f"{where} run") if run is not None else None,
        )

    @property
    def content_matches_id(self) -> bool:
        return self.id == self.compute_id()


ID_LENGTH = 12


def flatten_metrics(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested metrics the way DVC shows them: ``{"a": {"b": 1}} -> {"a.b": 1}``.

    Only numbers, booleans and strings are kept as leaves; lists are indexed (``a.0``).
    """
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten_metrics(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.update(flatten_metrics(value, f"{prefix}.{i}" if prefix else str(i)))
    elif isinstance(data, (int, float, str, bool)) or data is None:
        out[prefix or "value"] = data
    else:
        out[prefix or "value"] = str(data)
    return out
