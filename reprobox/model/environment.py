"""The environment records: interpreter, packages, system packages, OS, hardware, conda.

Each is a frozen dataclass read and written by the one codec (:mod:`reprobox.model.codec`); the
field metadata says what the JSON form leaves out. ``environment.json`` carries its schema tag and
its digest: a hash over :meth:`Environment.identity` (what defines the environment), checked when
it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import RecordRefused
from .codec import (
    Json,
    Record,
    Schema,
    canonical_json,
    meta,
    omit_empty,
    sha256_hex,
    spec,
)

ENVIRONMENT_SCHEMA = "reprobox.environment"


@dataclass(frozen=True)
class PackageSource(Record):
    """Where an installed distribution came from (PEP 610 direct_url.json, or an index).

    kind: ``index`` (no direct_url.json), ``vcs`` (url + commit), ``directory`` (local folder,
    ``editable`` or not; ``path`` relative to the repo root when inside it, with ``in_repo``),
    ``archive`` (url + ``hash`` such as ``sha256=...``).
    """

    _where = "source"

    kind: str = field(
        metadata=meta(choices=("index", "vcs", "directory", "archive"), what="source kind")
    )
    url: Optional[str] = None
    vcs: Optional[str] = None
    commit: Optional[str] = None
    requested_revision: Optional[str] = None
    subdirectory: Optional[str] = None
    path: Optional[str] = None
    editable: bool = spec(False, omit=lambda src, _v: src.kind != "directory")
    in_repo: bool = spec(False, omit=lambda src, _v: src.kind != "directory")
    hash: Optional[str] = None

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
class Package(Record):
    """One installed distribution, as found in the target interpreter's site-packages."""

    _where = "package"
    _label_key = "name"

    name: str  # PEP 503 normalized
    version: str
    source: PackageSource = spec(default_factory=lambda: PackageSource("index"), required=True)
    installer: Optional[str] = None
    requested: bool = False
    wheel_tags: tuple[str, ...] = ()
    #: the name as the distribution spells it (written only when it differs)
    display_name: Optional[str] = spec(None, omit=lambda pkg, v: v is None or v == pkg.name)


@dataclass(frozen=True)
class SystemPackage(Record):
    """An OS package that owns native libraries the Python packages load."""

    _where = "system package"

    name: str
    version: str
    manager: str = "dpkg"  # dpkg | rpm | apk
    arch: Optional[str] = None
    libraries: tuple[str, ...] = ()  # sonames needed from it


@dataclass(frozen=True)
class Interpreter(Record):
    _where = "interpreter"

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
class OSInfo(Record):
    _where = "os"

    id: Optional[str] = None  # "debian"
    version_id: Optional[str] = None  # "12"
    codename: Optional[str] = None  # "bookworm"
    pretty_name: Optional[str] = None
    id_like: tuple[str, ...] = ()
    kernel: Optional[str] = None
    glibc: Optional[str] = None
    arch: Optional[str] = None  # "x86_64"
    system: str = "Linux"

    @property
    def debian_family(self) -> bool:
        return self.id in ("debian", "ubuntu") or "debian" in self.id_like


@dataclass(frozen=True)
class GPU(Record):
    _where = "gpu"

    name: str
    memory_mib: Optional[int] = None
    driver: Optional[str] = None
    cuda_driver: Optional[str] = None  # highest CUDA the driver supports, e.g. "12.4"
    compute_capability: Optional[str] = None  # "9.0"


@dataclass(frozen=True)
class Hardware(Record):
    _where = "hardware"

    cpu_model: Optional[str] = None
    cpu_vendor: Optional[str] = None
    cpu_cores: Optional[int] = None  # logical CPUs
    cpu_flags: tuple[str, ...] = ()  # only the ISA flags that change numerics
    memory_bytes: Optional[int] = None
    gpus: tuple[GPU, ...] = ()
    cuda_runtime: Optional[str] = None  # from installed packages (torch.version, nvidia-* wheels)
    cudnn: Optional[str] = None
    cuda_source: Optional[str] = None  # which package told us


