"""The venv backend: a virtualenv with the exact Python, installed from the hashed lock.

Where no container engine exists (a laptop without Docker, a CI runner, an HPC login node), the
environment is rebuilt as a virtualenv:

1. the interpreter: the exact ``X.Y.Z`` the capture ran, found on ``PATH``, in pyenv's
   ``versions/`` folder or among uv's managed Pythons; never "a 3.11" standing in for 3.11.7;
2. ``requirements.lock``, checked line by line against environment.json, installed with
   ``--require-hashes --no-deps`` (uv when present, else pip aimed at the venv with ``--python``)
   *offline*: every file comes from the host's wheelhouse (:mod:`reprobox.lock.wheelhouse`),
   where the host fetched it with its own index configuration and checked its sha256; the
   installer sees no index and no credential;
3. packages that came from no index (a git commit, an archive URL) next, with ``--no-deps``,
   from the same wheelhouse (fetched without credentials; unhashed ones are reported);
4. packages installed from a folder of the repository, from the *checkout*, editable if they were,
   at every run (the checkout is new each time), offline too (their build backend comes from the
   wheelhouse).

The venv is kept under ``~/.cache/reprobox/venvs/<environment digest>`` so that the next run of
any experiment with the same environment reuses it. A venv cannot be built elsewhere and renamed
into place (its scripts' ``#!`` lines and ``pyvenv.cfg`` name its folder), so it is built in place
under an exclusive file lock and becomes usable only once its marker file is written, last: an
interrupted build is never reused, it is rebuilt.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Mapping, Optional, Sequence

from .. import proc
from ..build import checked_lock, fetch_wheelhouse, read_sealed
from ..build.context import REINSTATE_SCRIPT, write_replay
from ..build.render import direct_source, replay_plan
from ..errors import InterpreterError, LockError, ReproboxError, UsageError
from ..lock import read_index_config
from ..lock import uv as lock_uv
from ..lock.wheelhouse import link_into
from ..model import grammar as validate
from ..model.envvars import is_replayable_name
from ..store import write_atomic
from .interface import Backend, Execution, GpuPlan, Prepared, Progress

if TYPE_CHECKING:  # pragma: no cover
    from ..lock.checks import Pin
    from ..lock.wheelhouse import Artifact
    from ..model import Environment
    from ..store import Store, StoredExperiment

LOCK_FILE = "requirements.lock"
MARKER = ".reprobox-venv.json"
MARKER_SCHEMA = "reprobox.venv/1"

#: Variables never passed from the host to a rerun: they would change what Python imports.
_SCRUBBED = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONNOUSERSITE",
    "PYTHONEXECUTABLE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "__PYVENV_LAUNCHER__",
)


def open_cache_lock(root: Path, key: str) -> IO[str]:
    """The lock file of one cached environment under ``root`` (created with its folder), open
    for ``flock``; a folder that cannot be one (a file, a dangling link, read-only) is named."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return open(root / f"{key}.lock", "a+")  # noqa: SIM115 - held until release
    except OSError as exc:
        raise UsageError(
            f"cannot keep environments in {root}: {exc.strerror or exc}",
            "point REPROBOX_VENV_DIR / REPROBOX_CONDA_DIR (or XDG_CACHE_HOME) at a folder "
            "you can write",
        ) from None


def venvs_dir() -> Path:
    """``$REPROBOX_VENV_DIR``, else ``$XDG_CACHE_HOME/reprobox/venvs`` (``~/.cache/...``)."""
    explicit = os.environ.get("REPROBOX_VENV_DIR")
    if explicit:
        if not os.path.isabs(explicit):  # relative to where reprobox happens to run: the repo
            raise UsageError(
                f"REPROBOX_VENV_DIR={explicit!r} is not an absolute path",
                "set it to an absolute folder, e.g. REPROBOX_VENV_DIR=$HOME/.cache/venvs",
            )
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "venvs"


def venv_key(environment_digest: str) -> str:
    """Folder name for an environment: 16 hex digits of its digest (short ``#!`` lines)."""
    return environment_digest.split(":", 1)[-1][:16]


# --------------------------------------------------------------------------- interpreter


