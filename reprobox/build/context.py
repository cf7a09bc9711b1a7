"""The build context of an experiment's image, and the secrets that go with it.

The context is made from the *recorded* commit, never from the user's working tree: ``git
archive`` of exactly the folders the image needs (the local packages), with the recorded patch
applied. Next to it: the checked lock (cut into one file per layer, written from the checked pins,
not copied from the capture), the files every Python step installs (hard links into the host's
wheelhouse, :mod:`reprobox.lock.wheelhouse`, where the host fetched and hash-checked them; one
folder per step, so that a step's cache key is exactly what it installs), the tools the RUN
steps bind-mount (uv, prune.py, finish_layer.py, packages.txt), ``meta/`` (what the install of the
project's own packages reads, see :func:`write_meta`) and the Dockerfile::

    <context>/Dockerfile  lock/  wheels/<step>/  tools/  src/  meta/

A two-part build's system part (system packages, CPython) has a context of its own beside it,
``<context>-system/`` (its Dockerfile, and uv when it installs CPython), so that it can be built
while this one is fetched and assembled (:func:`system_context`).

It lives in the user's cache folder under a stable path per experiment: BuildKit transfers only
what changed since the last build from the same folder, so a rebuild does not resend the uv binary
or the wheels. Nothing else of this machine is ever copied in: no path named by the capture.

No index configuration reaches the build: the Python steps install offline from ``wheels/``. The
steps that fetch from trusted sources (Debian's archive, the CPython download for a CUDA base) get
two build secrets, never files in the context or build arguments: ``reprobox-env`` (shell
``export`` lines: the proxies only) and ``reprobox-ca`` (the CA bundle pip is configured with).
Both live in a private temporary folder that is removed after the build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import unquote, urlsplit

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from .. import payload, proc
from ..errors import GitError, LockError, UsageError
from ..redact import strip_url_credentials
from ..store import StoredExperiment
from ..workspace.git import apply_patch, validate_commit
from ..lock.checks import Pin
from ..names import canonical_name
from ..lock.wheelhouse import Artifact, link_into, place_file
from .render import DIRECT_WHEELS, LOCAL_WHEELS, STAGE, DockerPlan, LockGroup

LOCK_FILE = "requirements.lock"
PRUNE_SCRIPT = payload.script("prune")
FINISH_LAYER_SCRIPT = payload.script("finish_layer")
REINSTATE_SCRIPT = Path(__file__).with_name("reinstate.py")


@dataclass(frozen=True)
class BuildContext:
    path: Path
    dockerfile: Path
    wheels: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- small file helpers


def write_if_changed(path: Path, data: bytes) -> None:
    """Keep the file (and its mtime) when the content is the same: BuildKit then skips it."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _link_or_copy(src: Path, dest: Path) -> None:
    """A hard link (same inode and mtime) where possible, else a copy keeping the mtime."""
    try:
        st_src, st_dest = src.stat(), dest.stat()
        if (st_src.st_ino == st_dest.st_ino and st_src.st_dev == st_dest.st_dev) or (
            st_src.st_size == st_dest.st_size and int(st_src.st_mtime) == int(st_dest.st_mtime)
        ):
            return
    except OSError:
        pass
    place_file(src, dest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_local(location: str) -> bool:
    return location.startswith("file:") or "://" not in location


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        return unquote(urlsplit(location).path)
    return location


# --------------------------------------------------------------------------- index forwarding


@dataclass(frozen=True)
class Forwarding:
    """What of the host's index configuration reaches the build, and how."""

    env: Mapping[str, str]  # variables for the `reprobox-env` secret
    ca_bundle: Optional[Path]
    build_args: Mapping[str, str]  # classic builder only: nothing secret
    has_secret_values: bool
    warnings: tuple[str, ...] = ()
    dropped_local: tuple[str, ...] = ()


def forward_index_config(config: Any) -> Forwarding:
    """What of the host's pip configuration (``reprobox.lock.IndexConfig``) the build may see.

    Only what the network steps for trusted sources need: proxies and the CA bundle. Index URLs,
    their credentials and netrc never reach a build (the host fetched every package already).
    """
    warnings: list[str] = []
    env: dict[str, str] = {}
    for scheme, names in (
        ("http", ("http_proxy", "HTTP_PROXY")),
        ("https", ("https_proxy", "HTTPS_PROXY")),
        ("no", ("no_proxy", "NO_PROXY")),
    ):
        value = config.proxies.get(scheme)
        if not value:
            continue
        for name in names:
            env[name] = value
        if scheme != "no" and re.search(r"//([^@/]*@)?(localhost|127\.|\[::1\])", value):
            warnings.append(
                f"the {scheme} proxy {strip_url_credentials(value)} is on this "
                "machine: a build container reaches it only with `--network host`"
            )
    ca: Optional[Path] = None
    if config.cert:
        ca = Path(config.cert)
        if not ca.is_file():
            raise UsageError(
                f"pip's CA bundle {config.cert} does not exist",
                f"fix `cert` in {config.origins.get('cert', 'pip.conf')}",
            )
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            env[name] = "/run/secrets/reprobox-ca"
    has_secret = any(strip_url_credentials(v) != v for v in env.values())
    return Forwarding(env, ca, {}, has_secret, tuple(warnings), ())


def secrets_env_text(env: Mapping[str, str]) -> str:
    """The ``reprobox-env`` secret: one ``export NAME=value`` line per variable, shell-quoted."""
    lines = ["# reprobox build secret: proxies and CA for the steps that reach trusted sources"]
    for key in sorted(env):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        lines.append(f"export {key}={shlex.quote(env[key])}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the lock


def lock_parts(
    pins: Sequence[Pin], groups: Sequence[LockGroup]
) -> tuple[dict[str, str], list[str]]:
    """The checked pins cut into one file per layer (``lock/<group file>``), and warnings.

    Written from the pins :func:`reprobox.lock.checks.check_requirements_lock` returned, never
    copied from the capture: no line reaches the installer that reprobox did not write.
    """
    by_name = {canonical_name(p.name): p for p in pins}
    files: dict[str, list[str]] = {g.file: [] for g in groups}
    warnings: list[str] = []
    placed: set[str] = set()
    for group in groups:
        for name in group.names:
            pin = by_name.get(canonical_name(name))
            if pin is None:
                warnings.append(
                    f"{name} is not in requirements.lock, so the image will not have "
                    "it: re-lock with `reprobox lock <exp>`"
                )
                continue
            files[group.file].append(pin.requirement)
            placed.add(canonical_name(name))
    extra = [p for n, p in by_name.items() if n not in placed]
    if extra and groups:
        for pin in extra:
            files[groups[0].file].append(pin.requirement)
    header = "# Part of requirements.lock, checked and written by reprobox build (one layer).\n"
    return {
        name: header + "".join(line + "\n" for line in lines) for name, lines in files.items()
    }, warnings


# --------------------------------------------------------------------------- the code


def export_code(
    repo_root: Path, stored: StoredExperiment, paths: Iterable[str], dest: Path
) -> None:
    """The folders ``paths`` (relative to ``repo_root``) at the recorded commit, patch applied.

    The whole commit is archived so that the recorded patch, whose paths are relative to the top
    of the repository, applies as it was made; only ``paths`` are kept, under ``dest``.
    """
    commit = validate_commit(stored.experiment.git.commit)
    top = proc.run(["git", "rev-parse", "--show-toplevel"], cwd=repo_root, check=False)
    if top.returncode != 0:
        raise GitError(
            f"{repo_root} is not a git repository", "build from inside the experiment's repository"
        )
    top_dir = Path(top.stdout.strip())
    try:
        below = Path(repo_root).resolve().relative_to(top_dir.resolve()).as_posix()
    except ValueError:
        below = "."
    found = proc.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=top_dir, check=False)
    if found.returncode != 0:
        raise GitError(
            f"commit {commit} is not in the repository at {top_dir}",
            "fetch it: `git fetch --all` (or push it from the machine where it was captured)",
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="reprobox-code-") as tmp:
        tarball = Path(tmp) / "code.tar"
        proc.run(
            ["git", "archive", "--format=tar", f"--output={tarball}", commit],
            cwd=top_dir,
            timeout=600,
            what="git archive of the experiment's code",
        )
        tree = Path(tmp) / "tree"
        tree.mkdir()
        _safe_extract(tarball, tree)
        patch = stored.experiment.git.patch
        if patch:
            patch_file = stored.path / patch
            if patch_file.is_file() and patch_file.stat().st_size > 0:
                apply_patch(tree, patch_file)
        root = tree / below if below != "." else tree
        _content_mtimes(root)
        for rel in sorted(set(paths)):
            src = root if rel in ("", ".") else root / rel
            if not src.is_dir():
                continue
            if rel in ("", "."):
                for entry in src.iterdir():
                    shutil.move(str(entry), str(dest / entry.name))
                break
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest / rel))