@dataclass(frozen=True)
class CondaPackage(Record):
    """One package of a conda-family environment, as its ``conda-meta/<dist>.json`` records it.

    ``channel`` is the channel's base URL (no subdir, no credentials, no ``/t/<token>``);
    ``url`` the archive's URL, likewise cleaned (None for a package built locally). The files
    the package owns are summarised by their count and the sha256 of their sorted list;
    ``libraries`` are the sonames from it that the environment's code loads.
    """

    _where = "conda package"
    _label_key = "name"

    name: str
    version: str
    build: str
    build_number: int = spec(0, convert=int)
    channel: Optional[str] = None
    subdir: Optional[str] = None
    url: Optional[str] = None
    md5: Optional[str] = None
    sha256: Optional[str] = None
    depends: tuple[str, ...] = ()
    requested_spec: Optional[str] = None
    noarch: Optional[str] = None
    files: int = spec(0, convert=int)
    files_sha256: Optional[str] = None
    libraries: tuple[str, ...] = ()

    @property
    def file_name(self) -> Optional[str]:
        """The archive's file name (``numpy-1.26.4-py311h64a7726_0.conda``)."""
        if self.url:
            return self.url.rstrip("/").rsplit("/", 1)[-1]
        return None

    def identity(self) -> Json:
        return {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "channel": self.channel,
            "subdir": self.subdir,
            "md5": self.md5,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class CondaEnvironment(Record):
    """The conda part of an environment: its packages, channels (in priority order, cleaned),
    the platform subdir, the tool that made it and the specs the user asked for."""

    _where = "conda"

    packages: tuple[CondaPackage, ...] = spec((), required=True)
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

    def identity(self) -> Json:
        return {"platform": self.platform, "packages": [p.identity() for p in self.packages]}


@dataclass(frozen=True)
class InstalledChange(Record):
    """A file of an installed distribution that differs from what its RECORD says.

    ``change``: ``modified`` (other size or content), ``missing`` (listed but gone) or ``added``
    (in the distribution's package folder, listed by no RECORD). ``path`` is relative to the
    site-packages folder. ``replay`` names the sealed file of the experiment holding the content
    (small text only) that the rebuild writes back after install; None: reported, not replayed.
    """

    _where = "installed change"

    package: str  # normalized name
    path: str
    change: str = field(metadata=meta(choices=("modified", "missing", "added"), what="change"))
    size: Optional[int] = None
    sha256: Optional[str] = None
    replay: Optional[str] = None

    def identity(self) -> Json:
        return {
            "package": self.package,
            "path": self.path,
            "change": self.change,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class AptSource(Record):
    """One apt source of the capture host (``deb URI SUITE COMPONENT...``), credentials removed.

    ``signed_by`` is the key file's name only (never a key); ``snapshot`` the archive time of a
    snapshot.debian.org-style URI (``20250520T000000Z``), which pins the archive's state.
    """

    _where = "apt source"

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ()
    signed_by: Optional[str] = None
    snapshot: Optional[str] = None


@dataclass(frozen=True)
class Environment(Record):
    """Everything that defines (and describes) the software environment of a run."""

    _schema = Schema(ENVIRONMENT_SCHEMA)
    _where = "environment.json"
    _computed = (("digest", lambda env: env.digest),)

    interpreter: Interpreter
    packages: tuple[Package, ...] = spec((), required=True)
    system_packages: tuple[SystemPackage, ...] = spec((), label="system package")
    os: OSInfo = field(default_factory=OSInfo)
    hardware: Hardware = field(default_factory=Hardware)
    #: Native libraries needed by packages that no OS package owns (path or soname), informational.
    unowned_libraries: tuple[str, ...] = spec((), sort=True)
    #: Needed sonames that could not be resolved at all on the capture host.
    missing_libraries: tuple[str, ...] = spec((), sort=True)
    #: The conda packages of a conda-family environment (None for a venv or system Python).
    conda: Optional[CondaEnvironment] = None
    #: Installed files that differ from their distribution's RECORD (changed after install).
    installed_changes: tuple[InstalledChange, ...] = spec(
        (), omit=omit_empty, label="installed change"
    )
    #: The capture host's apt sources: where its system packages came from (the build installs
    #: from the same archive state). Descriptive: not part of the digest.
    apt_sources: tuple[AptSource, ...] = spec((), omit=omit_empty, label="apt source")

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))
        object.__setattr__(
            self,
            "installed_changes",
            tuple(sorted(self.installed_changes, key=lambda c: (c.package, c.path, c.change))),
        )
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
            **(
                {"installed_changes": [c.identity() for c in self.installed_changes]}
                if self.installed_changes
                else {}
            ),
        }

    @property
    def digest(self) -> str:
        return "sha256:" + sha256_hex(canonical_json(self.identity()))

    def package(self, name: str) -> Optional[Package]:
        for p in self.packages:
            if p.name == name:
                return p
        return None

    def _check_decoded(self, data: Mapping[str, Any], where: str) -> None:
        recorded = data.get("digest")
        if recorded is not None and recorded != self.digest:
            raise RecordRefused(
                f"{where}: its digest {recorded} does not match its content ({self.digest}); "
                "the file was modified after capture",
                "restore it from git (`git checkout -- .reprobox/`) or re-capture the experiment",
            )
