"""Images through an OCI registry: ``reprobox push`` and the pull-by-digest before a rebuild.

The publication record. ``reprobox push EXP`` writes ``images.json`` into the experiment folder:
the one file the store accepts beside the sealed manifest (an experiment's id cannot cover a
digest only known after the image is built and pushed). It has its own schema
(``reprobox.images/1``), names the experiment id and environment digest it belongs to, lists the
pushed references with their manifest digests, and is sealed by its own content hash (``seal``:
sha256 of its canonical JSON without ``seal``). Pushing again adds (or refreshes) an entry:
the record is additive. It is read with its size checked first and its nesting bounded, and
every field checked by grammar; a record that fails any check, or names another experiment or
environment, is refused (exit 2) naming the file.

Trust. The record comes with the checkout and is not trusted: a registry it names is only a place
to pull *from*, only when this machine trusts that registry (:func:`trusted_registries`: the
user's config or ``REPROBOX_REGISTRIES``; labels are plain strings anyone can set, so an image
from a registry a stranger chose proves nothing), always by digest, and the pulled image is used
only when its labels (``reprobox.experiment``, ``reprobox.env-digest``) name this very capture
(:func:`reprobox.store.image_mismatch`); otherwise the caller builds, saying why. ``push`` only
ever pushes to the registry given on the command line or in the user's
``~/.config/reprobox/config.toml`` (``[registry] default = "HOST[:PORT]/NAMESPACE"``), never to
one named by a capture. Credentials are the container engine's own (``docker login`` /
credential helpers, ``podman login``); reprobox never reads or writes them.

API (used by ``reprobox push``, the docker backend and the cluster fan-out)::

    pub = push(store, stored, "127.0.0.1:5000/team", engine=None, progress=None) -> Publication
    rec = load_publication(stored) -> Optional[PublicationRecord]    # images.json, checked
    ref = ensure_pulled(engine, stored, rec, progress) -> PullResult  # .tag or .reason
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .build import build_experiment, default_tag
from .build.condaimage import build_conda_experiment
from .engine import get_engine
from .model import grammar as validate
from .errors import EngineError, RecordRefused, ReproboxError, UsageError, ValidationError
from .model import pretty_json
from .progress import Progress
from .safefs import SafeDir
from .store import image_mismatch, parse_json

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .store import Store, StoredExperiment

IMAGES_FILE = "images.json"
IMAGES_SCHEMA = "reprobox.images"
IMAGES_VERSION = 1
MAX_IMAGES_BYTES = 256 * 1024
MAX_ENTRIES = 64

#: ``HOST[:PORT]/NAMESPACE`` (the namespace may have several components, or be empty).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_RE = re.compile(
    rf"(?P<host>{_HOST}(?::[0-9]{{1,5}})?)(?P<ns>(?:/{_COMPONENT})*)", re.ASCII
)
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)
_ENGINES = ("docker", "podman")

_RESTORE = (
    "restore images.json from git (`git checkout -- .reprobox/`), or delete it and "
    "push again with `reprobox push EXP`"
)


@dataclass(frozen=True)
class Publication:
    """One pushed image: where it is, and the manifest digest the registry stores it under."""

    repository: str  # HOST[:PORT]/NAMESPACE/NAME, no tag
    tag: str
    digest: str  # the manifest digest, sha256:<hex>
    pushed: str  # UTC, 2026-11-30T18:00:00Z
    engine: str = "docker"

    @property
    def reference(self) -> str:
        """The pull reference: by digest, never by tag."""
        return f"{self.repository}@{self.digest}"

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    def to_dict(self) -> dict[str, str]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "reference": self.reference,
            "pushed": self.pushed,
            "engine": self.engine,
        }


@dataclass(frozen=True)
class PublicationRecord:
    """``images.json``: the pushed images of one experiment."""

    experiment: str
    env_digest: str
    images: tuple[Publication, ...] = ()
    path: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": f"{IMAGES_SCHEMA}/{IMAGES_VERSION}",
            "experiment": self.experiment,
            "env_digest": self.env_digest,
            "images": [p.to_dict() for p in self.images],
        }
        doc["seal"] = seal_of(doc)
        return doc

    def with_image(self, pub: Publication) -> "PublicationRecord":
        """The record plus ``pub`` (replacing an entry for the same repository and tag)."""
        kept = [p for p in self.images if (p.repository, p.tag) != (pub.repository, pub.tag)]
        return PublicationRecord(
            self.experiment, self.env_digest, (*kept, pub)[-MAX_ENTRIES:], self.path
        )


@dataclass(frozen=True)
class PullResult:
    """What :func:`ensure_pulled` found: a usable local reference, or why none."""

    tag: Optional[str]
    reason: str = ""
    publication: Optional[Publication] = None
    tried: tuple[str, ...] = field(default_factory=tuple)


def seal_of(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "seal"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- registry names


def parse_registry(value: str, where: str = "--registry") -> tuple[str, str]:
    """``HOST[:PORT]/NAMESPACE`` -> (``HOST[:PORT]``, ``NAMESPACE``); refuses anything else."""
    text = (value or "").strip().rstrip("/")
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            raise UsageError(
                f"{where} {value!r} has a URL scheme",
                "give HOST[:PORT]/NAMESPACE, e.g. 127.0.0.1:5000/team (docker "
                "decides HTTP or HTTPS itself)",
            )
    m = REGISTRY_RE.fullmatch(text)
    host = m.group("host") if m else ""
    if not m or ("." not in host and ":" not in host and host != "localhost"):
        raise UsageError(
            f"{where} {value!r} is not a registry (HOST[:PORT]/NAMESPACE)",
            "name the registry host with a dot or a port, e.g. registry.example.org/team or "
            "127.0.0.1:5000/team; namespaces are lower-case letters, digits, '.', '_' and '-'",
        )
    return host, m.group("ns").lstrip("/")


def configured_registry() -> Optional[str]:
    """``[registry] default`` in the user's ~/.config/reprobox/config.toml, or None."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(base) / "reprobox" / "config.toml"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not valid TOML ({exc})", "fix or remove the file") from None
    except RecursionError:
        raise UsageError(f"{path} nests too deeply", "fix or remove the file") from None
    section = data.get("registry")
    if not isinstance(section, dict) or "default" not in section:
        return None
    value = section["default"]
    if not isinstance(value, str):
        raise UsageError(
            f"{path}: [registry] default must be a string", 'e.g. default = "127.0.0.1:5000/team"'
        )
    parse_registry(value, f"{path}: [registry] default")  # named as the user wrote it
    return value