#: 2000-01-01T00:00:00Z: content-derived modification times are counted from here.
_EPOCH = 946684800


def _content_mtimes(root: Path) -> None:
    """Give every file a modification time derived from its content, every folder a fixed one.

    BuildKit resends a context file only when its size or mtime changed. ``git archive`` stamps
    every file with the commit time, so two commits made within the same second with a change that
    keeps a file's size (``x = 42`` -> ``x = 43``) would look unchanged and the build would copy
    the old code. A time derived from the content changes exactly when the content does.
    """
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            digest = _sha256(path)
            stamp = _EPOCH + int(digest[:12], 16) % (20 * 365 * 86400)
            os.utime(path, ns=(stamp * 10**9, stamp * 10**9))
    for folder, _dirs, _files in os.walk(root, topdown=False):
        os.utime(folder, ns=(_EPOCH * 10**9, _EPOCH * 10**9))


def _safe_extract(tarball: Path, dest: Path) -> None:
    """Extract git's archive, refusing members that would land outside ``dest``."""
    base = dest.resolve()
    with tarfile.open(tarball) as tar:
        members = []
        for member in tar.getmembers():
            target = (base / member.name).resolve()
            if member.name.startswith("/") or (target != base and base not in target.parents):
                raise GitError(f"the archive of the commit holds an unsafe path {member.name!r}")
            if member.isdev() or member.isfifo():
                continue
            members.append(member)
        tar.extractall(dest, members=members)