_QUERY = (
    "import platform,sys,sysconfig;"
    "print(platform.python_implementation().lower(), platform.python_version(), "
    "int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))), sys.executable)"
)


def _interpreter_facts(exe: Path) -> Optional[tuple[str, str, bool, str]]:
    """(implementation, version, free-threaded, real executable) of ``exe``, or None if broken."""
    try:
        out = proc.run([str(exe), "-I", "-c", _QUERY], timeout=30, check=False)
    except ReproboxError:
        return None
    if out.returncode != 0:
        return None
    parts = (out.stdout or "").strip().split(" ", 3)
    if len(parts) != 4:
        return None
    return parts[0], parts[1], parts[2] == "1", parts[3]


def _path_candidates(version: str, environ: Mapping[str, str]) -> list[Path]:
    major, minor = version.split(".")[:2]
    names = (f"python{major}.{minor}", f"python{major}", "python")
    found: list[Path] = []
    for folder in (environ.get("PATH") or "").split(os.pathsep):
        if not folder:
            continue
        for name in names:
            cand = Path(folder) / name
            if cand.is_file() and os.access(cand, os.X_OK):
                found.append(cand)
    return found


def _pyenv_candidates(version: str, environ: Mapping[str, str]) -> list[Path]:
    root = Path(environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    major, minor = version.split(".")[:2]
    base = root / "versions" / version / "bin"
    return [p for p in (base / f"python{major}.{minor}", base / "python3") if p.is_file()]


def _uv_candidate(version: str) -> list[Path]:
    uv = proc.which("uv")
    if not uv:
        return []
    try:
        out = proc.run([uv, "python", "find", "--no-project", version], timeout=60, check=False)
    except ReproboxError:
        return []
    path = (out.stdout or "").strip().splitlines()
    return [Path(path[-1])] if out.returncode == 0 and path else []


def find_interpreter(
    version: str,
    implementation: str = "cpython",
    *,
    free_threaded: bool = False,
    environ: Optional[Mapping[str, str]] = None,
) -> Path:
    """The real executable of an installed Python whose version is exactly ``version``.

    Looks on ``PATH`` (``pythonX.Y``, ``pythonX``, ``python``), in pyenv's versions folder, then
    asks uv. A near version is never taken: numerics and wheels can change between patch releases.
    """
    environ = os.environ if environ is None else environ
    if implementation != "cpython":
        raise InterpreterError(
            f"the capture ran on {implementation} {version}; the venv backend rebuilds "
            "CPython only",
            "use `--backend docker` with a base image for that interpreter (`--base-image`)",
        )
    parts = version.split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:2]):
        raise InterpreterError(f"the recorded Python version {version!r} is not X.Y.Z")
    seen: set[str] = set()
    near: dict[str, str] = {}  # version -> first place it was found
    for finder in (_path_candidates, _pyenv_candidates):
        for cand in finder(version, environ):
            key = os.path.realpath(cand)
            if key in seen:
                continue
            seen.add(key)
            facts = _interpreter_facts(cand)
            if facts is None:
                continue
            impl, got, ft, real = facts
            if impl == implementation and got == version and ft == free_threaded:
                return Path(real)
            near.setdefault(got, str(cand))
    for cand in _uv_candidate(version):
        facts = _interpreter_facts(cand)
        if facts and facts[:3] == (implementation, version, free_threaded):
            return Path(facts[3])
    found = ", ".join(f"{v} at {p}" for v, p in sorted(near.items())[:4])
    found = f" (found {found})" if found else ""
    raise InterpreterError(
        f"Python {version} is not installed here: looked on PATH, in pyenv's versions folder and "
        f"among uv's Pythons{found}",
        f"install it with `uv python install {version}` (or `pyenv install {version}`), "
        "then run again; or use `--backend docker`",
    )


# --------------------------------------------------------------------------- install plan


@dataclass(frozen=True)
class InstallPlan:
    """What goes into the venv beyond ``requirements.lock``.

    ``external``: requirement strings installed once with the venv (VCS at a commit, archives
    with their hash). ``in_repo``: (repo-relative folder, editable) installed from the checkout at
    every run. ``unavailable``: packages no rebuild can provide, with the reason.
    """

    external: tuple[str, ...] = ()
    in_repo: tuple[tuple[str, bool], ...] = ()
    unavailable: tuple[str, ...] = ()
    #: What the host fetches (without credentials) for ``external``.
    sources: tuple = ()