def trusted_registries() -> tuple[str, ...]:
    """The registry hosts (``HOST[:PORT]``) this machine trusts to pull a capture's image from.

    ``[registry] default`` and ``[registry] trusted = [...]`` in the user's config, and
    ``REPROBOX_REGISTRIES`` (comma-separated) in the environment: the host's configuration, never
    the checkout. A pulled image runs, and ``verify`` fingerprints it from inside: an image from a
    registry a stranger chose could be made to match any labels and report any fingerprint.
    """
    hosts: list[str] = []
    values: list[str] = [
        v for v in os.environ.get("REPROBOX_REGISTRIES", "").split(",") if v.strip()
    ]
    default = configured_registry()
    if default:
        values.append(default)
    values += _config_list("trusted")
    for value in values:
        host, _ns = parse_registry(
            value.strip() if "/" in value else value.strip() + "/", "a trusted registry"
        )
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


def _config_list(key: str) -> list[str]:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(base) / "reprobox" / "config.toml"
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    try:
        section = tomllib.loads(raw.decode("utf-8")).get("registry")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not valid TOML ({exc})", "fix or remove the file") from None
    except RecursionError:
        raise UsageError(f"{path} nests too deeply", "fix or remove the file") from None
    value = section.get(key) if isinstance(section, dict) else None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(
            f"{path}: [registry] {key} must be a list of strings",
            'e.g. trusted = ["registry.example.org", "127.0.0.1:5000"]',
        )
    return value


def repository_for(store: "Store", stored: "StoredExperiment", registry: str) -> tuple[str, str]:
    """The pushed repository and tag: ``HOST/NS/<repo-name>`` and the experiment id."""
    host, ns = parse_registry(registry)
    name = default_tag(store.root, stored.id).split("/", 1)[1].rsplit(":", 1)[0]
    repo = "/".join(p for p in (host, ns, name) if p)
    validate.image_tag(f"{repo}:{stored.id}", "--registry")
    return repo, stored.id


# --------------------------------------------------------------------------- the record


def _refused(path: Path, what: str) -> RecordRefused:
    return RecordRefused(f"{path}: {what}", _RESTORE)


