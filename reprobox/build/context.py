"""The build context of an experiment's image, and the secrets that go with it.

The context is made from the *recorded* commit, never from the user's working tree: ``git
archive`` of exactly the folders the image needs (the local packages), with the recorded patch
applied. Next to it: the lock (cut into one file per layer, its ``file://`` index and local find-links
lines dropped, because the wheels they served are copied in), those wheels, the tools the RUN steps bind-mount (uv,
prune.py, packages.txt) and the Dockerfile::

    <context>/Dockerfile  lock/  wheels/  tools/  src/

It lives in the user's cache folder under a stable path per experiment: BuildKit transfers only
what changed since the last build from the same folder, so a rebuild does not resend the uv binary
or the wheels.

The host's package-index configuration is forwarded as two build secrets, never as files in the
context or build arguments: ``reprobox-env`` (shell ``export`` lines: index URLs with their
credentials, proxies, trusted hosts) and ``reprobox-ca`` (the CA bundle pip is configured with).
Both live in a private temporary folder that is removed after the build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import unquote, urlsplit

from .. import proc
from ..errors import GitError, LockError, UsageError
from ..redact import strip_url_credentials
from ..store import StoredExperiment
from .render import STAGE, DockerPlan, LockGroup

LOCK_FILE = "requirements.lock"
PYLOCK_FILE = "pylock.toml"
PRUNE_SCRIPT = Path(__file__).with_name("prune.py")


@dataclass(frozen=True)
class BuildContext:
    path: Path
    dockerfile: Path
    wheels: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- small file helpers


def _write_if_changed(path: Path, data: bytes) -> None:
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)


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


# --------------------------------------------------------------------------- the uv binary


def find_uv() -> Optional[Path]:
    """The host's uv *binary* (not a pyenv shim or wrapper script), or None."""
    candidates: list[str] = []
    try:
        import uv  # the PyPI package ships the binary and knows where it is

        candidates.append(uv.find_uv_bin())
    except Exception:  # noqa: BLE001 - not installed as a package, or broken
        pass
    found = shutil.which("uv")
    if found:
        candidates.append(os.path.realpath(found))
    for cand in candidates:
        try:
            with open(cand, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    return Path(cand)
        except OSError:
            continue
    return None


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
    """Translate the host's pip configuration (``reprobox.lock.IndexConfig``) for the build.

    Local indexes and find-links folders do not exist in the build: the wheels the lock took from
    them are copied into the context instead (see :func:`collect_local_wheels`). When no remote
    index remains, the build installs from the context's wheels alone (``no-index``).
    """
    warnings: list[str] = []
    dropped: list[str] = []
    indexes = [u for u in config.index_urls]
    remote = [u for u in indexes if not _is_local(u)]
    dropped += [u for u in indexes if _is_local(u)]
    links_remote = [u for u in config.find_links if not _is_local(u)]
    dropped += [u for u in config.find_links if _is_local(u)]
    env: dict[str, str] = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if not remote:
        env["PIP_NO_INDEX"] = "1"
        env["UV_NO_INDEX"] = "1"
    else:
        env["PIP_INDEX_URL"] = remote[0]
        env["UV_INDEX_URL"] = remote[0]
        if remote[1:]:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(remote[1:])
            env["UV_EXTRA_INDEX_URL"] = " ".join(remote[1:])
    if links_remote:
        env["PIP_FIND_LINKS"] = " ".join(links_remote)
        env["UV_FIND_LINKS"] = ",".join(links_remote)
    if config.trusted_hosts:
        env["PIP_TRUSTED_HOST"] = " ".join(config.trusted_hosts)
        env["UV_INSECURE_HOST"] = " ".join(config.trusted_hosts)
    if config.timeout:
        env["PIP_DEFAULT_TIMEOUT"] = str(int(config.timeout))
        env["UV_HTTP_TIMEOUT"] = str(int(config.timeout))
    for scheme, names in (("http", ("http_proxy", "HTTP_PROXY")),
                          ("https", ("https_proxy", "HTTPS_PROXY")),
                          ("no", ("no_proxy", "NO_PROXY"))):
        value = config.proxies.get(scheme)
        if not value:
            continue
        for name in names:
            env[name] = value
        if scheme != "no" and re.search(r"//([^@/]*@)?(localhost|127\.|\[::1\])", value):
            warnings.append(f"the {scheme} proxy {strip_url_credentials(value)} is on this "
                            "machine: a build container reaches it only with `--network host`")
    ca: Optional[Path] = None
    if config.cert:
        ca = Path(config.cert)
        if not ca.is_file():
            raise UsageError(f"pip's CA bundle {config.cert} does not exist",
                             f"fix `cert` in {config.origins.get('cert', 'pip.conf')}")
        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            env[name] = "/run/secrets/reprobox-ca"
    if getattr(config, "client_cert", None):
        warnings.append("pip's client certificate is not forwarded to container builds")
    has_secret = config.has_credentials()
    args: dict[str, str] = {}
    if not has_secret:
        for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
            if key in env:
                args[key] = env[key]
    return Forwarding(env, ca, args, has_secret, tuple(warnings), tuple(dropped))


def secrets_env_text(env: Mapping[str, str]) -> str:
    """The ``reprobox-env`` secret: one ``export NAME=value`` line per variable, shell-quoted."""
    lines = ["# reprobox build secret: the host's package-index configuration"]
    for key in sorted(env):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        lines.append(f"export {key}={shlex.quote(env[key])}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the lock


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_lock(text: str, groups: Sequence[LockGroup]) -> tuple[dict[str, str], list[str]]:
    """requirements.lock cut into one file per layer (``lock/<group file>``), and warnings.

    Requirement blocks (a pin and its ``--hash`` continuation lines) go to the group naming the
    package; index options are repeated in every file, except ``file://`` indexes and local
    find-links folders, which do not exist in the build (their wheels are in ``wheels/``).
    """
    options: list[str] = []
    blocks: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    for line in text.splitlines():
        if current is not None:
            current.append(line)
            if not line.rstrip().endswith("\\"):
                current = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"(--extra-index-url|--index-url|-i|--find-links|-f)[\s=]+(\S+)", stripped)
        if m:
            if not _is_local(m.group(2)):
                options.append(stripped)
            continue
        pin = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", stripped)
        if pin:
            current = [line]
            blocks[_norm(pin.group(1))] = current
            if not line.rstrip().endswith("\\"):
                current = None
            continue
        options.append(stripped)
    warnings: list[str] = []
    files: dict[str, list[str]] = {g.file: [] for g in groups}
    placed: set[str] = set()
    for group in groups:
        for name in group.names:
            block = blocks.get(_norm(name))
            if block is None:
                warnings.append(f"{name} is not in requirements.lock, so the image will not have "
                                "it: re-lock with `reprobox lock <exp>`")
                continue
            files[group.file] += block
            placed.add(_norm(name))
    extra = sorted(set(blocks) - placed)
    if extra and groups:
        for name in extra:
            files[groups[0].file] += blocks[name]
    header = ["# Part of requirements.lock, written by reprobox build for one image layer."]
    out = {name: "\n".join(header + options + [""] + lines) + "\n" for name, lines in files.items()}
    return out, warnings


def lock_hashes(text: str) -> dict[str, set[str]]:
    """name -> the sha256 digests the lock accepts for it (hash lines follow their pin)."""
    out: dict[str, set[str]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            current = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            out.setdefault(current, set())
        if current:
            out[current].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LockError(f"cannot read {path}: {exc}",
                        "re-lock the experiment: `reprobox lock <exp>`") from None


def collect_local_wheels(pylock: Optional[Path], accepted: Mapping[str, set[str]]) -> tuple[
        list[tuple[Path, str]], list[str]]:
    """Files on this machine (file:// URLs in pylock.toml) the build must install from.

    Only files whose sha256 the requirements lock accepts are taken, so the context holds exactly
    what the hash-checked install may use. Returns ``[(host path, file name)]`` and warnings.
    """
    if pylock is None or not pylock.is_file():
        return [], []
    data = _load_toml(pylock)
    files: list[tuple[Path, str]] = []
    warnings: list[str] = []
    for pkg in data.get("packages", []):
        if not isinstance(pkg, dict):
            continue
        name = re.sub(r"[-_.]+", "-", str(pkg.get("name", ""))).lower()
        entries = list(pkg.get("wheels") or [])
        if isinstance(pkg.get("sdist"), dict):
            entries.append(pkg["sdist"])
        local_needed = False
        found = False
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            url = str(entry.get("url") or "")
            if not url.startswith("file:"):
                continue
            local_needed = True
            digest = str((entry.get("hashes") or {}).get("sha256", ""))
            if digest not in accepted.get(name, set()):
                continue
            path = Path(_local_path(url))
            file_name = path.name
            if "/" in file_name or file_name in ("", ".", ".."):
                continue
            if path.is_file():
                files.append((path, file_name))
                found = True
        if local_needed and not found:
            remote = any(not str((e or {}).get("url", "")).startswith("file:") for e in entries
                         if isinstance(e, dict))
            if not remote:
                warnings.append(f"{name}: its locked files are on this machine's local index, "
                                "which no longer holds them; the build will not find them")
    return files, warnings


# --------------------------------------------------------------------------- the code


def export_code(repo_root: Path, stored: StoredExperiment, paths: Iterable[str], dest: Path) -> None:
    """The folders ``paths`` (relative to ``repo_root``) at the recorded commit, patch applied.

    The whole commit is archived so that the recorded patch, whose paths are relative to the top
    of the repository, applies as it was made; only ``paths`` are kept, under ``dest``.
    """
    from ..capture.git import apply_patch, validate_commit

    commit = validate_commit(stored.experiment.git.commit)
    top = proc.run(["git", "rev-parse", "--show-toplevel"], cwd=repo_root, check=False)
    if top.returncode != 0:
        raise GitError(f"{repo_root} is not a git repository",
                       "build from inside the experiment's repository")
    top_dir = Path(top.stdout.strip())
    try:
        below = Path(repo_root).resolve().relative_to(top_dir.resolve()).as_posix()
    except ValueError:
        below = "."
    found = proc.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=top_dir, check=False)
    if found.returncode != 0:
        raise GitError(f"commit {commit} is not in the repository at {top_dir}",
                       "fetch it: `git fetch --all` (or push it from the machine where it was "
                       "captured)")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="reprobox-code-") as tmp:
        tarball = Path(tmp) / "code.tar"
        proc.run(["git", "archive", "--format=tar", f"--output={tarball}", commit], cwd=top_dir,
                 timeout=600, what="git archive of the experiment's code")
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
    for folder, dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            digest = _sha256(path)
            stamp = _EPOCH + int(digest[:12], 16) % (20 * 365 * 86400)
            os.utime(path, ns=(stamp * 10**9, stamp * 10**9))
    for folder, dirs, _files in os.walk(root, topdown=False):
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
    lock_text: Optional[str] = None
    pylock: Optional[Path] = None
    extra_warnings: list[str] = field(default_factory=list)


