"""The ``.reprobox/`` store: layout, the seal, atomic writes, lookup (id, prefix, name, latest).

Layout. Committed: ``.reprobox/experiments/<id>/{experiment.json, environment.json,
requirements.lock, pylock.toml, Dockerfile, patch.diff}``. Local, never committed (git-ignored by
``.reprobox/.gitignore`` and by a ``*`` ignore file of its own): ``.reprobox/local/`` holding
``images/<id>.json`` (the tag an experiment was built as here), ``runs/`` (run reports) and
``cache/`` (probe, system and DVC caches). After ``reprobox push``, an experiment folder also holds
``images.json`` (pushed references with manifest digests), the one file outside the manifest:
additive, sealed on its own (:mod:`reprobox.registry`). ``build`` and ``run`` in a clone leave
``git status`` clean.

The seal. ``experiment.json`` lists every other file of its folder with its sha256 (``files``), and
the id is the hash of the whole document but the id (:func:`~reprobox.model.seal_id`). Loading an
experiment checks it all: a field of experiment.json, or any file of the folder changed, added or
removed after capture, is refused (exit 2) naming the file. Files are only ever added by reprobox,
and adding one re-seals the record under a new id (see :meth:`Store.reseal`).

Untrusted checkout. Every folder is reached from the repository root without following a symbolic
link (:mod:`reprobox.safefs`), every file is read with its size checked first and its JSON nesting
bounded, and one bad experiment is skipped (and reported) by listing, ``latest`` and name lookup.

Parsed and validated once, here. Loading an experiment also applies the grammars to every value of
it (:func:`reprobox.model.check.validate_experiment`): what the store hands out
(:class:`StoredExperiment`) is a typed, sealed, validated record, and build, run and verify use it
as it is, without validating it again.

An experiment folder appears whole or not at all: it is written under a temporary name in the same
folder and renamed into place, so a crash or Ctrl-C never leaves a half-written experiment and two
concurrent captures never corrupt each other (the same content gives the same id and the second
rename finds the folder already there).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from .errors import ExperimentNotFound, RecordRefused, ReproboxError, StoreError
from .model import (
    EXPERIMENT_FILE,
    EXPERIMENT_SCHEMA,
    EXPERIMENT_VERSION,
    Environment,
    Experiment,
    check_schema,
    file_digest,
    json_too_deep,
    pretty_json,
    seal_id,
)
from .model import check, grammar
from .layout import (
    ENVIRONMENT_FILE,
    EXPERIMENTS,
    ID_RE,
    LOCAL,
    MAX_RECORD_BYTES,
    MIN_PREFIX,
    STORE_DIR,
    find_root,
    open_local,
)
from .safefs import SafeDir, UnsafePath

#: The one file allowed beside the sealed manifest: the publication record of ``reprobox push``
#: (pushed references and manifest digests), additive, sealed on its own and checked by
#: :func:`reprobox.registry.load_publication`.
IMAGES_FILE = "images.json"
#: Names a file of an experiment folder may have (what reprobox writes there).
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")

#: Sizes read from the store, checked before a byte is parsed (MAX_RECORD_BYTES: see layout).
MAX_PATCH_BYTES = 16 * 1024 * 1024
MAX_LOCAL_BYTES = 64 * 1024  # a local image record

LOCAL_IMAGE_SCHEMA = "reprobox.local-image"

_GITIGNORE = (
    "# written by reprobox: local state (image tags, run reports, caches) is not committed\n"
    "local/\nruns/\ncache/\n"
)
_RESTORE = "restore it from git (`git checkout -- .reprobox/`) or re-capture the experiment"

log = logging.getLogger(__name__)
Warn = Callable[[str], None]


def write_atomic(path: Path, data: Union[str, bytes], mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``replace``.

    For files outside the store (a venv marker, a checkout's metrics); the store itself writes
    through :class:`~reprobox.safefs.SafeDir`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    import tempfile  # lazy: ~1.5 ms with random and shutil, for files outside the store only

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def parse_json(raw: bytes, where: Union[str, Path]) -> dict:
    """A JSON object from bytes already size-checked: nesting bounded before parsing, every
    failure a :class:`RecordRefused` naming the file (and line)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordRefused(f"{where} is not UTF-8 text (byte {exc.start})", _RESTORE) from None
    if json_too_deep(text):
        raise RecordRefused(
            f"{where} nests arrays or objects too deeply to be a reprobox record", _RESTORE
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordRefused(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            _RESTORE,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise RecordRefused(
            f"{where} is not a JSON file reprobox wrote ({type(exc).__name__}: {exc})", _RESTORE
        ) from None
    if not isinstance(data, dict):
        raise RecordRefused(f"{where} does not hold a JSON object", _RESTORE)
    return data


def read_json(path: Path, limit: int = MAX_RECORD_BYTES) -> dict:
    """Read a JSON object from a plain file (not a link), its size checked before reading."""
    path = Path(path)
    try:
        with SafeDir.open(path.parent) as folder:
            raw = folder.read(path.name, limit)
    except FileNotFoundError:
        raise RecordRefused(f"{path} is missing", _RESTORE) from None
    except NotADirectoryError:
        raise RecordRefused(f"{path.parent} is not a folder", _RESTORE) from None
    except UnsafePath as exc:
        if exc.linked:
            raise
        raise RecordRefused(exc.message, _RESTORE) from None  # a folder where a file belongs
    except ReproboxError as exc:
        raise RecordRefused(exc.message, exc.hint) from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_json(raw, path)


def image_mismatch(labels: Mapping[str, str], stored: "StoredExperiment") -> Optional[str]:
    """None when an image's labels say it was built for this very capture, else why not.

    The one check made before a local image is used for a run: a tag recorded in local state (or
    the default tag) may name an image built from another capture, or any image at all.
    """
    got_id = labels.get("reprobox.experiment")
    if got_id != stored.id:
        return f"its label reprobox.experiment is {got_id!r}, not {stored.id!r}"
    got_digest = labels.get("reprobox.env-digest")
    if got_digest != stored.environment.digest:
        return (
            f"its label reprobox.env-digest is {got_digest!r}, not the capture's "
            f"{stored.environment.digest}"
        )
    return None


@dataclass(frozen=True)
class StoredExperiment:
    """An experiment as the store hands it out: parsed, its seal checked and every value
    validated against its grammar (:func:`reprobox.model.check.validate_experiment`) once, when
    the store read it (:meth:`Store.load`); or, from :meth:`Store.save`, the record a capture has
    just checked before storing it. Code that receives one does not validate it again."""

    experiment: Experiment
    environment: Environment
    path: Path
    #: The tag this experiment was built as on this machine (local state, not the record).
    image: Optional[str] = None

    @property
    def id(self) -> str:
        return self.experiment.id

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass(frozen=True)
class Skipped:
    """An experiment folder that could not be used, and why (for a warning line)."""

    id: str
    reason: str

    def __str__(self) -> str:
        return f"skipping experiment {self.id}: {self.reason}"


def _file_limit(name: str) -> int:
    return MAX_PATCH_BYTES if name.endswith(".diff") else MAX_RECORD_BYTES


def _seal_error(exp_id: str, what: str) -> RecordRefused:
    return RecordRefused(
        f"experiment {exp_id}: {what}",
        "restore the folder from git (`git checkout -- .reprobox/`) or re-capture the "
        "experiment; only reprobox adds files to a capture, and it re-seals it under a new id",
    )


class Store:
    def __init__(self, root: Path, warn: Optional[Warn] = None) -> None:
        self.root = Path(root)
        self.path = self.root / STORE_DIR
        self.experiments_dir = self.path / EXPERIMENTS
        self.local_path = self.path / LOCAL
        self.runs_dir = self.local_path / "runs"
        self.cache_dir = self.local_path / "cache"
        self.warn: Warn = warn or log.warning

    # ------------------------------------------------------------------ folders

    def _open_top(self, create: bool) -> SafeDir:
        if create:
            self.root.mkdir(parents=True, exist_ok=True)  # the root itself is trusted
        return SafeDir.open(self.root, [STORE_DIR], create=create)

    def _open_experiments(self, create: bool = False) -> SafeDir:
        if not create:
            return SafeDir.open(self.root, [STORE_DIR, EXPERIMENTS])
        with self._open_top(create=True) as top:
            top.create_new(".gitignore", _GITIGNORE)
            return top.sub(EXPERIMENTS, create=True)

    def _open_local(self, *parts: str) -> SafeDir:
        return open_local(self.root, *parts)

    def local_dir(self, *parts: str) -> Path:
        """``.reprobox/local/<parts>``, created, every component a real folder (never a link)."""
        with self._open_local(*parts) as d:
            return d.path

    # ------------------------------------------------------------------ writing

    def save(
        self,
        experiment: Experiment,
        environment: Environment,
        files: Optional[Mapping[str, Union[str, bytes]]] = None,
    ) -> StoredExperiment:
        """Seal and write a new experiment folder atomically.

        The same capture again (the same run: every field but when it was made, the same
        environment.json) keeps the first record. When the new capture brings files the first
        lacked (a lock an offline capture could not write), they are attached by re-sealing the
        first record under a new id (:meth:`reseal`).
        """
        if experiment.environment_digest != environment.digest:
            raise StoreError("internal: experiment and environment digests disagree")
        payload: dict[str, bytes] = {ENVIRONMENT_FILE: pretty_json(environment.to_dict()).encode()}
        for name, content in (files or {}).items():
            if not FILE_NAME_RE.match(name) or name in (EXPERIMENT_FILE, ENVIRONMENT_FILE):
                raise StoreError(f"internal: bad store file name {name!r}")
            payload[name] = content.encode() if isinstance(content, str) else content
        sealed = replace(
            experiment,
            files={n: file_digest(b) for n, b in payload.items()},
            supersedes=None,
            id="",
        ).with_id()
        twin = self._twin(sealed)
        if twin is not None:
            missing = {n: b for n, b in payload.items() if n not in twin.experiment.files}
            return self.reseal(twin, missing) if missing else twin
        return self._write_new(sealed, environment, payload)

    def reseal(
        self,
        stored: StoredExperiment,
        files: Mapping[str, Union[str, bytes]],
        *,
        replace_existing: bool = False,
    ) -> StoredExperiment:
        """Attach (or, with ``replace_existing``, rewrite) files of an experiment.

        The id seals every file, so the result is a new record: the same fields and ``created``,
        the new manifest, ``supersedes`` naming the old id; the old folder is removed. Nothing
        changes (same id) when the files are already there with that content.
        """
        payload = self._read_files(stored)
        for name, content in files.items():
            if not FILE_NAME_RE.match(name) or name in (EXPERIMENT_FILE, ENVIRONMENT_FILE):
                raise StoreError(f"internal: bad store file name {name!r}")
            if replace_existing or name not in payload:
                payload[name] = content.encode() if isinstance(content, str) else content
        manifest = {n: file_digest(b) for n, b in payload.items()}
        if manifest == dict(stored.experiment.files):
            return stored
        new = replace(stored.experiment, files=manifest, supersedes=stored.id, id="").with_id()
        result = self._write_new(new, stored.environment, payload)
        with self._open_experiments() as exps:
            try:
                exps.rmtree(stored.id)
            except OSError as exc:
                self.warn(f"the superseded folder {stored.path} could not be removed: {exc}")
        return result

    def _read_files(self, stored: StoredExperiment) -> dict[str, bytes]:
        """The sealed files of a loaded experiment, checked again against its manifest."""
        out: dict[str, bytes] = {}
        with self._open_experiments() as exps, exps.sub(stored.id) as folder:
            for name, want in stored.experiment.files.items():
                data = folder.read(name, _file_limit(name))
                if file_digest(data) != want:
                    raise _seal_error(stored.id, f"{name} was changed after capture")
                out[name] = data
        return out

    def _write_new(
        self, experiment: Experiment, environment: Environment, payload: Mapping[str, bytes]
    ) -> StoredExperiment:
        with self._open_experiments(create=True) as exps:
            st = exps.lstat(experiment.id)
            if st is not None:
                return self.load(experiment.id)  # the same sealed content: the same record
            tmp = exps.mkdtemp(f".tmp-{experiment.id}-")
            try:
                with exps.sub(tmp) as folder:
                    folder.write_atomic(EXPERIMENT_FILE, pretty_json(experiment.to_dict()))
                    for name, content in payload.items():
                        folder.write_atomic(name, content)
                    os.fchmod(folder.fd, 0o755)
                try:
                    exps.rename(tmp, experiment.id)
                except OSError:
                    if exps.lstat(experiment.id) is not None:  # a concurrent identical capture
                        exps.rmtree(tmp)
                        return self.load(experiment.id)
                    raise
            except BaseException:
                exps.rmtree(tmp)
                raise
        return StoredExperiment(
            experiment,
            environment,
            self.experiments_dir / experiment.id,
            self.local_image(experiment.id),
        )

    def _twin(self, sealed: Experiment) -> Optional[StoredExperiment]:
        """An experiment already recording the same run (same fields but ``created``,
        ``tool_version`` and the files beyond environment.json)."""
        if sealed.id in self.ids():
            try:
                return self.load(sealed.id)
            except ReproboxError:
                return None
        env_sha = sealed.files.get(ENVIRONMENT_FILE)
        # Only a record naming the same environment.json can be a twin: that digest is read
        # from each experiment.json first, and only those that name it are loaded (seal checked,
        # every value validated). Loading every record made each capture slower with each one
        # the store held (~15 ms apiece).
        candidates: list[StoredExperiment] = []
        for exp_id in self.ids():
            if env_sha is None or self._environment_sha(exp_id) != env_sha:
                continue
            try:
                candidates.append(self.load(exp_id))
            except ReproboxError:
                continue
        candidates.sort(key=lambda s: (s.experiment.created, s.id))
        for stored in candidates:
            exp = stored.experiment
            if exp.body() == sealed.body() and exp.files.get(ENVIRONMENT_FILE) == env_sha:
                return stored
        return None

    def _environment_sha(self, exp_id: str) -> Optional[str]:
        """The environment.json digest experiment.json lists, unchecked (a pre-filter only: a
        candidate is then loaded in full), or None when it cannot be read."""
        try:
            with self._open_experiments() as exps, exps.sub(exp_id) as folder:
                doc = parse_json(
                    folder.read(EXPERIMENT_FILE, MAX_RECORD_BYTES), folder.path / EXPERIMENT_FILE
                )
        except (OSError, ReproboxError):
            return None
        files = doc.get("files") if isinstance(doc, dict) else None
        sha = files.get(ENVIRONMENT_FILE) if isinstance(files, dict) else None
        return sha if isinstance(sha, str) else None

    # ------------------------------------------------------------------ local state

    def set_image(self, stored: StoredExperiment, tag: str) -> StoredExperiment:
        """Remember the tag an experiment was built as on this machine (``.reprobox/local``)."""
        record = {"schema": f"{LOCAL_IMAGE_SCHEMA}/1", "experiment": stored.id, "tag": tag}
        with self._open_local("images") as images:
            images.write_atomic(f"{stored.id}.json", pretty_json(record))
        return replace(stored, image=tag)

    def local_image(self, exp_id: str) -> Optional[str]:
        """The tag recorded here for ``exp_id``, or None. Local state can come from a clone too
        (a force-added file), so the tag is only a candidate: see :func:`image_mismatch`."""
        try:
            with SafeDir.open(self.root, [STORE_DIR, LOCAL, "images"]) as images:
                if images.lstat(f"{exp_id}.json") is None:
                    return None
                data = parse_json(
                    images.read(f"{exp_id}.json", MAX_LOCAL_BYTES), images.path / f"{exp_id}.json"
                )
            check_schema(data, LOCAL_IMAGE_SCHEMA, "local image record")
            if data.get("experiment") != exp_id:
                return None
            return grammar.image_tag(data.get("tag"), "local image tag")
        except FileNotFoundError:
            return None
        except (ReproboxError, OSError) as exc:
            self.warn(f"ignoring the local image record of {exp_id}: {exc}")
            return None

    def run_report_path(self, exp_id: str, when: _dt.datetime) -> Path:
        """``.reprobox/local/runs/<id>-<UTC time>.json``, a counter keeping two runs apart."""
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        with self._open_local("runs") as runs:
            name = f"{exp_id}-{stamp}.json"
            n = 1
            while runs.exists(name):
                n += 1
                name = f"{exp_id}-{stamp}-{n}.json"
            return runs.path / name

    def write_run_report(self, path: Path, text: str) -> Path:
        if path.parent != self.runs_dir or not FILE_NAME_RE.match(path.name):
            raise StoreError(f"internal: {path} is not a run report path")
        with self._open_local("runs") as runs:
            return runs.write_atomic(path.name, text)

    # ------------------------------------------------------------------ reading

    def ids(self) -> list[str]:
        """The ids of the experiment folders (a link or a file named like an id included, so
        that acting on it refuses clearly)."""
        try:
            with self._open_experiments() as exps:
                return [n for n in exps.names() if ID_RE.match(n)]
        except FileNotFoundError:
            return []

    def load(self, exp_id: str) -> StoredExperiment:
        """An experiment, its seal checked (every file listed, present, unchanged) and every value
        validated against its grammar: a hostile record is refused here, naming the field."""
        if not ID_RE.match(exp_id):
            raise ExperimentNotFound(f"{exp_id!r} is not an experiment id")
        try:
            exps = self._open_experiments()
        except FileNotFoundError:
            raise ExperimentNotFound(f"no experiment {exp_id} in {self.experiments_dir}") from None
        with exps:
            st = exps.lstat(exp_id)
            if st is None:
                raise ExperimentNotFound(
                    f"no experiment {exp_id} in {self.experiments_dir}",
                    self._superseded_hint(exp_id),
                )
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(self.experiments_dir / exp_id, "it is a symbolic link")
            with exps.sub(exp_id) as folder:
                try:
                    return self._load_folder(folder, exp_id)
                except FileNotFoundError as exc:
                    raise _seal_error(exp_id, f"{exc.filename} is missing") from None

    def _load_folder(self, folder: SafeDir, exp_id: str) -> StoredExperiment:
        names = folder.names()
        where = folder.path / EXPERIMENT_FILE
        if EXPERIMENT_FILE not in names:
            raise _seal_error(exp_id, f"{EXPERIMENT_FILE} is missing")
        doc = parse_json(folder.read(EXPERIMENT_FILE, MAX_RECORD_BYTES), where)
        check_schema(
            doc,
            EXPERIMENT_SCHEMA,
            str(where),
            version=EXPERIMENT_VERSION,
            oldest=EXPERIMENT_VERSION,
            older_hint=f"re-capture it with this reprobox (`reprobox capture` at the "
            f"recorded commit) and commit the new record; experiment {exp_id} cannot "
            "be checked against its id",
        )
        try:
            content_id = seal_id(doc)
        except (TypeError, ValueError) as exc:
            raise _seal_error(exp_id, f"{EXPERIMENT_FILE} cannot be hashed ({exc})") from None
        if doc.get("id") != exp_id or content_id != exp_id:
            raise _seal_error(
                exp_id,
                f"{EXPERIMENT_FILE} was modified after capture: its content no longer "
                f"matches its id (it hashes to {content_id})",
            )
        manifest = doc.get("files")
        if not isinstance(manifest, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
        ):
            raise _seal_error(exp_id, f"{EXPERIMENT_FILE} has no valid files manifest")
        if IMAGES_FILE in manifest:
            raise _seal_error(
                exp_id,
                f"the manifest names {IMAGES_FILE}, which is never sealed "
                "with a capture (it is the publication record `reprobox push` adds)",
            )
        for name in names:
            st = folder.lstat(name) if name == IMAGES_FILE else None
            if st is not None and stat.S_ISREG(st.st_mode):
                continue  # additive, sealed on its own: reprobox.registry reads and checks it
            if name != EXPERIMENT_FILE and name not in manifest:
                raise _seal_error(
                    exp_id,
                    f"{name!r} was added after capture: the sealed manifest does not list it",
                )
        if ENVIRONMENT_FILE not in manifest:
            raise _seal_error(exp_id, f"the manifest does not list {ENVIRONMENT_FILE}")
        env_raw = b""
        for name, want in sorted(manifest.items()):
            if not FILE_NAME_RE.match(name) or name == EXPERIMENT_FILE:
                raise _seal_error(exp_id, f"the manifest names {name!r}, not a store file name")
            if name not in names:
                raise _seal_error(exp_id, f"{name} was removed after capture")
            try:
                data = folder.read(name, _file_limit(name))
            except UnsafePath:
                raise
            except ReproboxError as exc:  # over the size limit
                raise RecordRefused(exc.message, exc.hint) from None
            if file_digest(data) != want:
                raise _seal_error(
                    exp_id,
                    f"{name} was changed after capture: its sha256 does "
                    "not match the sealed manifest",
                )
            if name == ENVIRONMENT_FILE:
                env_raw = data
        env_where = str(folder.path / ENVIRONMENT_FILE)
        environment = Environment.from_dict(parse_json(env_raw, env_where), env_where)
        experiment = Experiment.from_dict(doc, str(where))
        if experiment.environment_digest != environment.digest:
            raise _seal_error(
                exp_id, f"{ENVIRONMENT_FILE} does not match the experiment's environment digest"
            )
        patch = experiment.git.patch
        if patch is not None:
            if patch not in manifest:
                raise _seal_error(exp_id, f"git.patch names {patch!r}, which is not sealed")
            if (
                experiment.git.patch_sha256 is not None
                and manifest[patch] != "sha256:" + experiment.git.patch_sha256
            ):
                raise _seal_error(exp_id, f"{patch} does not match git.patch_sha256")
        # the one validation of a record read: every value against its grammar, the files
        # beside the JSON (plain, small, a patch that stays in the work tree); nothing
        # downstream repeats it
        check.validate_experiment(experiment, environment, folder=folder.path)
        return StoredExperiment(experiment, environment, folder.path, self.local_image(exp_id))

    def scan(self, report: bool = True) -> tuple[list[StoredExperiment], list[Skipped]]:
        """Every experiment that loads (and so validates), oldest first, and those skipped (each
        reported through ``warn`` when ``report``): one bad folder never breaks the store."""
        good: list[StoredExperiment] = []
        skipped: list[Skipped] = []
        for exp_id in self.ids():
            try:
                stored = self.load(exp_id)
            except ReproboxError as exc:
                reason = exc.message
                if reason.startswith(f"experiment {exp_id}: "):
                    reason = reason[len(f"experiment {exp_id}: ") :]
                skipped.append(Skipped(exp_id, reason))
                continue
            good.append(stored)
        if report:
            for s in skipped:
                self.warn(str(s))
        good.sort(key=lambda s: (s.experiment.created, s.id))
        return good, skipped

    def experiments(self) -> list[StoredExperiment]:
        """All usable experiments, oldest first (bad ones reported through ``warn``)."""
        return self.scan()[0]

    def _superseded_hint(self, ref: str) -> Optional[str]:
        if not ID_RE.match(ref):
            return None
        successor = {
            s.experiment.supersedes: s.id
            for s in self.scan(report=False)[0]
            if s.experiment.supersedes
        }
        seen, newer = ref, None
        for _ in range(len(successor)):
            if seen not in successor:
                break
            newer = seen = successor[seen]
        if newer is None:
            return "list them with `reprobox ls`"
        return f"{ref} was re-sealed as {newer} when files were added to it (a lock): use {newer}"

    def resolve(self, ref: str) -> str:
        """Turn an EXP reference (id, prefix >= 4, name, ``latest``) into an id.

        ``latest`` and names are looked up among the experiments that load and validate (the
        rest are reported and skipped); an id or prefix names its folder, good or bad, so that
        acting on a bad one refuses with the reason.
        """
        return self._resolve(ref)[0]

    def _resolve(self, ref: str) -> tuple[str, Optional[StoredExperiment]]:
        """The id, and the experiment when the lookup had to load it (``latest``, a name)."""
        ids = self.ids()
        if not ids:
            raise ExperimentNotFound(
                f"no experiments recorded under {self.experiments_dir}",
                'record one with `reprobox capture --cmd "python train.py"`',
            )
        if ref == "latest":
            good, skipped = self.scan()
            if not good:
                raise ExperimentNotFound(
                    f"no usable experiment under {self.experiments_dir} "
                    f"({len(skipped)} skipped, see the warnings above)",
                    "name one by its id to see why it is refused, or re-capture",
                )
            return good[-1].id, good[-1]
        if ref in ids:
            return ref, None
        if re.fullmatch(r"[0-9a-f]+", ref) and len(ref) >= MIN_PREFIX:
            matches = [i for i in ids if i.startswith(ref)]
            if len(matches) == 1:
                return matches[0], None
            if len(matches) > 1:
                raise ExperimentNotFound(
                    f"{ref!r} is ambiguous: it starts {len(matches)} experiment ids "
                    f"({', '.join(matches[:5])})",
                    "give more characters of the id",
                )
        named = [s for s in self.experiments() if s.experiment.name == ref]
        if named:
            return named[-1].id, named[-1]  # the newest experiment of that name
        hint = self._superseded_hint(ref) or "list them with `reprobox ls`"
        if re.fullmatch(r"[0-9a-f]{1,3}", ref):
            hint = f"an id prefix needs at least {MIN_PREFIX} characters; " + hint
        raise ExperimentNotFound(f"no experiment matches {ref!r}", hint)

    def get(self, ref: str) -> StoredExperiment:
        """The experiment ``ref`` names, loaded (and so validated) once: ``latest`` and names are
        found among the experiments already loaded to look them up."""
        exp_id, loaded = self._resolve(ref)
        return loaded if loaded is not None else self.load(exp_id)


def open_store(start: Optional[Path] = None, warn: Optional[Warn] = None) -> Store:
    return Store(find_root(start), warn=warn)