def load_publication(stored: "StoredExperiment") -> Optional[PublicationRecord]:
    """The experiment's ``images.json``, every field checked; None when there is none.

    Refused (exit 2, naming the file) when it is not a plain file, too large, not JSON, in another
    schema, sealed with another hash, or names another experiment or environment.
    """
    path = stored.path / IMAGES_FILE
    try:
        with _open_folder(stored) as folder:
            if folder.lstat(IMAGES_FILE) is None:
                return None
            raw = folder.read(IMAGES_FILE, MAX_IMAGES_BYTES)
    except FileNotFoundError:
        return None
    except RecordRefused:
        raise
    except ReproboxError as exc:
        raise RecordRefused(f"{path}: {exc.message}", _RESTORE) from None
    return parse_publication(parse_json(raw, path), stored, path)


def parse_publication(
    doc: dict[str, Any], stored: "StoredExperiment", path: Path
) -> PublicationRecord:
    allowed = {"schema", "experiment", "env_digest", "images", "seal"}
    extra = sorted(set(doc) - allowed)
    if extra:
        raise _refused(path, f"unknown field {extra[0]!r}")
    if doc.get("schema") != f"{IMAGES_SCHEMA}/{IMAGES_VERSION}":
        raise _refused(
            path, f"schema is {str(doc.get('schema'))[:60]!r}, not {IMAGES_SCHEMA}/{IMAGES_VERSION}"
        )
    seal = doc.get("seal")
    if not isinstance(seal, str) or seal != seal_of(doc):
        raise _refused(path, "its seal does not match its content (the file was edited)")
    if doc.get("experiment") != stored.id:
        raise _refused(
            path, f"it belongs to experiment {str(doc.get('experiment'))[:40]!r}, not {stored.id}"
        )
    if doc.get("env_digest") != stored.environment.digest:
        raise _refused(path, "its env_digest is not this experiment's environment digest")
    images = doc.get("images")
    if not isinstance(images, list) or len(images) > MAX_ENTRIES:
        raise _refused(path, f"images must be a list of at most {MAX_ENTRIES} entries")
    pubs: list[Publication] = []
    for i, item in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(item, dict):
            raise _refused(path, f"{where} is not an object")
        keys = {"repository", "tag", "digest", "reference", "pushed", "engine"}
        if set(item) != keys:
            odd = sorted(set(item) ^ keys)[0]
            raise _refused(path, f"{where} has a missing or unknown field {odd!r}")
        try:
            repo = validate.image_tag(item["repository"], f"{where}.repository")
            if ":" in repo.rsplit("/", 1)[-1] or "@" in repo or "/" not in repo:
                raise _refused(
                    path, f"{where}.repository {repo!r} is not HOST/NAME (no tag or digest)"
                )
            parse_registry(repo.rsplit("/", 1)[0], f"{where}.repository")
            tag = (
                validate.image_tag(f"x:{item['tag']}", f"{where}.tag")[2:]
                if isinstance(item["tag"], str)
                else None
            )
            if tag is None:
                raise _refused(path, f"{where}.tag is not a string")
            if not isinstance(item["digest"], str) or not _DIGEST_RE.fullmatch(item["digest"]):
                raise _refused(path, f"{where}.digest is not sha256:<64 hex digits>")
            if item["reference"] != f"{repo}@{item['digest']}":
                raise _refused(path, f"{where}.reference is not repository@digest")
            if not isinstance(item["pushed"], str) or not _TIME_RE.fullmatch(item["pushed"]):
                raise _refused(path, f"{where}.pushed is not a UTC time")
            if item["engine"] not in _ENGINES:
                raise _refused(path, f"{where}.engine is not one of {', '.join(_ENGINES)}")
        except (ValidationError, UsageError) as exc:
            raise _refused(path, exc.message) from None
        pubs.append(Publication(repo, tag, item["digest"], item["pushed"], item["engine"]))
    return PublicationRecord(stored.id, stored.environment.digest, tuple(pubs), path)


def _open_folder(stored: "StoredExperiment") -> Any:
    """The experiment folder, reached from the repository root without following a link."""
    root = stored.path.parents[2]  # <root>/.reprobox/experiments/<id>
    return SafeDir.open(root, [*stored.path.relative_to(root).parts])


def write_publication(stored: "StoredExperiment", record: PublicationRecord) -> Path:
    """Write ``images.json`` atomically into the experiment folder (never through a link)."""
    with _open_folder(stored) as folder:
        return Path(folder.write_atomic(IMAGES_FILE, pretty_json(record.to_dict())))


