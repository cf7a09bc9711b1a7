"""The conda backend: the captured conda environment recreated on the host, without solving.

For a capture of a conda-family environment (conda, mamba, micromamba, pixi, rattler):

1. every conda package of ``environment.json`` is checked against strict grammars, fetched on
   the host through its conda configuration (mirrors, custom channels, channel alias, tokens;
   ``file://`` channels read in place) and checked against its recorded md5 and sha256;
2. the archives are installed exactly as recorded with py-rattler (no solver, no network: from
   the checked local files), in a child process;
3. then the pip part: ``requirements.lock`` with ``--no-deps --require-hashes`` (pins), the
   packages that came from version control or URLs, and the repository's own packages from the
   checkout, as the venv backend does.

The prefix is kept under ``~/.cache/reprobox/conda-envs/<environment digest>``
(``REPROBOX_CONDA_DIR`` moves it), built in place under a file lock, usable once its marker
file is written last; an interrupted build is removed and redone. Commands run with the prefix's
``bin`` first on ``PATH`` and ``CONDA_PREFIX`` set. Like ``--backend venv``, this runs the recorded
command on the host: for trusted captures.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from .. import proc
from ..capture import conda as conda_mod
from ..errors import LockError, ReproboxError, UsageError
from ..build import checked_lock
from ..lock.condaconfig import read_conda_config
from ..lock.condafetch import cache_dir, check_package, fetch, require_conda, require_url
from ..lock.config import read_index_config
from ..lock.select import capture_target
from ..lock.wheelhouse import build_target, fetch_locked, link_into
from ..model import grammar as validate
from ..store import write_atomic
from .interface import RUN_DIR, Prepared, Progress
from .venv import (
    _SCRUBBED,
    LOCK_FILE,
    VenvBackend,
    Installer,
    install_pins_offline,
    install_plan,
    open_cache_lock,
    read_marker,
    seal_tree,
    tree_digest,
    venv_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..lock.checks import Pin
    from ..model import CondaEnvironment, Environment, Package
    from ..store import Store, StoredExperiment

MARKER = ".reprobox-conda.json"
MARKER_SCHEMA = "reprobox.conda-env/1"


class CondaInstallError(ReproboxError):
    """py-rattler could not install the fetched packages."""


def conda_envs_dir() -> Path:
    explicit = os.environ.get("REPROBOX_CONDA_DIR")
    if explicit:
        if not os.path.isabs(explicit):  # relative to where reprobox happens to run: the repo
            raise UsageError(
                f"REPROBOX_CONDA_DIR={explicit!r} is not an absolute path",
                "set it to an absolute folder, e.g. REPROBOX_CONDA_DIR=$HOME/.cache/conda-envs",
            )
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "conda-envs"


def _require_rattler() -> None:
    try:  # lazy: py-rattler is an optional extra (~25 ms); only checks that it is installed
        import rattler  # noqa: F401
    except ImportError:
        raise UsageError(
            "--backend conda installs conda packages with py-rattler, which is not installed",
            "install reprobox with its conda extra: `pip install 'reprobox[conda]'`",
        ) from None


class CondaBackend(VenvBackend):
    name = "conda"

    def __init__(self, cache_root: Optional[Path] = None) -> None:
        super().__init__(cache_root or conda_envs_dir())

    def prepare(
        self,
        store: "Store",
        stored: "StoredExperiment",
        checkout: Path,
        *,
        network: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> Prepared:
        say = progress or (lambda _m: None)
        env = stored.environment
        conda_env = require_conda(env, stored.id)
        for pkg in conda_env.packages:  # untrusted record: checked before anything is fetched
            check_package(pkg)
            require_url(pkg)
        plan = install_plan(env)
        # requirement lines that name a host wheelhouse are the container/venv builds' business
        external = tuple(r for r in plan.external if "{wheels}" not in r)
        unavailable = plan.unavailable + tuple(
            f"{r.split(' @ ', 1)[0]}: a local archive, installed by the docker and venv backends "
            "only"
            for r in plan.external
            if "{wheels}" in r
        )
        lock = stored.file(LOCK_FILE)
        has_pip = any(p.source.kind == "index" for p in env.packages)
        if has_pip and not lock.is_file():
            raise LockError(
                f"experiment {stored.id} has pip packages but no {LOCK_FILE}, so they cannot be "
                "installed with verified hashes",
                f"write it with `reprobox lock {stored.id}` (needs the package index)",
            )
        # The lock of a capture is untrusted: checked line by line against environment.json;
        # the files come from the host's wheelhouse (its own indexes, by name, version and
        # hash), never through pip reading the capture's file.
        pins = (checked_lock(stored) or ()) if has_pip else ()
        lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest() if has_pip else None
        key = venv_key(env.digest)
        prefix = self.cache_root / key
        lock_fh = open_cache_lock(self.cache_root, key)
        prepared: Optional[Prepared] = None
        try:
            fcntl.flock(lock_fh, fcntl.LOCK_EX)
            marker = _read_marker(prefix)
            reused = bool(
                marker
                and marker.get("environment_digest") == env.digest
                and marker.get("lock_sha256") == lock_sha
                and marker.get("external") == list(external)
            )
            if reused and marker and marker.get("tree") != tree_digest(prefix, MARKER):
                # a run changed it (deleted, added or rewrote a file): another environment now
                say(
                    f"the conda environment {prefix} was changed since it was last prepared: "
                    "rebuilding"
                )
                reused = False
            t0 = time.monotonic()
            if reused:
                say(f"reusing the conda environment {prefix}")
            else:
                self._build_prefix(prefix, env, conda_env, pins, lock_sha, external, say)
            python = prefix / "bin" / "python"
            if plan.in_repo:
                _install_in_repo(python, checkout, plan.in_repo, say)
            seal_tree(prefix, MARKER, MARKER_SCHEMA)  # what the next run's reuse compares against
            detail = "reused" if reused else f"built in {time.monotonic() - t0:.1f} s"
            prepared = Prepared(
                backend=self.name,
                handle=str(prefix),
                description=(
                    f"conda environment {prefix} ({len(conda_env.packages)} conda "
                    f"packages, {len(env.packages)} pip packages, {detail})"
                ),
                reused=reused,
                python=str(python),
                unavailable_packages=unavailable,
                notes=[f"not in the rebuilt environment: {u}" for u in unavailable],
            )
            if not plan.in_repo:
                fcntl.flock(lock_fh, fcntl.LOCK_SH)
            prepared._resources.append(lock_fh)
            return prepared
        finally:
            if prepared is None:
                lock_fh.close()

    def _build_prefix(
        self,
        prefix: Path,
        env: "Environment",
        conda_env: "CondaEnvironment",
        pins: Sequence["Pin"],
        lock_sha: Optional[str],
        external: Sequence[str],
        say: Progress,
    ) -> None:
        _require_rattler()
        if prefix.exists() or prefix.is_symlink():
            shutil.rmtree(prefix) if not prefix.is_symlink() else prefix.unlink()
        config = read_conda_config()
        say(f"fetching {len(conda_env.packages)} conda packages (md5 and sha256 checked)")
        fetched = []
        for pkg in conda_env.packages:
            path = fetch(pkg, config)
            fetched.append(
                {
                    "path": str(path),
                    "url": pkg.url,
                    "channel": pkg.channel,
                    "md5": pkg.md5,
                    "sha256": pkg.sha256,
                }
            )
        try:
            say(f"installing them into {prefix} with py-rattler (no solver)")
            install_archives(
                prefix,
                fetched,
                list(conda_env.requested_specs),
                cache_dir().parent / "rattler-cache",
            )
            python = prefix / "bin" / "python"
            if pins or external:
                if not python.exists():
                    raise CondaInstallError(
                        f"the conda environment has pip packages but no Python at {python}",
                        "the capture's conda packages lack the interpreter; re-capture it",
                    )
                if pins:
                    _install_pins(python, env, pins, prefix, say)
                if external:
                    pip_install(
                        python,
                        ["--no-deps", *external],
                        what="installing the packages that came from no index",
                    )

            marker = {
                "schema": MARKER_SCHEMA,
                "environment_digest": env.digest,
                "lock_sha256": lock_sha,
                "external": list(external),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_atomic(prefix / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        except BaseException:
            shutil.rmtree(prefix, ignore_errors=True)
            raise

    def command_env(self, prepared: Prepared, env: Mapping[str, str]) -> dict[str, str]:
        out = super().command_env(prepared, env)
        out.pop("VIRTUAL_ENV", None)
        out["CONDA_PREFIX"] = prepared.handle
        out["CONDA_DEFAULT_ENV"] = prepared.handle
        for name in _SCRUBBED:
            if name not in ("CONDA_PREFIX", "CONDA_DEFAULT_ENV"):
                out.pop(name, None)
        out.update(env)
        return out


def _install_pins(
    python: Path, env: "Environment", pins: Sequence["Pin"], prefix: Path, say: Progress
) -> None:
    """The checked pins, fetched by the host into a wheelhouse (its indexes, hashes checked),
    then installed offline from it, as the venv backend does."""
    say(f"fetching the {len(pins)} pip packages into the host's wheelhouse (hashes checked)")
    target = build_target(capture_target(env))
    config = read_index_config()
    tags = {p.name: p.wheel_tags for p in env.packages}
    artifacts = fetch_locked(pins, target, config, installed_tags=tags, progress=say).artifacts
    if any(not a.is_wheel for a in artifacts):  # what builds an sdist offline
        artifacts += fetch_locked((), target, config, backend=True, progress=say).artifacts
    wheels = Path(tempfile.mkdtemp(prefix="reprobox-wheels-"))
    try:
        link_into(artifacts, wheels)
        install_pins_offline(Installer(python), pins, wheels, prefix, say)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


def pip_install(python: Path, args: Sequence[str], *, what: str) -> None:
    """The host's pip (its index configuration) installing into the environment's Python."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    proc.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *args,
        ],
        env=env,
        timeout=3600,
        what=what,
        hint="check that the package index answers (`reprobox doctor`); if a hash does "
        "not match, the index serves another file than the one locked",
    )