# --------------------------------------------------------------------------- assembling


@dataclass
class ContextInputs:
    plan: DockerPlan
    dockerfile: str
    uv_binary: Optional[Path] = None
    #: The checked pins of requirements.lock (None: the experiment has no lock).
    pins: Optional[Sequence[Pin]] = None
    #: Every file the Python steps install, in the host's wheelhouse.
    artifacts: Sequence[Artifact] = ()
    #: The experiment's files holding post-install changes (``plan.replay``), by name.
    replay_files: Mapping[str, bytes] = field(default_factory=dict)
    extra_warnings: list[str] = field(default_factory=list)


def context_dir(repo_root: Path) -> Path:
    """One context folder per repository, reused by every build from it.

    BuildKit keys its incremental context transfer on the folder's path: reusing it means a
    rebuild sends only what changed (the code), not the uv binary and the wheels again.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(str(Path(repo_root).resolve()).encode()).hexdigest()[:16]
    return Path(base) / "reprobox" / "build" / key


#: The system part's Dockerfile, in its own context (:func:`system_context`).
SYSTEM_DOCKERFILE = "Dockerfile.system"


def system_context(folder: Path, dockerfile: str, uv_binary: Optional[Path]) -> Path:
    """The build context of a two-part build's system part, beside ``folder`` (the main
    context, whose :class:`ContextLock` covers it): its Dockerfile, and the uv binary when it
    installs CPython (the one step that mounts ``tools/``). Nothing of the checkout or the
    wheelhouse: it is built while those are fetched and assembled."""
    dest = folder.with_name(f"{folder.name}-system")
    tools = dest / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    if uv_binary is not None:
        _link_or_copy(uv_binary, tools / "uv")
    else:
        try:
            (tools / "uv").unlink()
        except FileNotFoundError:
            pass
    write_if_changed(dest / SYSTEM_DOCKERFILE, dockerfile.encode())
    write_if_changed(dest / ".dockerignore", b"")
    return dest


class ContextLock:
    """Exclusive use of a context folder for one build (two builds from one repository wait)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder.parent / f"{folder.name}.lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> ContextLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def assemble_context(
    repo_root: Path, stored: StoredExperiment, inputs: ContextInputs, dest: Optional[Path] = None
) -> BuildContext:
    """Write the build context for ``inputs.plan`` (see the module docstring)."""
    plan = inputs.plan
    dest = dest or context_dir(repo_root)
    dest.mkdir(parents=True, exist_ok=True)
    warnings = list(inputs.extra_warnings)

    # tools/: what RUN steps bind-mount
    tools = dest / "tools"
    tools.mkdir(exist_ok=True)
    write_if_changed(tools / "prune.py", PRUNE_SCRIPT.read_bytes())
    write_if_changed(tools / "finish_layer.py", FINISH_LAYER_SCRIPT.read_bytes())
    write_if_changed(tools / "reinstate.py", REINSTATE_SCRIPT.read_bytes())
    write_if_changed(tools / "packages.txt", ("\n".join(plan.expected) + "\n").encode())
    if plan.options.installer == "uv":
        if inputs.uv_binary is None:
            raise UsageError(
                "the uv installer was chosen but no uv binary was found",
                "install uv (`pip install uv`)",
            )
        _link_or_copy(inputs.uv_binary, tools / "uv")
    else:
        try:
            (tools / "uv").unlink()
        except FileNotFoundError:
            pass

    # lock/ (from the checked pins) and wheels/ (from the host's wheelhouse)
    if plan.lock:
        if inputs.pins is None:
            raise LockError(
                f"experiment {plan.exp_id} has no requirements.lock",
                f"write it with `reprobox lock {plan.exp_id}` (it needs the package index)",
            )
        parts, split_warnings = lock_parts(inputs.pins, plan.lock_groups)
        warnings += split_warnings
        lock_dir = dest / "lock"
        lock_dir.mkdir(exist_ok=True)
        for name, content in parts.items():
            write_if_changed(lock_dir / name, content.encode())
        for entry in lock_dir.iterdir():
            if entry.name not in parts:
                entry.unlink()
    elif (dest / "lock").exists():
        shutil.rmtree(dest / "lock")
    wanted = place_wheels(wheel_folders(plan, inputs.artifacts), dest / "wheels")

    # replay/: post-install changes the image re-applies (manifest + the experiment's files)
    replay = dest / "replay"
    if plan.replay:
        write_replay(replay, plan.replay, inputs.replay_files)
    elif replay.exists():
        shutil.rmtree(replay)

    # src/: the local packages at the recorded commit
    src = dest / "src"
    if plan.copy_dirs:
        export_code(repo_root, stored, [d.src.rstrip("/") or "." for d in plan.copy_dirs], src)
        for d in plan.copy_dirs:
            if not (src / d.src).is_dir():
                raise UsageError(
                    f"the folder {d.src or '.'} of a local package is not in commit "
                    f"{plan.commit[:12]}",
                    "commit the package's folder, then re-capture the experiment",
                )
    elif src.exists():
        shutil.rmtree(src)
    meta = dest / "meta"
    if plan.copy_dirs and plan.options.buildkit:
        write_meta(src, meta, plan)
    elif meta.exists():
        shutil.rmtree(meta)

    dockerfile = dest / "Dockerfile"
    write_if_changed(dockerfile, inputs.dockerfile.encode())
    write_if_changed(dest / ".dockerignore", b"")
    return BuildContext(dest, dockerfile, tuple(wanted), tuple(warnings))


