"""The ``.reprobox/`` store: layout, atomic writes, lookup by id / prefix / name / ``latest``.

Layout (committed): ``.reprobox/experiments/<id>/{experiment.json, environment.json,
requirements.lock, pylock.toml, Dockerfile, patch.diff}``. Not committed (ignored by the
``.reprobox/.gitignore`` the store writes): ``runs/`` (run reports) and ``cache/``.

An experiment folder appears whole or not at all: it is written under a temporary name in the same
folder and renamed into place, so a crash or Ctrl-C never leaves a half-written experiment and two
concurrent captures never corrupt each other (the same content gives the same id and the second
rename finds the folder already there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

from .errors import ExperimentNotFound, StoreError
from .model import Environment, Experiment, pretty_json

STORE_DIR = ".reprobox"
EXPERIMENT_FILE = "experiment.json"
ENVIRONMENT_FILE = "environment.json"
ID_RE = re.compile(r"^[0-9a-f]{12}$")
MIN_PREFIX = 4

_GITIGNORE = (
    "# written by reprobox: local run reports and caches are not committed\nruns/\ncache/\n"
)


def write_atomic(path: Path, data: Union[str, bytes], mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
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


def read_json(path: Path) -> dict:
    """Read a JSON object, turning every failure into a message naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(f"{path} is missing", "restore it from git or re-capture") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            "restore it from git (`git checkout -- .reprobox/`) or re-capture the experiment",
        ) from None
    except (ValueError, RecursionError) as exc:
        raise StoreError(
            f"{path} is not a JSON file reprobox wrote ({type(exc).__name__}: {exc})",
            "restore it from git (`git checkout -- .reprobox/`) or re-capture the experiment",
        ) from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} does not hold a JSON object")
    return data


