"""The data of a run, as DVC records it; and the DVC steps ``reprobox run`` needs.

Reading never imports DVC (seconds of start-up): ``dvc.yaml``, ``dvc.lock`` and ``*.dvc`` files
are plain YAML, and ``.dvc/config`` is INI. What is recorded: a digest of the lock files, every
output with its hash (pipeline outputs and ``dvc add`` files), the parameters the lock recorded,
the stage names, the metrics files the pipeline declares, and the *name* of the default remote.
The remote's URL is not recorded (it may carry credentials, and the clone has it anyway), and
``.dvc/config.local``, where DVC keeps secrets, is never read for the record.

For a rerun: :func:`pull` fetches the outputs from the project's remote (never from the capture
host) through a cache folder shared between runs, so a second run downloads nothing, and
:func:`repro_forced` gives the command that recomputes the pipeline instead of restoring it from
DVC's run cache.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from .. import proc
from . import git
from ..errors import CommandError, DvcError, ReproboxError, UsageError
from ..model import DvcInfo, DvcOutput, canonical_json
from ..redact import redact_text, strip_url_credentials
from ..safefs import SafeDir, TooLarge
from ..store import write_atomic

log = logging.getLogger("reprobox.workspace.dvc")

#: The command recorded for an experiment that is "the DVC pipeline".
DVC_PIPELINE_COMMAND = "dvc repro"

_INSTALL_HINT = (
    "install the DVC that comes with reprobox: `pip install 'reprobox[dvc]'` in "
    "reprobox's environment (and DVC's extra for your remote, e.g. "
    "`pip install 'dvc[s3]'`)"
)
_SKIP_DIRS = {".git", ".dvc", ".reprobox", ".venv", "venv", "node_modules", "__pycache__", ".tox"}
_MAX_WALK_ENTRIES = 200_000
_HASH_KEYS = ("md5", "etag", "checksum", "version_id")


def is_dvc_project(root: Path) -> bool:
    """True when ``root`` holds a ``.dvc`` folder (``dvc init`` was run there)."""
    return (Path(root) / ".dvc").is_dir()


# --------------------------------------------------------------------------- reading


#: A DVC file is YAML the project keeps in git: a larger one is not a DVC file.
MAX_DVC_FILE_BYTES = 4 * 1024 * 1024
#: Nesting, and values in all, a DVC file may hold once read. YAML aliases let a few hundred
#: bytes stand for billions of values, which every later walk of the document (the record's
#: checks, its JSON) would visit one by one.
MAX_DVC_DEPTH = 64
MAX_DVC_VALUES = 1_000_000


def read_project_file(root: Path, rel: str, limit: int = MAX_DVC_FILE_BYTES) -> bytes | None:
    """The bytes of the project file ``rel`` (a repository-relative POSIX path), reached from
    ``root`` without following a symbolic link (a checkout can commit ``dvc.lock`` as a link to
    any file of the machine that captures it); None when it does not exist."""
    parts = PurePosixPath(rel).parts
    try:
        with SafeDir.open(Path(root), parts[:-1]) as folder:
            return folder.read(parts[-1], limit)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except TooLarge:
        raise DvcError(
            f"refusing {rel}: it is over the {limit // (1024 * 1024)} MiB reprobox reads from a "
            "DVC file",
            "a DVC file holds hashes and parameters, not data: check what wrote it",
        ) from None


def _too_big(doc: Any) -> str | None:
    """What is wrong with the size of a document read from YAML, or None (no recursion: a
    recursive alias nests without end)."""
    stack = [(doc, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_DVC_VALUES:
            return f"it stands for more than {MAX_DVC_VALUES} values (YAML aliases?)"
        if isinstance(item, (dict, list)):
            if depth >= MAX_DVC_DEPTH:
                return f"it nests more than {MAX_DVC_DEPTH} levels deep"
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return None


def _load_yaml(root: Path, rel: str) -> Any:
    """The document of the project's YAML file ``rel`` (None when absent), read as
    :func:`read_project_file` reads it and bounded in size and depth."""
    import yaml  # lazy: PyYAML costs ~12 ms to import, needed only where dvc.yaml is read

    raw = read_project_file(root, rel)
    if raw is None:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    fix = "fix it so that `dvc status` works, then capture again"
    try:
        doc = yaml.load(raw.decode("utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DvcError(f"{rel} is not valid YAML{where}", fix) from None
    except UnicodeDecodeError:
        raise DvcError(f"{rel} is not UTF-8 text", fix) from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise DvcError(f"{rel} holds a value that cannot be read ({exc})"[:300], fix) from None
    except RecursionError:
        raise DvcError(f"{rel} nests too deeply", fix) from None
    problem = _too_big(doc)
    if problem:
        raise DvcError(f"refusing {rel}: {problem}", fix)
    return doc


def _param_value(value: Any, where: str) -> Any:
    """A parameter's value as the record keeps it (JSON): keys as text, as JSON writes them;
    a YAML date as its ISO text; anything else YAML can build (bytes, sets) is refused."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or key is None:
                text = json.dumps(key)
            elif isinstance(key, (str, int, float)):
                text = str(key)
            else:
                raise DvcError(
                    f"{where}: the parameter key {str(key)[:80]!r} is not text or a number",
                    "fix dvc.lock so that `dvc status` works, then capture again",
                )
            if text in out:
                raise DvcError(
                    f"{where}: the parameter {text!r} is given twice (as text and as a number)",
                    "fix dvc.lock so that `dvc status` works, then capture again",
                )
            out[text] = _param_value(item, f"{where}.{text}")
        return out
    if isinstance(value, (list, tuple)):
        return [_param_value(v, where) for v in value]
    if isinstance(value, date):  # datetime too: YAML reads 2020-01-01 as a date
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise DvcError(
        f"{where}: a parameter of type {type(value).__name__}, which the record cannot keep",
        "fix dvc.lock so that `dvc status` works, then capture again",
    )


