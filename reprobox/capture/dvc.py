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
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .. import proc
from ..errors import CommandError, DvcError, ReproboxError
from ..model import DvcInfo, DvcOutput, canonical_json
from ..redact import redact_text

log = logging.getLogger("reprobox.capture.dvc")

#: The command recorded for an experiment that is "the DVC pipeline".
DVC_PIPELINE_COMMAND = "dvc repro"

_INSTALL_HINT = "install DVC where reprobox runs: `pip install dvc` (with the extra for your remote, e.g. `pip install 'dvc[s3]'`)"
_SKIP_DIRS = {".git", ".dvc", ".reprobox", ".venv", "venv", "node_modules", "__pycache__", ".tox"}
_MAX_WALK_ENTRIES = 200_000
_HASH_KEYS = ("md5", "etag", "checksum", "version_id")


def is_dvc_project(root: Path) -> bool:
    """True when ``root`` holds a ``.dvc`` folder (``dvc init`` was run there)."""
    return (Path(root) / ".dvc").is_dir()


# --------------------------------------------------------------------------- reading


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DvcError(
            f"{path} is not valid YAML{where}",
            "fix it so that `dvc status` works, then capture again",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DvcError(f"cannot read {path}: {exc}") from None


def _dvc_files(root: Path) -> list[str]:
    """Repo-relative paths of every dvc.yaml, dvc.lock and *.dvc file of the project.

    Git knows them all (they are committed, or at least not ignored) and answers at once even in
    a project with millions of data files; without git, a walk that skips hidden folders.
    """
    names: list[str] = []
    try:
        done = proc.run(
            [
                "git",
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
        if done.returncode == 0:
            names = [n for n in done.stdout.split("\0") if n and (Path(root) / n).is_file()]
            return sorted(set(names))
    except ReproboxError:
        pass
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
    config = Path(root) / ".dvc" / "config"  # never config.local: that is where secrets live
    if not config.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(config.read_text(encoding="utf-8"))
    except (configparser.Error, OSError, UnicodeDecodeError):
        m = re.search(r"^\s*remote\s*=\s*(\S+)", config.read_text(errors="replace"), re.MULTILINE)
        return m.group(1) if m else None
    name = parser.get("core", "remote", fallback=None)
    return name.strip() if name else None


def _lock_digest(root: Path, locks: list[str]) -> str | None:
    """sha256 of ``dvc.lock`` (what ``sha256sum dvc.lock`` prints) for the usual single lock at
    the root; with several lock files, sha256 over their sorted ``path -> sha256`` list."""
    if not locks:
        return None
    digests = {rel: hashlib.sha256((Path(root) / rel).read_bytes()).hexdigest() for rel in locks}
    if list(digests) == ["dvc.lock"]:
        return digests["dvc.lock"]
    return hashlib.sha256(canonical_json(sorted(digests.items()))).hexdigest()


def dvc_info(root: Path) -> DvcInfo | None:
    """What DVC recorded about the data of the project at ``root``; None if it is not one."""
    root = Path(root)
    if not is_dvc_project(root):
        return None
    files = _dvc_files(root)
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
        doc = _load_yaml(root / rel)
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
        lock = _load_yaml(root / lock_rel)
        recorded = lock.get("stages") if isinstance(lock, Mapping) else None
        for stage_name, stage in recorded.items() if isinstance(recorded, Mapping) else []:
            if not isinstance(stage, Mapping):
                continue
            # foreach/matrix stages are locked as "name@key"; their wdir is the template's
            here = wdirs.get(str(stage_name).split("@", 1)[0], folder)
            for out in _outputs(stage.get("outs"), here, f"{prefix}{stage_name}"):
                outputs[out.path] = out
            for pfile, values in (stage.get("params") or {}).items():
                if isinstance(values, Mapping):
                    params.setdefault(_under(here, str(pfile)), {}).update(values)

    return DvcInfo(
        lock_digest=_lock_digest(root, locks),
        outputs=tuple(sorted(outputs.values(), key=lambda o: o.path)),
        params={k: dict(sorted(v.items())) for k, v in sorted(params.items())},
        stages=tuple(stages),
        remote=_default_remote(root),
        # "${...}" paths are templated: only DVC can resolve them, so they are left out.
        metrics_files=tuple(sorted({m for m in metrics if "${" not in m})),
    )


# --------------------------------------------------------------------------- for `reprobox run`


@dataclass(frozen=True)
class PullResult:
    """What ``dvc pull`` did: files downloaded from the remote and files placed in the tree."""

    fetched: int
    added: int
    output: str


def _dvc_exe(env: Mapping[str, str] | None = None) -> str:
    path = (env or os.environ).get("PATH")
    exe = shutil.which("dvc", path=path)
    if exe is None:
        raise DvcError("DVC is not installed (no `dvc` on PATH)", _INSTALL_HINT)
    return exe


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
) -> PullResult:
    """``dvc pull`` in ``workdir`` (a fresh worktree) from the project's default remote.

    ``cache_dir``: a DVC cache shared between runs, set in the worktree's ``.dvc/config.local``
    (DVC ignores that file in git), so that a second run finds everything there and downloads
    nothing. ``local_config_from``: a project root whose ``.dvc/config.local`` (remote
    credentials the user keeps out of git) is copied into the worktree first; it stays local.
    """
    workdir = Path(workdir)
    exe = _dvc_exe()
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
            [exe, "config", "--local", "cache.dir", str(cache_dir)],
            workdir,
            "configuring the DVC cache",
        )
    argv = [exe, "pull"]
    if jobs:
        argv += ["--jobs", str(int(jobs))]
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
    if env is not None and "PATH" in env:
        _dvc_exe(env)
    return ["dvc", "repro", "--force"]