@dataclass(frozen=True)
class StoredExperiment:
    experiment: Experiment
    environment: Environment
    path: Path

    @property
    def id(self) -> str:
        return self.experiment.id

    def file(self, name: str) -> Path:
        return self.path / name


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STORE_DIR
        self.experiments_dir = self.path / "experiments"
        self.runs_dir = self.path / "runs"
        self.cache_dir = self.path / "cache"

    # ------------------------------------------------------------------ writing

    def _ensure(self) -> None:
        self.experiments_dir.mkdir(parents=True, exist_ok=True)
        gitignore = self.path / ".gitignore"
        if not gitignore.exists():
            write_atomic(gitignore, _GITIGNORE)

    def save(
        self,
        experiment: Experiment,
        environment: Environment,
        files: Optional[Mapping[str, Union[str, bytes]]] = None,
    ) -> StoredExperiment:
        """Write a new experiment folder atomically; an identical one already there is kept."""
        if experiment.environment_digest != environment.digest:
            raise StoreError("internal: experiment and environment digests disagree")
        experiment = experiment.with_id()
        self._ensure()
        final = self.experiments_dir / experiment.id
        if final.exists():
            # The same capture again: keep the first record, but attach what it lacked (a lock
            # that an earlier offline capture could not write, say).
            existing = self.load(experiment.id)
            for name, content in (files or {}).items():
                if "/" not in name and not name.startswith(".") and not (final / name).exists():
                    write_atomic(final / name, content)
            return existing
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{experiment.id}-", dir=self.experiments_dir))
        try:
            write_atomic(tmp / EXPERIMENT_FILE, pretty_json(experiment.to_dict()))
            write_atomic(tmp / ENVIRONMENT_FILE, pretty_json(environment.to_dict()))
            for name, content in (files or {}).items():
                reserved = (EXPERIMENT_FILE, ENVIRONMENT_FILE)
                if "/" in name or name.startswith(".") or name in reserved:
                    raise StoreError(f"internal: bad store file name {name!r}")
                write_atomic(tmp / name, content)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.exists():  # a concurrent capture of the same content won the race
                    shutil.rmtree(tmp, ignore_errors=True)
                    return self.load(experiment.id)
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StoredExperiment(experiment, environment, final)

    def write_file(self, exp_id: str, name: str, content: Union[str, bytes]) -> Path:
        """(Re)write one attached file (lock, Dockerfile) of an existing experiment atomically."""
        if not ID_RE.match(exp_id) or "/" in name or name.startswith("."):
            raise StoreError(f"internal: bad store path {exp_id}/{name}")
        target = self.experiments_dir / exp_id / name
        write_atomic(target, content)
        return target

    def remove_file(self, exp_id: str, name: str) -> None:
        if not ID_RE.match(exp_id) or "/" in name:
            raise StoreError(f"internal: bad store path {exp_id}/{name}")
        try:
            (self.experiments_dir / exp_id / name).unlink()
        except FileNotFoundError:
            pass

    def set_image(self, stored: StoredExperiment, tag: str) -> StoredExperiment:
        """Record the image tag built for an experiment (the id does not cover it)."""
        exp = replace(stored.experiment, image=tag)
        write_atomic(stored.path / EXPERIMENT_FILE, pretty_json(exp.to_dict()))
        return StoredExperiment(exp, stored.environment, stored.path)

    # ------------------------------------------------------------------ reading

    def ids(self) -> list[str]:
        if not self.experiments_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.experiments_dir.iterdir() if ID_RE.match(p.name) and p.is_dir()
        )

    def load(self, exp_id: str, check_integrity: bool = True) -> StoredExperiment:
        if not ID_RE.match(exp_id):
            raise ExperimentNotFound(f"{exp_id!r} is not an experiment id")
        folder = self.experiments_dir / exp_id
        if folder.is_symlink() or not folder.is_dir():
            raise ExperimentNotFound(f"no experiment {exp_id} in {self.experiments_dir}")
        exp_path = folder / EXPERIMENT_FILE
        env_path = folder / ENVIRONMENT_FILE
        for p in (exp_path, env_path):
            if p.is_symlink():
                raise StoreError(f"{p} is a symbolic link; the store holds plain files only")
        experiment = Experiment.from_dict(read_json(exp_path), str(exp_path))
        environment = Environment.from_dict(read_json(env_path), str(env_path))
        if check_integrity:
            if experiment.id != exp_id or not experiment.content_matches_id:
                raise StoreError(
                    f"experiment {exp_id} was modified after capture: its content no longer "
                    f"matches its id (content hashes to {experiment.compute_id()})",
                    "restore it from git (`git checkout -- .reprobox/`) or re-capture it",
                )
            if experiment.environment_digest != environment.digest:
                raise StoreError(
                    f"experiment {exp_id}: environment.json does not match the experiment's "
                    "environment digest; it was modified after capture",
                    "restore it from git (`git checkout -- .reprobox/`) or re-capture it",
                )
        return StoredExperiment(experiment, environment, folder)

    def __iter__(self) -> Iterator[StoredExperiment]:
        for exp_id in self.ids():
            yield self.load(exp_id)

    def experiments(self) -> list[StoredExperiment]:
        """All experiments, oldest first."""
        return sorted(self, key=lambda s: (s.experiment.created, s.id))

    def resolve(self, ref: str) -> str:
        """Turn an EXP reference (id, prefix >= 4, name, ``latest``) into an id."""
        ids = self.ids()
        if not ids:
            raise ExperimentNotFound(
                f"no experiments recorded under {self.experiments_dir}",
                "record one with `reprobox capture --cmd \"python train.py\"`",
            )
        if ref == "latest":
            return self.experiments()[-1].id
        if ref in ids:
            return ref
        if re.fullmatch(r"[0-9a-f]+", ref) and len(ref) >= MIN_PREFIX:
            matches = [i for i in ids if i.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ExperimentNotFound(
                    f"{ref!r} is ambiguous: it starts {len(matches)} experiment ids "
                    f"({', '.join(matches[:5])})",
                    "give more characters of the id",
                )
        named = [s for s in self.experiments() if s.experiment.name == ref]
        if named:
            return named[-1].id  # the newest experiment of that name
        hint = "list them with `reprobox ls`"
        if re.fullmatch(r"[0-9a-f]{1,3}", ref):
            hint = f"an id prefix needs at least {MIN_PREFIX} characters; " + hint
        raise ExperimentNotFound(f"no experiment matches {ref!r}", hint)

    def get(self, ref: str) -> StoredExperiment:
        return self.load(self.resolve(ref))


def find_root(start: Optional[Path] = None) -> Path:
    """The project root: the enclosing git work tree, else the nearest folder with ``.reprobox``."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    for folder in (start, *start.parents):
        if (folder / STORE_DIR).is_dir():
            return folder
    raise StoreError(
        f"{start} is not inside a git repository",
        "run reprobox from your project's git repository (or create one with `git init`)",
    )


def open_store(start: Optional[Path] = None) -> Store:
    return Store(find_root(start))