def _dvc_files_by_git(root: Path) -> list[str] | None:
    try:
        done = proc.run(
            [
                "git",
                "-c",
                "core.fsmonitor=false",
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                "--",
                "dvc.yaml",
                "*/dvc.yaml",
                "dvc.lock",
                "*/dvc.lock",
                "*.dvc",
            ],
            cwd=root,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except ReproboxError:
        return None
    if done.returncode != 0:
        return None
    return sorted({n for n in done.stdout.split("\0") if n and (Path(root) / n).is_file()})


def _dvc_files(root: Path, use_git: bool = True) -> list[str]:
    """Repo-relative paths of every dvc.yaml, dvc.lock and *.dvc file of the project.

    Git knows them all (they are committed, or at least not ignored) and answers at once even in
    a project with millions of data files; without git, a walk that skips hidden folders.
    ``use_git=False`` walks: after a rerun's command ran, the checkout's ``.git`` file could
    point git at a repository configuration the command wrote (``core.fsmonitor`` runs a program).
    """
    if use_git:
        found = _dvc_files_by_git(root)
        if found is not None:
            return found
    names: list[str] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        seen += len(filenames) + len(dirnames)
        if seen > _MAX_WALK_ENTRIES:
            log.warning("stopped looking for DVC files after %d entries", seen)
            break
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name in ("dvc.yaml", "dvc.lock") or name.endswith(".dvc"):
                names.append((rel / name).as_posix())
    return sorted(set(names))


def _under(folder: str, path: str) -> str:
    """``path``, relative to the project folder ``folder``, as a project-relative POSIX path."""
    parts: list[str] = []
    for part in (PurePosixPath(folder) / path).parts:
        if part == "..":
            if parts:
                parts.pop()
            continue
        if part != ".":
            parts.append(part)
    return "/".join(parts)


def _folder(rel: str) -> str:
    parent = PurePosixPath(rel).parent.as_posix()
    return "" if parent == "." else parent


def _hash_of(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(hash, hash_name) of an output entry of dvc.lock or a .dvc file."""
    for key in _HASH_KEYS:
        value = entry.get(key)
        if isinstance(value, str) and value:
            if key == "md5":
                # DVC 3 writes "hash: md5"; an md5 without it is a DVC 2 (dos2unix) hash.
                return value, "md5" if entry.get("hash") == "md5" else "md5-dos2unix"
            return value, key
    return None


def _outputs(entries: Any, folder: str, stage: str | None) -> Iterator[DvcOutput]:
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            continue
        found = _hash_of(entry)
        if found:
            path = _under(folder, entry["path"])
            yield DvcOutput(path=path, hash=found[0], hash_name=found[1], stage=stage)


def _declared_paths(items: Any) -> Iterator[str]:
    """Paths of a dvc.yaml list whose items are ``path`` or ``{path: {options}}``."""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            yield from (k for k in item if isinstance(k, str))


def _metric_outs(items: Any) -> Iterator[str]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            for key, opts in item.items():
                if isinstance(key, str) and isinstance(opts, Mapping) and opts.get("metric"):
                    yield key


def _default_remote(root: Path) -> str | None:
    # never config.local: that is where secrets live
    # read as the run reads it (:func:`_parse_config`): a file that is no INI names no remote
    parser = _parse_config(read_project_file(root, ".dvc/config", MAX_CONFIG_BYTES))
    if parser is None:
        return None
    name = parser.get("core", "remote", fallback=None)
    return (name or "").strip() or None


def _lock_digest(root: Path, locks: list[str]) -> str | None:
    """sha256 of ``dvc.lock`` (what ``sha256sum dvc.lock`` prints) for the usual single lock at
    the root; with several lock files, sha256 over their sorted ``path -> sha256`` list."""
    if not locks:
        return None
    digests = {
        rel: hashlib.sha256(read_project_file(root, rel) or b"").hexdigest() for rel in locks
    }
    if list(digests) == ["dvc.lock"]:
        return digests["dvc.lock"]
    return hashlib.sha256(canonical_json(sorted(digests.items()))).hexdigest()


def dvc_info(root: Path, use_git: bool = True) -> DvcInfo | None:
    """What DVC recorded about the data of the project at ``root``; None if it is not one.

    ``use_git=False`` for a checkout a command has run in (see :func:`_dvc_files`).
    """
    root = Path(root)
    if not is_dvc_project(root):
        return None
    files = _dvc_files(root, use_git)
    locks = [f for f in files if PurePosixPath(f).name == "dvc.lock"]
    outputs: dict[str, DvcOutput] = {}
    params: dict[str, dict[str, Any]] = {}
    stages: list[str] = []
    metrics: list[str] = []

    for rel in files:
        name = PurePosixPath(rel).name
        folder = _folder(rel)
        if name == "dvc.lock":
            continue  # read with its dvc.yaml, which says each stage's working folder
        doc = _load_yaml(root, rel)
        if not isinstance(doc, Mapping):
            continue
        if name != "dvc.yaml":  # a .dvc file written by `dvc add` / `dvc import`
            for out in _outputs(doc.get("outs"), folder, rel):
                outputs[out.path] = out
            metrics += [_under(folder, p) for p in _metric_outs(doc.get("outs"))]
            continue
        prefix = f"{folder}/dvc.yaml:" if folder else ""
        wdirs: dict[str, str] = {}
        declared = doc.get("stages")
        for stage_name, stage in declared.items() if isinstance(declared, Mapping) else []:
            stages.append(f"{prefix}{stage_name}")
            if not isinstance(stage, Mapping):
                continue
            wdir = stage.get("wdir")
            here = _under(folder, wdir) if isinstance(wdir, str) else folder
            wdirs[str(stage_name)] = here
            metrics += [_under(here, p) for p in _declared_paths(stage.get("metrics"))]
            metrics += [_under(here, p) for p in _metric_outs(stage.get("outs"))]
        metrics += [_under(folder, p) for p in _declared_paths(doc.get("metrics"))]

        lock_rel = f"{folder}/dvc.lock" if folder else "dvc.lock"
        if lock_rel not in locks:
            continue
        lock = _load_yaml(root, lock_rel)
        recorded = lock.get("stages") if isinstance(lock, Mapping) else None
        for stage_name, stage in recorded.items() if isinstance(recorded, Mapping) else []:
            if not isinstance(stage, Mapping):
                continue
            # foreach/matrix stages are locked as "name@key"; their wdir is the template's
            here = wdirs.get(str(stage_name).split("@", 1)[0], folder)
            for out in _outputs(stage.get("outs"), here, f"{prefix}{stage_name}"):
                outputs[out.path] = out
            recorded_params = stage.get("params") or {}
            if not isinstance(recorded_params, Mapping):
                raise DvcError(
                    f"{lock_rel}: the params of stage {str(stage_name)[:80]!r} are not a "
                    "mapping of file to values",
                    "fix it so that `dvc status` works, then capture again",
                )
            for pfile, values in recorded_params.items():
                if isinstance(values, Mapping):
                    where = f"{lock_rel}: stage {str(stage_name)[:80]!r}, {str(pfile)[:80]}"
                    params.setdefault(_under(here, str(pfile)), {}).update(
                        _param_value(values, where)
                    )

    return DvcInfo(
        lock_digest=_lock_digest(root, locks),
        outputs=tuple(sorted(outputs.values(), key=lambda o: o.path)),
        params={k: dict(sorted(v.items())) for k, v in sorted(params.items())},
        stages=tuple(stages),
        remote=_default_remote(root),
        # "${...}" paths are templated: only DVC can resolve them, so they are left out.
        metrics_files=tuple(sorted({m for m in metrics if "${" not in m})),
    )


# --------------------------------------------------------------------------- pipeline inputs


def data_files(root: Path, use_git: bool = True) -> list[str]:
    """The ``.dvc`` files of the project (``dvc add`` / ``dvc import``): the data no stage
    produces. A pipeline's rerun pulls these only; what its stages write, ``dvc repro --force``
    recomputes (and an output that was never pushed cannot block the rerun)."""
    return [
        f
        for f in _dvc_files(Path(root), use_git)
        if PurePosixPath(f).name not in ("dvc.yaml", "dvc.lock")
    ]


def expected_size(root: Path, targets: Sequence[str] | None) -> tuple[int, int]:
    """(outputs, bytes) that ``dvc pull`` of ``targets`` (None: every ``.dvc`` file and
    ``dvc.lock``) brings, from the sizes DVC recorded; for the progress line."""
    root = Path(root)
    files = (
        list(targets)
        if targets is not None
        else [f for f in _dvc_files(root, use_git=False) if PurePosixPath(f).name != "dvc.yaml"]
    )
    count = size = 0
    for rel in files:
        doc = _load_yaml(root, rel)
        if not isinstance(doc, Mapping):
            continue
        outs = doc.get("outs")
        entries: list[Any] = list(outs) if isinstance(outs, list) else []
        stages = doc.get("stages")
        for stage in stages.values() if isinstance(stages, Mapping) else []:
            if isinstance(stage, Mapping) and isinstance(stage.get("outs"), list):
                entries += stage["outs"]
        for entry in entries:
            if isinstance(entry, Mapping):
                count += 1
                value = entry.get("size")
                size += value if isinstance(value, int) and value > 0 else 0
    return count, size


def object_path(root: Path, md5: str) -> Path | None:
    """Where a DVC cache or local remote folder keeps the object ``md5`` (``abc...`` or
    ``abc....dir``), in DVC 3's layout (``files/md5/ab/c...``) or DVC 2's (``ab/c...``)."""
    if not re.fullmatch(r"[0-9a-f]{32}(?:\.dir)?", md5):
        return None
    for base in (Path(root) / "files" / "md5", Path(root)):
        candidate = base / md5[:2] / md5[2:]
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None


#: A ``.dir`` manifest bigger than this is not read (a listing of millions of files).
MAX_DIR_MANIFEST_BYTES = 64 * 1024 * 1024


def read_dir_manifest(path: Path) -> dict[str, str] | None:
    """``relpath -> md5`` of a DVC ``.dir`` object (a JSON list), or None when unreadable."""
    try:
        if path.stat().st_size > MAX_DIR_MANIFEST_BYTES:
            return None
        entries = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list):
        return None
    out: dict[str, str] = {}
    for entry in entries:
        if (
            isinstance(entry, Mapping)
            and isinstance(entry.get("relpath"), str)
            and isinstance(entry.get("md5"), str)
        ):
            out[entry["relpath"]] = entry["md5"]
    return out


def _local_remote_folder(root: Path) -> tuple[str, Path] | None:
    """(name, folder) of the project's default remote when it is a folder on this machine."""
    name = _default_remote(root)
    parser = _checkout_config(root)
    if not name or parser is None:
        return None
    url = _remotes_of(parser).get(name)
    if not url or (_URL_RE.match(url) and not url.startswith("file://")):
        return None
    url = url[len("file://") :] if url.startswith("file://") else url
    folder = Path(os.path.expanduser(url))
    if not folder.is_absolute():
        folder = Path(root) / ".dvc" / folder
    return name, folder


def inputs_missing_from_remote(root: Path) -> list[str]:
    """Warnings for the data a rerun pulls (the outputs of ``.dvc`` files) that the project's
    default remote does not hold. Checked offline, by reading the remote's folder, when the
    remote is a local folder; other remotes are not contacted (``dvc status -c`` tells)."""
    root = Path(root)
    if not is_dvc_project(root):
        return []
    found = _local_remote_folder(root)
    if found is None:
        return []
    name, folder = found
    missing: list[str] = []
    for rel in data_files(root):
        doc = _load_yaml(root, rel)
        outs = doc.get("outs") if isinstance(doc, Mapping) else None
        for out in _outputs(outs, _folder(rel), rel):
            if not out.hash_name.startswith("md5"):
                continue
            if object_path(folder, out.hash) is None:
                missing.append(out.path)
                continue
            if out.hash.endswith(".dir"):
                manifest_at = object_path(folder, out.hash)
                manifest = read_dir_manifest(manifest_at) if manifest_at else None
                absent = [
                    f for f, md5 in (manifest or {}).items() if object_path(folder, md5) is None
                ]
                if absent:
                    missing.append(f"{out.path} ({len(absent)} file(s), e.g. {absent[0]})")
    if not missing:
        return []
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return [
        f"the DVC remote {name!r} ({folder}) does not hold data the rerun pulls: {shown}; "
        "`dvc push` it, or the experiment cannot be rerun elsewhere"
    ]


# --------------------------------------------------------------------------- for `reprobox run`


@dataclass(frozen=True)
class PullResult:
    """What ``dvc pull`` did: files downloaded from the remote and files placed in the tree."""

    fetched: int
    added: int
    output: str


def _bundled_dvc() -> bool:
    """DVC installed with reprobox (``pip install 'reprobox[dvc]'``), in reprobox's interpreter."""
    try:
        return importlib.util.find_spec("dvc") is not None
    except (ImportError, ValueError):
        return False


def dvc_argv(env: Mapping[str, str] | None = None) -> list[str]:
    """How reprobox runs DVC: the DVC installed with reprobox first (``python -m dvc`` in
    reprobox's own interpreter), else a ``dvc`` on PATH; never required on PATH."""
    if _bundled_dvc():
        return [sys.executable, "-m", "dvc"]
    path = (env or os.environ).get("PATH")
    exe = shutil.which("dvc", path=path)
    if exe is None:
        raise DvcError(
            "DVC is not installed with reprobox (and no `dvc` is on PATH)", _INSTALL_HINT
        )
    return [exe]


def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"  # no phoning home from a rerun
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def pull(
    workdir: Path,
    *,
    cache_dir: Path | None = None,
    jobs: int | None = None,
    local_config_from: Path | None = None,
    targets: Sequence[str] | None = None,
) -> PullResult:
    """``dvc pull`` in ``workdir`` (a fresh worktree) from the project's default remote.

    ``cache_dir``: a DVC cache shared between runs, set in the worktree's ``.dvc/config.local``
    (DVC ignores that file in git), so that a second run finds everything there and downloads
    nothing. ``local_config_from``: a project root whose ``.dvc/config.local`` (remote
    credentials the user keeps out of git) is copied into the worktree first; it stays local.
    """
    workdir = Path(workdir)
    exe = dvc_argv()
    if not is_dvc_project(workdir):
        raise DvcError(
            f"{workdir} is not a DVC project (no .dvc folder)", "run `dvc init` and commit it"
        )
    local = workdir / ".dvc" / "config.local"
    if local_config_from is not None:
        source = Path(local_config_from) / ".dvc" / "config.local"
        if source.is_file() and source.resolve() != local.resolve():
            shutil.copyfile(source, local)
            os.chmod(local, 0o600)
    if cache_dir is not None:
        cache_dir = Path(cache_dir).resolve()
        cache_dir.mkdir(parents=True, exist_ok=True)
        _run_dvc(
            [*exe, "config", "--local", "cache.dir", str(cache_dir)],
            workdir,
            "configuring the DVC cache",
        )
    argv = [*exe, "pull"]
    if jobs:
        argv += ["--jobs", str(int(jobs))]
    if targets is not None:  # only these .dvc files' data (a pipeline's inputs)
        argv += ["--", *targets]
    done = _run_dvc(argv, workdir, "dvc pull", timeout=None)
    out = done.stdout + done.stderr
    return PullResult(
        fetched=_count(r"(\d+) files? fetched", out),
        added=_count(r"(\d+) files? (?:added|modified)", out),
        output=redact_text(out.strip()),
    )


def _run_dvc(argv: list[str], cwd: Path, what: str, timeout: float | None = proc.DEFAULT_TIMEOUT):
    try:
        return proc.run(argv, cwd=cwd, env=_dvc_env(), what=what, timeout=timeout)
    except CommandError as exc:
        tail = redact_text(exc.stderr_tail.strip())
        if "no remote" in tail.lower() or "no default remote" in tail.lower():
            raise DvcError(
                "this DVC project has no default remote to pull the data from",
                "on the machine that has the data: `dvc remote add -d storage <url>`, commit "
                ".dvc/config, and `dvc push`",
            ) from None
        raise DvcError(
            f"{what} failed:\n    " + "\n    ".join(tail.splitlines()[-10:]),
            "check that the DVC remote is reachable from this machine (`dvc remote list`; "
            "credentials in .dvc/config.local or the environment) and that the data was pushed "
            "with `dvc push` where it was produced",
        ) from None


def repro_forced(workdir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """The command line that recomputes the pipeline of ``workdir``: ``dvc repro --force``.

    ``--force`` runs every stage of the pipelines of ``dvc.yaml`` (and the stages they depend on)
    even when nothing changed, and it bypasses DVC's run cache, which would otherwise restore the
    recorded outputs instead of recomputing them. ``env``, when given, is the environment the
    command will run with: its PATH must find ``dvc``.
    """
    if not (Path(workdir) / "dvc.yaml").is_file():
        raise DvcError(
            f"no dvc.yaml in {workdir}: there is no pipeline to rerun",
            'record the command with `reprobox capture --cmd "..."` instead',
        )
    return [*dvc_argv(env), "repro", "--force"]


# --------------------------------------------------------------------------- untrusted checkouts
#
# A rerun's checkout may come from a stranger (a pull request). What DVC does there on the host
# is limited to what the *user* configured:
#
# * the trusted DVC configuration is the host's: DVC's global and system configuration files,
#   the user's own ``.dvc/config.local`` (a regular file git does not track, in the working tree
#   reprobox was started from) and ``reprobox run --dvc-remote URL``;
# * the checkout's ``.dvc/config`` only *names* a remote: it is pulled from, with the user's
#   credentials, when its URL equals a trusted remote's; any other remote is refused (exit 2,
#   naming the remote and the file). Pulling without credentials was not chosen: a local-path
#   remote needs none (the host's file system is the credential), and a private remote would
#   fail later with a confusing message;
# * reprobox then writes the checkout's ``.dvc/config`` and ``.dvc/config.local`` itself (the
#   trusted remote and the shared cache, nothing else), so no other setting of the checkout
#   (``cache.dir``, ``cache.type = symlink``, remote options) reaches DVC;
# * a symbolic link under ``.dvc/`` is refused, and so is every path of ``dvc.yaml`` and
#   ``*.dvc`` files (deps, outs, params, metrics, plots, ``vars:`` files, ``wdir``; templated
#   ones again once DVC resolved them) that is absolute, a URL, climbs out with ``..`` or resolves
#   outside through a link, and an import from another repository.

#: A configuration file bigger than this is not a DVC configuration.
MAX_CONFIG_BYTES = 256 * 1024
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_UNTRUSTED_HINT = (
    "the checkout may come from an untrusted source (a pull request); DVC paths must stay "
    "inside the repository"
)


@dataclass(frozen=True)
class TrustedRemote:
    """A DVC remote the user configured: its name, URL and the file (or option) that says so."""

    name: str
    url: str
    source: str
    default: bool = False


def _checkout_config(root: Path) -> configparser.ConfigParser | None:
    """The project's committed ``.dvc/config``, read as :func:`read_project_file` reads (never
    through a link); None when absent, unreadable or too big."""
    try:
        raw = read_project_file(root, ".dvc/config", MAX_CONFIG_BYTES)
    except DvcError:
        return None
    return _parse_config(raw)


def _read_config(path: Path) -> configparser.ConfigParser | None:
    """A DVC (INI) configuration file, or None when absent, unreadable or too big."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        return _parse_config(path.read_bytes())
    except OSError:
        return None


def _parse_config(raw: bytes | None) -> configparser.ConfigParser | None:
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return parser


def _remotes_of(parser: configparser.ConfigParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for section in parser.sections():
        m = re.fullmatch(r"""\s*'?remote\s+"([^"]+)"'?\s*""", section)
        if m and parser.has_option(section, "url"):
            out[m.group(1)] = parser.get(section, "url").strip()
    return out


def normalize_remote_url(url: str, base: Path) -> str:
    """A remote URL in comparable form: a local path absolute (relative to ``base``, the folder
    of the file that names it) and resolved; a URL without its trailing slash."""
    url = url.strip()
    if _URL_RE.match(url) or url.startswith("remote://"):
        scheme, rest = url.split("://", 1)
        if scheme.lower() == "file":
            return os.path.realpath(rest)
        return f"{scheme.lower()}://{rest.rstrip('/')}"
    return os.path.realpath(os.path.join(str(base), os.path.expanduser(url)))


def dvc_config_dirs() -> tuple[Path, Path]:
    """DVC's global and system configuration folders, found the way DVC finds them."""
    glob = os.environ.get("DVC_GLOBAL_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "dvc"
    )
    system = os.environ.get("DVC_SYSTEM_CONFIG_DIR") or os.path.join(
        (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")[0] or "/etc/xdg", "dvc"
    )
    return Path(glob), Path(system)


def user_local_config(user_root: Path | None) -> Path | None:
    """The user's own ``.dvc/config.local`` in the working tree reprobox runs from, when it is
    theirs: a regular file (not a link) that git does not track."""
    if user_root is None:
        return None
    dvc_dir = Path(user_root) / ".dvc"
    path = dvc_dir / "config.local"
    if os.path.islink(dvc_dir) or os.path.islink(path) or not path.is_file():
        return None
    if git.is_tracked(Path(user_root), ".dvc/config.local"):
        return None
    return path


def trusted_remotes(user_root: Path | None, dvc_remote: str | None = None) -> list[TrustedRemote]:
    """The remotes the user configured, the last-read (most specific) level first."""
    found: list[TrustedRemote] = []
    if dvc_remote:
        found.append(TrustedRemote("reprobox-trusted", dvc_remote, "--dvc-remote", True))
    glob, system = dvc_config_dirs()
    files = [p for p in (user_local_config(user_root),) if p is not None]
    files += [glob / "config", system / "config"]
    for path in files:
        parser = _read_config(path)
        if parser is None:
            continue
        default = parser.get("core", "remote", fallback="").strip()
        for name, url in _remotes_of(parser).items():
            found.append(
                TrustedRemote(
                    name, normalize_remote_url(url, path.parent), str(path), name == default
                )
            )
    return found


def _refuse(
    source: str, what: str, value: str, reason: str, hint: str = _UNTRUSTED_HINT
) -> NoReturn:
    raise UsageError(f"refusing {source}: {what} {value!r} {reason}", hint)


def _check_dvc_dir(checkout: Path) -> None:
    dvc_dir = Path(checkout) / ".dvc"
    if os.path.islink(dvc_dir):
        _refuse(".dvc", "the folder", ".dvc", f"is a symbolic link (-> {os.readlink(dvc_dir)})")
    for dirpath, dirnames, filenames in os.walk(dvc_dir, followlinks=False):
        for name in (*dirnames, *filenames):
            full = Path(dirpath) / name
            if full.is_symlink():
                rel = full.relative_to(checkout).as_posix()
                _refuse(
                    rel,
                    "the file",
                    rel,
                    f"is a symbolic link (-> {os.readlink(full)}); "
                    "DVC's configuration is the user's, never a link out of the checkout",
                )


_TEMPLATED_SEEN: list[str] = []


def _check_path(checkout: Path, folder: str, value: Any, source: str, what: str) -> None:
    """One path of a DVC file: relative, inside the checkout, not through a link that leaves it.

    A templated path (``${...}``) is checked as far as its literal text goes here, and again
    once DVC resolved it (:func:`check_resolved_paths`).
    """
    if not isinstance(value, str) or not value:
        return
    if "${" in value:
        _TEMPLATED_SEEN.append(value)
    if "\0" in value:
        _refuse(source, what, value, "holds a NUL character")
    if _URL_RE.match(value) or value.startswith("remote://"):
        _refuse(source, what, value, "is a URL: DVC would reach it with your credentials")
    literal = re.sub(r"\$\{[^}]*\}", "x", value)
    if literal.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", literal):
        _refuse(source, what, value, "is an absolute path outside the checkout")
    joined = os.path.normpath(os.path.join(folder or ".", literal))
    if joined == ".." or joined.startswith("../") or os.path.isabs(joined):
        _refuse(source, what, value, "climbs out of the checkout with '..'")
    base = Path(checkout).resolve()
    try:
        target = (base / joined).resolve(strict=False)
    except (OSError, RuntimeError):
        _refuse(source, what, value, "goes through a symbolic link loop")
        return
    if target != base and base not in target.parents:
        _refuse(
            source,
            what,
            value,
            f"resolves to {target}, outside the checkout, through a symbolic link",
        )


def _check_vars(checkout: Path, folder: str, items: Any, source: str) -> None:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            _check_path(checkout, folder, item.split(":", 1)[0], source, "the vars file")


def _check_stage(checkout: Path, folder: str, stage: Mapping[str, Any], source: str) -> None:
    here = folder
    wdir = stage.get("wdir")
    if isinstance(wdir, str):
        _check_path(checkout, folder, wdir, source, "the wdir")
        here = _under(folder, wdir) if "${" not in wdir else folder
    _check_vars(checkout, here, stage.get("vars"), source)
    for key in ("deps", "outs", "metrics", "plots"):
        entries = stage.get(key)
        for item in entries if isinstance(entries, list) else []:
            if isinstance(item, Mapping):
                if "repo" in item:
                    _refuse(
                        source,
                        f"the {key[:-1]}",
                        str(item.get("path")),
                        "is imported from another repository: DVC would fetch it with your "
                        "git credentials",
                    )
                path = item.get("path")
                if isinstance(path, str):
                    _check_path(checkout, here, path, source, f"the {key[:-1]}")
                    continue
            for path in _declared_paths([item]):
                _check_path(checkout, here, path, source, f"the {key[:-1]}")
    params = stage.get("params")
    for item in params if isinstance(params, list) else []:
        if isinstance(item, Mapping):
            for pfile in item:
                _check_path(checkout, here, pfile, source, "the params file")
    do = stage.get("do")
    if isinstance(do, Mapping):
        _check_stage(checkout, here, do, source)


def check_untrusted_project(checkout: Path) -> bool:
    """Refuse (exit 2, naming the file and path) what would let the host's DVC leave the checkout.

    See the section comment above: links under ``.dvc/``, and every path of the project's
    ``dvc.yaml`` and ``*.dvc`` files (``dvc.lock`` only names dvc.yaml's paths again). Returns
    whether some path is templated (``${...}``): those are checked again, resolved, by
    :func:`check_resolved_paths`.
    """
    checkout = Path(checkout)
    _TEMPLATED_SEEN.clear()
    _check_dvc_dir(checkout)
    for rel in _dvc_files(checkout):
        if (checkout / rel).is_symlink():
            _refuse(rel, "the file", rel, "is a symbolic link")
        if (checkout / rel).stat().st_size > MAX_CONFIG_BYTES * 16:
            _refuse(rel, "the file", rel, "is too large for a DVC file")
        doc = _load_yaml(checkout, rel)
        if not isinstance(doc, Mapping):
            continue
        folder = _folder(rel)
        name = PurePosixPath(rel).name
        if name == "dvc.lock":
            # Its paths are relative to each stage's wdir and only ever matched against
            # dvc.yaml's: DVC takes hashes from it, never paths.
            continue
        if name != "dvc.yaml":  # a .dvc file
            _check_stage(checkout, folder, doc, rel)
            continue
        _check_vars(checkout, folder, doc.get("vars"), rel)
        for key in ("metrics", "plots", "params"):
            for path in _declared_paths(doc.get(key)):
                _check_path(checkout, folder, path, rel, f"the {key} file")
        plots = doc.get("plots")
        for item in plots if isinstance(plots, list) else []:
            if isinstance(item, Mapping):
                for opts in item.values():
                    y = opts.get("y") if isinstance(opts, Mapping) else None
                    for path in y if isinstance(y, Mapping) else []:
                        _check_path(checkout, folder, path, rel, "the plots file")
        artifacts = doc.get("artifacts")
        for art in artifacts.values() if isinstance(artifacts, Mapping) else []:
            if isinstance(art, Mapping):
                _check_path(checkout, folder, art.get("path"), rel, "the artifact")
        stages = doc.get("stages")
        for stage in stages.values() if isinstance(stages, Mapping) else []:
            if isinstance(stage, Mapping):
                _check_stage(checkout, folder, stage, rel)
    return bool(_TEMPLATED_SEEN)


#: Run in DVC's own interpreter: every stage's resolved deps, outs and params files.
_LIST_PATHS = """
import json, os, sys
from dvc.repo import Repo
root = os.path.realpath(sys.argv[1])
found = []
with Repo(root) as repo:
    for stage in repo.index.stages:
        folder = os.path.relpath(os.path.realpath(stage.wdir), root)
        for kind, items in (("out", stage.outs), ("dep", stage.deps)):
            for item in items:
                found.append([stage.relpath, folder, kind, str(item.def_path)])
print(json.dumps(found))
"""


def _dvc_python() -> str | None:
    """The interpreter of reprobox's own DVC, or of the ``dvc`` on PATH (its ``#!`` line)."""
    if _bundled_dvc():
        return sys.executable
    exe = shutil.which("dvc")
    if exe is None:
        return None
    try:
        with open(exe, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode("utf-8", "replace").split()
    if not parts:
        return None
    if os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if os.access(parts[0], os.X_OK) else None


def check_resolved_paths(checkout: Path, env: Mapping[str, str]) -> None:
    """Templated paths, once DVC resolved them: refused like literal ones when they leave.

    DVC itself resolves ``${...}`` (``vars``, ``foreach``, ``matrix``), in its own interpreter,
    with ``env`` (no credentials: nothing is fetched). Without a DVC that reprobox can ask, a
    templated path is refused: unresolved, it could name any host file (DVC removes a stage's
    outputs before running it).
    """
    python = _dvc_python()
    if python is None:
        _refuse(
            "dvc.yaml",
            "the templated path",
            _TEMPLATED_SEEN[0] if _TEMPLATED_SEEN else "",
            "cannot be resolved before DVC runs (no Python-based `dvc` on PATH to ask)",
        )
    try:
        done = proc.run(
            [python, "-c", _LIST_PATHS, str(Path(checkout).resolve())],
            cwd=checkout,
            env=dict(env),
            what="resolving the DVC pipeline's paths",
            timeout=300,
        )
    except CommandError as exc:
        tail = redact_text(exc.stderr_tail.strip())
        raise DvcError(
            "DVC could not read the pipeline of the checkout:\n    "
            + "\n    ".join(tail.splitlines()[-5:]),
            "run `dvc stage list` in the project to see what is wrong",
        ) from None

    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DvcError("DVC's list of the pipeline's paths is unreadable") from None
    for source, folder, kind, path in found:
        folder = "" if folder == "." else folder
        if folder == ".." or folder.startswith("../") or os.path.isabs(folder):
            _refuse(source, "the wdir", folder, "resolves outside the checkout")
        _check_path(checkout, folder, path, source, f"the {kind} (resolved)")


def checkout_remote(checkout: Path) -> tuple[str | None, str | None]:
    """(name, URL) of the default remote the checkout's committed ``.dvc/config`` asks for."""
    parser = _checkout_config(checkout)
    if parser is None:
        return None, None
    name = parser.get("core", "remote", fallback="").strip() or None
    url = _remotes_of(parser).get(name) if name else None
    return name, url


def choose_trusted_remote(
    checkout: Path, user_root: Path | None, dvc_remote: str | None = None
) -> TrustedRemote:
    """The remote to pull from: ``--dvc-remote``, or the checkout's when it equals a trusted one.

    Refused (exit 2) when the checkout names a remote that is not among the user's, naming the
    remote, its URL and the file.
    """
    if dvc_remote is not None and (
        not dvc_remote.strip() or any(ord(c) < 32 or c in "\x7f[]" for c in dvc_remote)
    ):
        raise UsageError(
            f"--dvc-remote {dvc_remote!r} is not a remote URL or folder",
            "give a URL such as s3://bucket/path or a folder path",
        )
    trusted = trusted_remotes(user_root, dvc_remote)
    if dvc_remote:
        return trusted[0]
    name, url = checkout_remote(checkout)
    if url is not None:
        wanted = normalize_remote_url(url, Path(checkout) / ".dvc")
        for remote in trusted:
            if remote.url == wanted:
                return remote
        raise UsageError(
            f"refusing the DVC remote {name!r} ({strip_url(url)}) of the checkout's "
            ".dvc/config: it is none of your DVC remotes, and the checkout may come from an "
            "untrusted source, so it is not used with your credentials",
            f"if you trust it: `reprobox run --dvc-remote {strip_url(url)} ...`, or "
            f"`dvc remote add --global {name} {strip_url(url)}` once",
        )
    for remote in trusted:
        if (name and remote.name == name) or (not name and remote.default):
            return remote
    raise DvcError(
        "this DVC project has no default remote you trust to pull the data from"
        + (f" (the checkout's .dvc/config names {name!r} without a URL)" if name else ""),
        "give it on the command line: `reprobox run --dvc-remote <url> ...`, or configure it "
        "once with `dvc remote add --global -d storage <url>`",
    )


def strip_url(url: str) -> str:
    return strip_url_credentials(url)


def write_trusted_config(
    checkout: Path, remote: TrustedRemote, cache_dir: Path, local_from: Path | None
) -> None:
    """The checkout's ``.dvc/config`` and ``.dvc/config.local``, written by reprobox alone.

    ``.dvc/config`` names the trusted remote (and defines it for ``--dvc-remote``); the local
    file holds the shared cache and, when the remote comes from the user's own
    ``.dvc/config.local``, that file's settings (credentials: cut back by :func:`drop_local`
    before any command runs). Written through a temporary file renamed over the old one, which
    replaces a link instead of following it.
    """
    dvc_dir = Path(checkout) / ".dvc"
    _check_dvc_dir(Path(checkout))
    # DVC's own scratch state is never taken from a checkout (it is git-ignored; one committed
    # by force is not DVC's).
    if (dvc_dir / "tmp").is_dir():
        shutil.rmtree(dvc_dir / "tmp")
    lines = ["[core]", f"    remote = {remote.name}"]
    if remote.source == "--dvc-remote":
        lines += [f"['remote \"{remote.name}\"']", f"    url = {remote.url}"]
    write_atomic(dvc_dir / "config", "\n".join(lines) + "\n")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    if local_from is not None and remote.source == str(local_from):
        got = _read_config(local_from)
        if got is not None:
            parser = got
    if not parser.has_section("cache"):
        parser.add_section("cache")
    parser.set("cache", "dir", str(Path(cache_dir).resolve()))
    # Copies, never links into the shared cache: the checkout is handed to the container.
    parser.set("cache", "type", "reflink,copy")

    text = io.StringIO()
    parser.write(text)
    write_atomic(dvc_dir / "config.local", text.getvalue(), mode=0o600)


def drop_local(checkout: Path, cache_dir: Path) -> None:
    """Cut the checkout's ``.dvc/config.local`` down to the cache (no credential stays where the
    container can read it)."""
    write_atomic(
        Path(checkout) / ".dvc" / "config.local",
        f"[cache]\n    dir = {Path(cache_dir).resolve()}\n    type = reflink,copy\n",
        mode=0o600,
    )