#: Where an artifact of the ``direct`` step comes from: a VCS commit (fetched, or sealed into
#: the experiment at capture), an archive URL, or a path inside the repository.
DIRECT_ORIGINS = ("vcs", "archive", "repository", "sealed")


def wheel_folders(plan: DockerPlan, artifacts: Sequence[Artifact]) -> dict[str, list[Artifact]]:
    """The files of each install step's folder of ``wheels/``: each lock layer its own packages,
    ``direct`` the VCS and archive packages, ``local`` the build backend of the project's own
    packages. The build backend joins every folder that holds a file to build (an sdist).

    A step bind-mounts its folder only, and BuildKit keys a step on the content of what it
    mounts: a new version of a pure-Python package then leaves the compiled layer cached.
    """
    backend = [a for a in artifacts if a.origin == "build backend"]
    direct = [a for a in artifacts if a.origin in DIRECT_ORIGINS]
    locked = [
        a for a in artifacts if a.origin != "build backend" and a.origin not in DIRECT_ORIGINS
    ]
    folders: dict[str, list[Artifact]] = {}
    placed: set[str] = set()
    for group in plan.lock_groups:
        names = {canonical_name(n) for n in group.names}
        folders[group.folder] = [a for a in locked if canonical_name(a.name) in names]
        placed |= names
    if plan.lock_groups:  # pins of no group go to the first layer, as in lock_parts
        folders[plan.lock_groups[0].folder] += [
            a for a in locked if canonical_name(a.name) not in placed
        ]
    if plan.direct:
        folders[DIRECT_WHEELS] = direct
    for files in folders.values():
        if any(not a.is_wheel for a in files):
            files += backend
    if plan.copy_dirs:
        folders[LOCAL_WHEELS] = list(backend)
    return folders