def _install_in_repo(
    python: Path, checkout: Path, in_repo: Sequence[tuple[str, bool]], say: Progress
) -> None:
    """The repository's own packages, from the checkout (editable if they were)."""
    args: list[str] = ["--no-deps"]
    for rel, editable in in_repo:
        folder = validate.path_inside(checkout, rel, "package folder")
        if not folder.is_dir():
            raise UsageError(
                f"the package folder {rel} recorded in the capture is not in the checkout",
                "the capture was made with a folder that is not committed; commit it and "
                "capture again",
            )
        args += ["-e", str(folder)] if editable else [str(folder)]
    say(f"installing {len(in_repo)} package(s) from the checkout")
    pip_install(python, args, what="installing the repository's own packages")


def install_archives(
    prefix: Path,
    packages: list[dict[str, Any]],
    requested: list[str],
    cache: Path,
    attempts: int = 2,
) -> None:
    """Install checked local archives into ``prefix`` with py-rattler, in a child process."""
    request = json.dumps(
        {
            "prefix": str(prefix),
            "cache": str(cache),
            "packages": packages,
            "requested_specs": requested,
        }
    )
    last = ""
    for _ in range(attempts):
        done = proc.run(
            [sys.executable, "-m", "reprobox.payload.rattler_install"],
            input=request,
            check=False,
            timeout=1800,
            what=f"installing conda packages into {prefix}",
        )
        try:
            answer = json.loads((done.stdout or "").strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = None
        if isinstance(answer, dict) and answer.get("ok"):
            return
        if isinstance(answer, dict):
            last = str(answer.get("error"))
            break  # a reported failure is not a crash at exit: do not retry
        last = "\n".join((done.stderr or "").strip().splitlines()[-6:]) or (
            f"exit status {done.returncode}"
        )
        shutil.rmtree(prefix, ignore_errors=True)
    raise CondaInstallError(
        f"py-rattler could not install the conda packages into {prefix}: {last}",
        "run again; if it persists, report it with this message",
    )


def _read_marker(prefix: Path) -> Optional[dict]:
    return read_marker(prefix / MARKER, MARKER_SCHEMA)


def observe_conda(
    prefix: str, packages: Sequence["Package"], distributions: Sequence[Mapping[str, Any]]
) -> tuple[tuple["Package", ...], Optional["CondaEnvironment"]]:
    """What the rebuilt prefix holds: its conda records, and the Python distributions that no
    conda record owns (the pip part), split exactly as a capture splits them."""
    if not conda_mod.is_conda_prefix(prefix):
        return tuple(packages), None
    scan = conda_mod.read_prefix(prefix)
    kept, _warnings = conda_mod.split_distributions(packages, distributions, scan)
    return tuple(kept), scan.environment


#: Run inside a rebuilt environment (stdlib only): its conda-meta records, minus the large
#: ``paths_data``, and its history, as one JSON file for the host to parse.
DUMP_CONDA_META = """
import json, os, sys
meta = os.path.join(sys.argv[1], "conda-meta")
out = {"records": {}, "history": ""}
if os.path.isdir(meta):
    for name in sorted(os.listdir(meta)):
        path = os.path.join(meta, name)
        if name.endswith(".json"):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict):
                data.pop("paths_data", None)
            out["records"][name] = data
        elif name == "history":
            with open(path, encoding="utf-8", errors="replace") as f:
                out["history"] = f.read()
else:
    out = None
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(out, f)
"""


def observe_conda_inside(
    backend: Any,
    prepared: Prepared,
    checkout: Path,
    prefix: str,
    packages: Sequence["Package"],
    distributions: Sequence[Mapping[str, Any]],
) -> tuple[tuple["Package", ...], Optional["CondaEnvironment"]]:
    """:func:`observe_conda` for an environment only reachable by running in it (a container)."""
    run_dir = checkout / RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "conda-meta.json"
    done = backend.execute(
        prepared,
        ["python", "-I", "-c", DUMP_CONDA_META, prefix, backend.path_in_env(checkout, out)],
        checkout=checkout,
        cwd=".",
        env={},
        capture=True,
    )
    if done.returncode != 0 or not out.is_file():
        raise ReproboxError(
            f"could not read the conda records inside the rebuilt environment "
            f"(exit status {done.returncode})"
        )
    data = json.loads(out.read_text(encoding="utf-8"))
    if data is None:
        return tuple(packages), None
    records = [
        conda_mod.parse_record(rec, f"{prefix}/conda-meta/{name}")
        for name, rec in sorted(data["records"].items())
    ]
    scan = conda_mod.scan_records(Path(prefix), records, data.get("history") or "")
    kept, _warnings = conda_mod.split_distributions(packages, distributions, scan)
    return tuple(kept), scan.environment
