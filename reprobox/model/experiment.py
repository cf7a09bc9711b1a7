"""The experiment records: what ran (command, git, DVC, metrics, outputs, env) and how it is
sealed.

``experiment.json`` carries its schema tag and its id: the hash of the whole document but the id
(:func:`seal_id`), which through the ``files`` manifest seals every other file of the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from .codec import (
    Json,
    Record,
    Schema,
    canonical_json,
    encode,
    meta,
    omit_none,
    sha256_hex,
    spec,
)

EXPERIMENT_SCHEMA = "reprobox.experiment"
RUN_SCHEMA = "reprobox.run"
#: experiment.json 2: the id seals the whole record (every field but the id, and through the
#: ``files`` manifest every other file of the folder); the image tag left for local state.
EXPERIMENT_VERSION = 2
ID_LENGTH = 12
#: Every key of experiment.json that says what the run was (:meth:`Experiment.body`): the rest
#: (when and by which release it was made, the manifest, the record it replaced) is the seal's.
_BODY = frozenset(
    {
        "name",
        "command",
        "command_kind",
        "cwd",
        "git",
        "dvc",
        "metrics",
        "outputs",
        "env",
        "environment_digest",
        "run",
    }
)


@dataclass(frozen=True)
class GitInfo(Record):
    _omit_none = False
    _where = "git"

    commit: str
    branch: Optional[str] = None
    remote: Optional[str] = None  # credentials stripped
    dirty: bool = False
    patch: Optional[str] = None  # file name in the experiment folder ("patch.diff")
    patch_sha256: Optional[str] = None
    untracked: tuple[str, ...] = ()


@dataclass(frozen=True)
class DvcOutput(Record):
    _omit_none = False
    _where = "dvc output"

    path: str  # relative to the repo root
    hash: str  # DVC's md5 (or other) of the output
    hash_name: str = "md5"
    stage: Optional[str] = None


@dataclass(frozen=True)
class DvcInfo(Record):
    _omit_none = False
    _where = "dvc"

    lock_digest: Optional[str] = None  # sha256 of dvc.lock
    outputs: tuple[DvcOutput, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    remote: Optional[str] = None  # default remote name (never its credentials)
    metrics_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputFile(Record):
    _where = "output"

    path: str  # relative to the repo root
    sha256: str
    size: int


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
class LoadedLibrary(Record):
    """A shared object a recorded run had mapped, and who provides it."""

    _where = "library"

    name: str  # file name (``libmagic.so.1.0.0``), never a host path
    #: ``package:<name>`` (inside a wheel), ``system:<name>`` (an OS package), ``python`` (the
    #: interpreter's own), ``driver`` (the GPU driver's, from the host) or ``unowned``.
    owner: str


@dataclass(frozen=True)
class RunUsage(Record):
    """What the command did and used: ``reprobox record`` measures it; ``capture --exit-status``
    states only the exit status (``source`` = ``declared``)."""

    _omit_none = False
    _where = "run"

    exit_status: Optional[int] = field(metadata=meta(no_bool=True))
    source: str = "recorded"  # recorded | declared
    wall_seconds: Optional[float] = None
    peak_memory_kib: Optional[int] = None
    processes: int = 0  # Python processes that reported
    #: distribution (normalized name, or ``<repo>`` / ``<unknown>``) -> top-level modules imported
    modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    libraries: tuple[LoadedLibrary, ...] = spec((), label="library")
    #: names handed to ctypes (``CDLL``/``find_library``) that no mapped object answers
    dlopen_failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment(Record):
    _schema = Schema(
        EXPERIMENT_SCHEMA,
        EXPERIMENT_VERSION,
        oldest=EXPERIMENT_VERSION,
        older_hint=_OLD_EXPERIMENT_HINT,
    )
    _omit_none = False
    _where = EXPERIMENT_FILE

    name: str
    command: Optional[str]  # shell command line, or None for "the DVC pipeline"
    cwd: str = field(metadata=meta(fallback="."))  # relative to the repo root, "." for the root
    git: GitInfo
    environment_digest: str
    created: str  # UTC ISO-8601 "2026-11-27T10:23:44Z"
    tool_version: str
    command_kind: str = "shell"  # shell | dvc | none
    dvc: Optional[DvcInfo] = spec(None, empty_is_none=True)
    #: metrics file (repo-relative path, or INLINE_METRICS) -> flattened key -> value
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    outputs: tuple[OutputFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: The manifest: every other file of the folder -> ``sha256:<hex>`` (the store fills it).
    files: Mapping[str, str] = spec(default_factory=dict, required=True)
    #: The id of the record this one replaced when files were added after capture (a lock).
    supersedes: Optional[str] = None
    #: What the command did and used (``reprobox record``, ``capture --exit-status``); the field
    #: is written only when set, so the ids of records without it are unchanged.
    run: Optional[RunUsage] = spec(None, omit=omit_none)
    #: Written as the hash of the rest when not set (:meth:`compute_id`).
    id: str = spec("", required=True, encode=lambda e: e.id or e.compute_id())

    def body(self) -> Json:
        """What the run was: the fields two captures of the same run share."""
        return encode(self, only=_BODY)

    def sealed(self) -> Json:
        """The whole document but its id: what the id is the hash of."""
        return encode(self, skip=frozenset({"id"}))

    def compute_id(self) -> str:
        return seal_id(self.sealed())

    def with_id(self) -> "Experiment":
        return replace(self, id=self.compute_id())

    @property
    def content_matches_id(self) -> bool:
        return self.id == self.compute_id()


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