def place_wheels(folders: Mapping[str, Sequence[Artifact]], wheels: Path) -> list[str]:
    """Hard-link each folder's files into ``wheels/<folder>``; anything else there is removed
    (the flat layout of older reprobox versions included)."""
    wheels.mkdir(parents=True, exist_ok=True)
    for entry in wheels.iterdir():
        if entry.name not in folders or not entry.is_dir() or entry.is_symlink():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    names: set[str] = set()
    for name, files in folders.items():
        names.update(link_into(files, wheels / name))
    return sorted(names)


#: Build backends whose editable install of a project with a static ``[project]`` table reads
#: the metadata and the package layout only (no module is imported, no file's content read).
_METADATA_BACKENDS = {
    "setuptools.build_meta": "setuptools",
    "flit_core.buildapi": "flit-core",
    "hatchling.build": "hatchling",
}


def _has_key(value: object, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_has_key(v, key) for v in value)
    return False


def reads_only_metadata(folder: Path, editable: bool) -> bool:
    """Whether installing the package in ``folder`` reads its metadata and layout only.

    True only for an editable install by a known backend (setuptools, flit, hatchling) of a
    ``pyproject.toml`` that declares every field statically (no ``dynamic``: no version read
    from a module), with no ``setup.py`` or ``setup.cfg``, no in-tree backend, no build
    requirement but the backend (and ``wheel``), and no build hook or custom command: then
    what it installs (metadata, entry points, the path hook into the code) does not depend on
    the content of the Python files. Anything else: False (the install sees all of the code).
    """
    if not editable or (folder / "setup.py").exists() or (folder / "setup.cfg").exists():
        return False
    pyproject = folder / "pyproject.toml"
    if pyproject.is_symlink() or not pyproject.is_file() or pyproject.stat().st_size > 1 << 20:
        return False  # a link may lead out of the code, to a host file: never read through it
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    project = data.get("project")
    system = data.get("build-system")
    if not isinstance(project, dict) or not isinstance(system, dict):
        return False
    if project.get("dynamic") or "version" not in project or "backend-path" in system:
        return False
    backend = _METADATA_BACKENDS.get(str(system.get("build-backend")))
    requires = system.get("requires")
    if backend is None or not isinstance(requires, list):
        return False
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(req))
        if m is None or canonical_name(m.group(1)) not in (backend, "wheel"):
            return False
    tool_table = data.get("tool")
    tool: dict[str, Any] = tool_table if isinstance(tool_table, dict) else {}
    setuptools_conf = tool.get("setuptools", {})
    if backend == "setuptools" and any(
        _has_key(setuptools_conf, k) for k in ("cmdclass", "ext-modules", "dynamic")
    ):
        return False
    if backend == "hatchling" and _has_key(tool.get("hatch", {}), "hooks"):
        return False
    return True