# --------------------------------------------------------------------------- push


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def push(
    store: "Store",
    stored: "StoredExperiment",
    registry: Optional[str] = None,
    *,
    engine: Optional["Engine"] = None,
    progress: Optional[Progress] = None,
    build: bool = True,
) -> Publication:
    """Push the experiment's image (built first when needed) and record it in images.json.

    ``registry``: ``HOST[:PORT]/NAMESPACE`` from the command line, else the user's configured
    default; never one named by the capture.
    """
    say = progress or (lambda _m: None)
    registry = registry or configured_registry()
    if not registry:
        raise UsageError(
            "no registry to push to",
            "pass --registry HOST[:PORT]/NAMESPACE, or set [registry] default = "
            '"HOST[:PORT]/NAMESPACE" in ~/.config/reprobox/config.toml',
        )
    repo, tag = repository_for(store, stored, registry)
    existing = load_publication(stored)  # a bad record is refused before anything is pushed
    engine = engine or get_engine()
    if not engine.available():
        engine.info()  # raises the error that names the fix
    local: Optional[str] = None
    for candidate in dict.fromkeys(
        t for t in (stored.image, default_tag(store.root, stored.id)) if t
    ):
        if (
            engine.image_exists(candidate)
            and image_mismatch(engine.image_labels(candidate), stored) is None
        ):
            local = candidate
            break
    if local is None:
        if not build:
            raise EngineError(
                f"no image of experiment {stored.id} here",
                f"build it with `reprobox build {stored.id}`",
            )
        say("no image of this experiment here: building it first")
        if stored.environment.conda is not None:
            local = build_conda_experiment(store, stored, progress=say).tag
        else:
            local = build_experiment(store, stored, progress=say, record=False).tag
    assert local is not None
    remote = f"{repo}:{tag}"
    say(f"pushing {local} to {remote}")
    tagged_before = engine.image_exists(remote)
    engine.tag_image(local, remote)
    try:
        digest = engine.push_image(remote, say)
    except BaseException:
        if not tagged_before:  # the push did not happen: leave no tag of it behind
            try:
                engine.remove_image(remote)
            except EngineError:
                pass
        raise
    pub = Publication(repo, tag, digest, _now(), engine.name)
    record = existing or PublicationRecord(stored.id, stored.environment.digest)
    write_publication(stored, record.with_image(pub))
    return pub


# --------------------------------------------------------------------------- pull


def ensure_pulled(
    engine: "Engine",
    stored: "StoredExperiment",
    record: Optional[PublicationRecord],
    progress: Optional[Progress] = None,
) -> PullResult:
    """Pull the recorded image by digest and check its labels; the newest entry first.

    Returns the local reference to run (``repo@sha256:...``) or, with ``tag`` None, the reason
    no pulled image can be used (the caller builds, saying why). Never raises for a registry that
    does not answer or an image that is not this capture's.
    """
    say = progress or (lambda _m: None)
    if record is None or not record.images:
        return PullResult(None, "no published image (images.json)")
    reasons: list[str] = []
    tried: list[str] = []
    trusted = trusted_registries()
    for pub in reversed(record.images):
        ref = pub.reference
        if pub.registry not in trusted:
            reasons.append(
                f"{ref}: the registry {pub.registry} is not one this machine trusts "
                "(add it to [registry] trusted in ~/.config/reprobox/config.toml, or "
                "to REPROBOX_REGISTRIES)"
            )
            continue
        tried.append(ref)
        say(f"pulling {ref}")
        try:
            ok = engine.image_exists(ref) or engine.pull(ref)
        except ReproboxError as exc:
            ok, why = False, exc.message
        else:
            why = f"the registry {pub.registry} did not serve it"
        if not ok:
            reasons.append(f"{ref}: {why}")
            continue
        try:
            labels = engine.image_labels(ref)
        except ReproboxError as exc:
            reasons.append(f"{ref}: {exc.message}")
            continue
        bad = image_mismatch(labels, stored)
        if bad is not None:
            reasons.append(f"the pulled image {ref} is refused: {bad}")
            continue
        return PullResult(ref, "", pub, tuple(tried))
    return PullResult(None, "; ".join(reasons), None, tuple(tried))


__all__ = [
    "IMAGES_FILE",
    "IMAGES_SCHEMA",
    "Publication",
    "PublicationRecord",
    "PullResult",
    "configured_registry",
    "ensure_pulled",
    "load_publication",
    "parse_registry",
    "push",
    "trusted_registries",
    "repository_for",
    "write_publication",
]