def install_plan(environment: "Environment") -> InstallPlan:
    """Split the recorded packages that no index serves into what can and cannot be rebuilt.

    A folder or ``file://`` archive outside the repository is refused (exit 2, naming the
    package): nothing of this machine is read for a capture.
    """
    external: list[str] = []
    sources = []
    in_repo: list[tuple[str, bool]] = []
    unavailable: list[str] = []
    for pkg in environment.packages:
        src = pkg.source
        name = validate.package_name(pkg.name, f"packages[{pkg.name}].name")
        if src.kind == "index":
            continue
        if src.kind in ("vcs", "archive"):
            line, direct = direct_source(pkg, f"packages[{name}].source")
            external.append(line.replace("file:///tmp/reprobox/wheels/direct/", "file://{wheels}/"))
            sources.append(direct)
        elif src.kind == "directory":
            if src.in_repo and src.path is not None:
                rel = validate.relpath(f"packages[{name}].source.path", src.path)
                in_repo.append((rel, src.editable))
            else:
                where = src.path or src.url or "a local folder"
                raise UsageError(
                    f"package {name} {pkg.version} was installed from the folder {where}, "
                    "outside the repository: reprobox never reads a folder of this machine "
                    "for a capture",
                    "move the package into the repository (or install it from an index) and "
                    "re-capture",
                )
    return InstallPlan(tuple(external), tuple(in_repo), tuple(unavailable), tuple(sources))


# --------------------------------------------------------------------------- installers


def install_pins_offline(
    installer: "Installer", pins: Sequence["Pin"], wheels: Path, into: Path, say: Progress
) -> None:
    """The checked pins, installed with ``installer`` from the wheelhouse folder ``wheels``
    only (each with its hashes, no dependencies): the lock as reprobox wrote it again from the
    checked pins, never the capture's own file."""
    say(
        f"installing the locked packages with {installer.name}, offline from the wheelhouse "
        "(hashes checked)"
    )
    requirements = wheels / "requirements.txt"
    requirements.write_text("".join(p.requirement + "\n" for p in pins))
    installer.install(
        ["--require-hashes", "--no-deps", "-r", str(requirements)],
        wheels=wheels,
        what=f"installing {LOCK_FILE} into {into}",
    )


def installer_choice() -> str:
    """``REPROBOX_VENV_INSTALLER``: ``pip`` forces pip where uv is installed but unwanted;
    ``uv``; empty for uv when installed. Anything else is refused, also when no venv is built."""
    choice = os.environ.get("REPROBOX_VENV_INSTALLER", "").strip().lower()
    if choice not in ("", "uv", "pip"):
        raise UsageError(
            f"REPROBOX_VENV_INSTALLER={choice[:80]!r} is neither uv nor pip",
            "set it to `uv` or `pip`, or unset it",
        )
    return choice


class Installer:
    """Installs requirement files / strings into a venv with uv, else with the host's pip."""

    def __init__(self, python: Path) -> None:
        self.python = python
        choice = installer_choice()
        self.uv: Optional[str] = None
        if choice != "pip":
            # the uv package reprobox depends on (beside reprobox, also where that is not on
            # PATH: pipx), else one on PATH
            found = lock_uv.find_uv()
            self.uv = str(found) if found is not None else proc.which("uv")
        if choice == "uv" and not self.uv:
            raise UsageError(
                "REPROBOX_VENV_INSTALLER=uv but uv is not installed", proc.INSTALL_HINTS["uv"]
            )

    @property
    def name(self) -> str:
        return "uv" if self.uv else "pip"

    def _argv(self, wheels: Path) -> list[str]:
        """Offline, from ``wheels`` only: no index, no configuration file, no cache."""
        if self.uv:
            return [
                self.uv,
                "pip",
                "install",
                "--python",
                str(self.python),
                "--offline",
                "--no-index",
                "--no-cache",
                "--no-config",
                "--find-links",
                str(wheels),
            ]
        return [
            sys.executable,
            "-m",
            "pip",
            "--isolated",
            "--python",
            str(self.python),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            str(wheels),
        ]

    def install(
        self, args: Sequence[str], *, wheels: Path, what: str, timeout: float = 3600
    ) -> None:
        argv = self._argv(wheels)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _SCRUBBED and not k.startswith(("PIP_", "UV_"))
        }
        proc.run(
            [*argv, *args],
            env=env,
            timeout=timeout,
            what=what,
            hint="every file comes from the wheelhouse, where its hash was checked; a package "
            "that needs a build backend other than setuptools cannot be built offline: install "
            "it from a wheel and re-capture",
        )