def write_meta(src: Path, meta: Path, plan: DockerPlan) -> bool:
    """``meta/``: what the install of the project's own packages sees (bind-mounted where the
    code goes, for that step only); the code itself is copied into the image after it.

    When every local package :func:`reads_only_metadata`, ``meta/`` is ``src/`` with each
    Python file empty (same names, same folders; every other file as it is): the install step
    then stays cached through a change to the code alone. Otherwise it is ``src/`` as it is.
    Returns whether the Python files were emptied.
    """
    real_src = os.path.realpath(src)

    def inside(folder: Path) -> bool:  # no link in the package's path leads out of the code
        real = os.path.realpath(folder)
        return real == real_src or real.startswith(real_src + os.sep)

    folders = [(src if p.path == "." else src / p.path, p.editable) for p in plan.local]
    layout_only = bool(folders) and all(
        inside(folder) and reads_only_metadata(folder, editable) for folder, editable in folders
    )
    if meta.exists():
        shutil.rmtree(meta)
    meta.mkdir(parents=True)
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        for name in dirs:
            path = Path(folder) / name
            if path.is_symlink():
                os.symlink(os.readlink(path), meta / rel / name)
            else:
                (meta / rel / name).mkdir()
        for name in files:
            path, out = Path(folder) / name, meta / rel / name
            if path.is_symlink():
                os.symlink(os.readlink(path), out)
            elif layout_only and name.endswith(".py"):
                out.touch()
                os.utime(out, ns=(_EPOCH * 10**9, _EPOCH * 10**9))
            else:
                try:
                    os.link(path, out)
                except OSError:
                    shutil.copy2(path, out)
    for folder, _dirs, _files in os.walk(meta, topdown=False):
        os.utime(folder, ns=(_EPOCH * 10**9, _EPOCH * 10**9))
    return layout_only


def write_replay(
    folder: Path, replay: Sequence[tuple[str, str, str, str]], files: Mapping[str, bytes]
) -> None:
    """``manifest.json`` and the files of the post-install changes, for ``reinstate.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for package, path, name, digest in replay:
        data = files.get(name)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise UsageError(
                f"the recorded change to {path} of {package} ({name}) is not in the "
                "experiment as captured",
                "restore the folder from git (`git checkout -- .reprobox/`)",
            )
        write_if_changed(folder / name, data)
        manifest.append({"package": package, "path": path, "file": name, "sha256": digest})
    write_if_changed(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    keep = {"manifest.json", *(name for _p, _q, name, _d in replay)}
    for entry in folder.iterdir():
        if entry.name not in keep:
            entry.unlink()


class SecretFiles:
    """The build secrets in a private folder, removed on exit."""

    def __init__(self, forwarding: Forwarding) -> None:
        self.forwarding = forwarding
        self.folder: Optional[Path] = None

    def __enter__(self) -> dict[str, Path]:
        self.folder = Path(tempfile.mkdtemp(prefix="reprobox-secrets-"))
        os.chmod(self.folder, 0o700)
        env_file = self.folder / "env"
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets_env_text(self.forwarding.env))
        out = {"reprobox-env": env_file}
        if self.forwarding.ca_bundle is not None:
            out["reprobox-ca"] = self.forwarding.ca_bundle
        return out

    def __exit__(self, *exc: object) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


__all__ = [
    "STAGE",
    "BuildContext",
    "ContextInputs",
    "ContextLock",
    "Forwarding",
    "SecretFiles",
    "assemble_context",
    "context_dir",
    "export_code",
    "lock_parts",
    "place_wheels",
    "reads_only_metadata",
    "wheel_folders",
    "write_meta",
    "write_if_changed",
    "forward_index_config",
    "secrets_env_text",
]