def context_dir(repo_root: Path) -> Path:
    """One context folder per repository, reused by every build from it.

    BuildKit keys its incremental context transfer on the folder's path: reusing it means a
    rebuild sends only what changed (the code), not the uv binary and the wheels again.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(str(Path(repo_root).resolve()).encode()).hexdigest()[:16]
    return Path(base) / "reprobox" / "build" / key


class ContextLock:
    """Exclusive use of a context folder for one build (two builds from one repository wait)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder.parent / f"{folder.name}.lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> ContextLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def assemble_context(repo_root: Path, stored: StoredExperiment, inputs: ContextInputs,
                     dest: Optional[Path] = None) -> BuildContext:
    """Write the build context for ``inputs.plan`` (see the module docstring)."""
    plan = inputs.plan
    dest = dest or context_dir(repo_root)
    dest.mkdir(parents=True, exist_ok=True)
    warnings = list(inputs.extra_warnings)

    # tools/: what RUN steps bind-mount
    tools = dest / "tools"
    tools.mkdir(exist_ok=True)
    _write_if_changed(tools / "prune.py", PRUNE_SCRIPT.read_bytes())
    _write_if_changed(tools / "packages.txt", ("\n".join(plan.expected) + "\n").encode())
    if plan.options.installer == "uv":
        if inputs.uv_binary is None:
            raise UsageError("the uv installer was chosen but no uv binary was found",
                             "install uv (`pip install uv`)")
        _link_or_copy(inputs.uv_binary, tools / "uv")
    else:
        try:
            (tools / "uv").unlink()
        except FileNotFoundError:
            pass

    # requirements.lock and wheels/
    wheels_dir = dest / "wheels"
    wheels_dir.mkdir(exist_ok=True)
    wanted: dict[str, Path] = {}
    if plan.lock:
        if inputs.lock_text is None:
            raise LockError(
                f"experiment {plan.exp_id} has no requirements.lock",
                f"write it with `reprobox lock {plan.exp_id}` (it needs the package index)",
            )
        parts, split_warnings = split_lock(inputs.lock_text, plan.lock_groups)
        warnings += split_warnings
        lock_dir = dest / "lock"
        lock_dir.mkdir(exist_ok=True)
        for name, content in parts.items():
            _write_if_changed(lock_dir / name, content.encode())
        for entry in lock_dir.iterdir():
            if entry.name not in parts:
                entry.unlink()
        files, lock_warnings = collect_local_wheels(inputs.pylock, lock_hashes(inputs.lock_text))
        warnings += lock_warnings
        for path, name in files:
            wanted[name] = path
    elif (dest / "lock").exists():
        shutil.rmtree(dest / "lock")
    for archive in plan.host_archives:
        path = Path(archive.path)
        if not path.is_file():
            raise UsageError(
                f"{archive.name} was installed from {archive.path}, which is not on this machine",
                "copy that file to the same place, or install the package from an index and "
                "re-capture",
            )
        if archive.hash:
            algo, _, digest = archive.hash.replace(":", "=", 1).partition("=")
            if algo == "sha256" and _sha256(path) != digest:
                raise UsageError(f"{archive.path} no longer matches the recorded {archive.hash}",
                                 "restore the original file, or re-capture the experiment")
        wanted[archive.file_name] = path
    for name, path in wanted.items():
        _link_or_copy(path, wheels_dir / name)
    for entry in wheels_dir.iterdir():
        if entry.name not in wanted:
            entry.unlink() if entry.is_file() or entry.is_symlink() else shutil.rmtree(entry)

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

    dockerfile = dest / "Dockerfile"
    _write_if_changed(dockerfile, inputs.dockerfile.encode())
    _write_if_changed(dest / ".dockerignore", b"")
    return BuildContext(dest, dockerfile, tuple(sorted(wanted)), tuple(warnings))


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
    "collect_local_wheels",
    "context_dir",
    "export_code",
    "find_uv",
    "forward_index_config",
    "lock_hashes",
    "secrets_env_text",
    "split_lock",
]