def _fetch(
    store: "Store",
    stored: "StoredExperiment",
    pins: Sequence["Pin"],
    plan: InstallPlan,
    say: Progress,
) -> tuple[tuple["Artifact", ...], tuple[str, ...]]:
    """The host fetches every file the venv installs into its wheelhouse (hash-checked), as a
    build does (:func:`reprobox.build.fetch_wheelhouse`): the build backend too when a package
    is installed from the checkout."""
    fetched = fetch_wheelhouse(
        store,
        stored,
        pins,
        plan.sources,
        read_index_config(),
        backend=bool(plan.in_repo),
        progress=say,
    )
    say(f"wheelhouse: {len(fetched.artifacts)} file(s), {fetched.fetched} fetched")
    return fetched.artifacts, tuple(a.describe() for a in fetched.unverified)


def _lock_file(stored: "StoredExperiment") -> Path:
    path = stored.file(LOCK_FILE)
    if not path.is_file():
        raise LockError(
            f"experiment {stored.id} has no {LOCK_FILE}, so its packages cannot be installed "
            "with verified hashes",
            f"write it with `reprobox lock {stored.id}` (needs the package index), then run again",
        )
    return path


# --------------------------------------------------------------------------- the backend


class VenvBackend(Backend):
    name = "venv"

    def __init__(self, cache_root: Optional[Path] = None) -> None:
        self.cache_root = Path(cache_root) if cache_root else venvs_dir()

    # ---------------------------------------------------------------- prepare

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
        lock = _lock_file(stored)

        installer_choice()  # refused whether or not a venv is built this time
        pins = checked_lock(stored) or ()
        lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
        plan = install_plan(env)
        key = venv_key(env.digest)
        venv = self.cache_root / key
        lock_fh = open_cache_lock(self.cache_root, key)
        prepared: Optional[Prepared] = None
        try:
            fcntl.flock(lock_fh, fcntl.LOCK_EX)
            marker = _read_marker(venv)
            reused = bool(
                marker
                and marker.get("lock_sha256") == lock_sha
                and marker.get("external") == list(plan.external)
                and (venv / "bin" / "python").exists()
            )
            if reused and marker and marker.get("tree") != tree_digest(venv):
                # a run changed it (deleted or rewrote a file): another environment now
                say(f"the virtualenv {venv} was changed since it was last prepared: rebuilding")
                reused = False
            t0 = time.monotonic()
            wheels: Optional[Path] = None
            unverified: tuple[str, ...] = ()
            if not reused or plan.in_repo:
                artifacts, unverified = _fetch(store, stored, pins, plan, say)
                wheels = Path(tempfile.mkdtemp(prefix="reprobox-wheels-"))
                link_into(artifacts, wheels)
            try:
                if reused:
                    say(f"reusing the virtualenv {venv}")
                else:
                    assert wheels is not None
                    self._build(venv, env, pins, lock_sha, plan, wheels, say)
                python = venv / "bin" / "python"
                if plan.in_repo:
                    assert wheels is not None
                    self._install_in_repo(python, checkout, plan, wheels, say)
                self._reinstate(python, stored, say)
                seal_tree(venv)  # what the next run's reuse compares against
            finally:
                if wheels is not None:
                    shutil.rmtree(wheels, ignore_errors=True)
            detail = "reused" if reused else f"built in {time.monotonic() - t0:.1f} s"
            prepared = Prepared(
                backend=self.name,
                handle=str(venv),
                description=f"virtualenv {venv} (Python {env.interpreter.version}, {detail})",
                reused=reused,
                python=str(python),
                unavailable_packages=plan.unavailable,
                notes=[f"not in the rebuilt environment: {u}" for u in plan.unavailable]
                + [
                    f"unverified: {u} (no hash in the capture; fetched without credentials)"
                    for u in unverified
                ],
            )
            if not plan.in_repo:
                # Others may use the same venv at the same time; only a rebuild is exclusive.
                fcntl.flock(lock_fh, fcntl.LOCK_SH)
            prepared._resources.append(lock_fh)
            return prepared
        finally:
            if prepared is None:
                lock_fh.close()

    def _build(
        self,
        venv: Path,
        env: "Environment",
        pins: Sequence["Pin"],
        lock_sha: str,
        plan: InstallPlan,
        wheels: Path,
        say: Progress,
    ) -> None:
        interp = env.interpreter
        python = find_interpreter(
            interp.version, interp.implementation, free_threaded=interp.gil_disabled
        )
        if venv.exists() or venv.is_symlink():
            shutil.rmtree(venv) if not venv.is_symlink() else venv.unlink()
        say(f"creating a virtualenv with Python {interp.version} ({python}) at {venv}")
        try:
            proc.run(
                [str(python), "-m", "venv", "--without-pip", str(venv)],
                timeout=300,
                what=f"creating the virtualenv {venv}",
            )
            vpy = venv / "bin" / "python"
            installer = Installer(vpy)
            if pins:
                install_pins_offline(installer, pins, wheels, venv, say)
            if plan.external:
                say(f"installing {len(plan.external)} package(s) from version control / URLs")
                installer.install(
                    ["--no-deps", *(r.replace("{wheels}", str(wheels)) for r in plan.external)],
                    wheels=wheels,
                    what="installing the packages that came from no index",
                )
            marker = {
                "schema": MARKER_SCHEMA,
                "environment_digest": env.digest,
                "lock_sha256": lock_sha,
                "external": list(plan.external),
                "python": str(python),
                "installer": installer.name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }

            write_atomic(venv / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise

    def _install_in_repo(
        self, python: Path, checkout: Path, plan: InstallPlan, wheels: Path, say: Progress
    ) -> None:
        installer = Installer(python)
        # PEP 660 editable installs (pip: --use-pep517; uv always): metadata and entry points in
        # the venv's site-packages, nothing written into the checkout (a legacy develop install
        # would put its egg-info there)
        args: list[str] = ["--no-deps"] + ([] if installer.uv else ["--use-pep517"])
        for rel, editable in plan.in_repo:
            folder = validate.path_inside(checkout, rel, "package folder")
            if not folder.is_dir():
                raise UsageError(
                    f"the package folder {rel} recorded in the capture is not in the checkout",
                    "the capture was made with a folder that is not committed; commit it and "
                    "capture again",
                )
            args += ["-e", str(folder)] if editable else [str(folder)]
        say(f"installing {len(plan.in_repo)} package(s) from the checkout")
        installer.install(args, wheels=wheels, what="installing the repository's own packages")

    def _reinstate(self, python: Path, stored: "StoredExperiment", say: Progress) -> None:
        """Write the post-install changes the capture carried back over the installed files
        (``reprobox/build/reinstate.py``, run by the venv's interpreter; idempotent)."""
        replay = replay_plan(stored.environment)
        if not replay:
            return
        say(f"re-applying {len(replay)} post-install change(s) recorded by the capture")
        with tempfile.TemporaryDirectory(prefix="reprobox-replay-") as tmp:
            folder = Path(tmp)
            write_replay(
                folder, replay, {name: read_sealed(stored, name) for _p, _q, name, _d in replay}
            )
            proc.run(
                [
                    str(python),
                    "-I",
                    str(REINSTATE_SCRIPT),
                    str(folder / "manifest.json"),
                    str(folder),
                ],
                timeout=300,
                what="re-applying post-install changes",
                hint="the rebuilt environment does not hold the file the capture changed",
            )

    # ---------------------------------------------------------------- run

    def command_env(self, prepared: Prepared, env: Mapping[str, str]) -> dict[str, str]:
        """The host's environment, minus what would leak another Python in, plus the venv."""
        out = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        # A replayable variable set here but not recorded would change the numbers: unset it.
        for name in list(out):
            if is_replayable_name(name) and name not in env:
                del out[name]
        venv = Path(prepared.handle)
        out["VIRTUAL_ENV"] = str(venv)
        out["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
        out.update(env)
        return out

    def execute(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        checkout: Path,
        cwd: str = ".",
        env: Mapping[str, str],
        capture: bool = False,
        network: Optional[str] = None,
        gpus: bool = False,
    ) -> Execution:
        workdir = validate.path_inside(checkout, cwd, "cwd")
        full_env = self.command_env(prepared, env)
        if capture:
            done = proc.run(list(argv), cwd=workdir, env=full_env, check=False, timeout=None)
            return Execution(done.returncode, done.stdout or "", done.stderr or "")
        # Stream the command's output to stderr: stdout carries reprobox's result (--json).
        done = proc.run(
            ["/bin/sh", "-c", 'exec "$@" 1>&2', "sh", *argv],
            cwd=workdir,
            env=full_env,
            check=False,
            timeout=None,
            capture=False,
        )
        return Execution(done.returncode)

    def path_in_env(self, checkout: Path, path: Path) -> str:
        return str(path)

    def dvc_host_env(
        self,
        prepared: Prepared,
        *,
        checkout: Path,
        env: Mapping[str, str],
        scratch: Path,
        network: Optional[str] = None,
        gpus: bool = False,
    ) -> dict[str, str]:
        # DVC runs each stage with $SHELL -c: with the venv first on PATH, `python` is the venv's.
        out = self.command_env(prepared, env)
        out["SHELL"] = "/bin/sh"
        return out

    def gpu_plan(self, environment: "Environment") -> GpuPlan:
        gpus = environment.hardware.gpus
        if not gpus:
            return GpuPlan(False)
        if _host_has_nvidia_gpu():
            return GpuPlan(True)
        return GpuPlan(False, cpu_only_note(environment))


def _host_has_nvidia_gpu() -> bool:
    smi = proc.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = proc.run([smi, "-L"], timeout=20, check=False)
    except ReproboxError:
        return False
    return out.returncode == 0 and "GPU" in (out.stdout or "")


def cpu_only_note(environment: "Environment") -> str:
    """What the report says when a GPU capture reruns on the CPU."""
    gpus = environment.hardware.gpus
    names = sorted({g.name for g in gpus})
    return (
        f"this run was on CPU: the capture had {len(gpus)} NVIDIA GPU(s) ({', '.join(names)}), "
        "which this rerun cannot use. Code that requires CUDA fails, and code that falls back to "
        "the CPU computes with other kernels and summation orders, so floating-point metrics may "
        "differ slightly (compare with --rtol/--atol) and speed will differ"
    )


def tree_digest(prefix: Path, marker: str = MARKER) -> str:
    """A digest of every file and link under ``prefix`` by path, size, mode and modification
    time (bytecode caches and the ``marker`` file left out: a run writes those as it imports). A
    file a run deleted, added or rewrote changes it."""
    h = hashlib.sha256()
    for folder, dirs, names in os.walk(prefix):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")) or (folder == str(prefix) and name == marker):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            rel = os.path.relpath(path, prefix)
            h.update(
                f"{rel}\0{st.st_size}\0{st.st_mode}\0{st.st_mtime_ns}\n".encode(
                    "utf-8", "surrogateescape"
                )
            )
    return h.hexdigest()


def seal_tree(prefix: Path, marker: str = MARKER, schema: str = MARKER_SCHEMA) -> None:
    """Keep the :func:`tree_digest` of a prepared environment at ``prefix`` in its marker file,
    as the run about to start finds it: the next reuse compares against it."""
    data = read_marker(prefix / marker, schema)
    if data is None:
        return
    data["tree"] = tree_digest(prefix, marker)
    try:
        write_atomic(prefix / marker, json.dumps(data, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass  # an environment that cannot be marked is only rebuilt next time


def read_marker(path: Path, schema: str) -> Optional[dict]:
    """The marker file at ``path`` when it is one of ``schema``; else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != schema:
        return None
    return data


def _read_marker(venv: Path) -> Optional[dict]:
    return read_marker(venv / MARKER, MARKER_SCHEMA)
