"""The wheelhouse: every file a rebuild installs, fetched by the host and kept by its sha256.

Package code (a wheel's ``.pth``, an sdist's ``setup.py``) must never run where an index
credential is readable. So the *host* fetches, with its own index configuration (pip's files,
``PIP_*``, netrc, CA bundle, proxies: :mod:`.config` and :mod:`.transport`), every file the
checked lock names, checks its sha256 against the lock, and keeps it here; image builds and
virtualenvs then install from this folder only, offline, with no credential in reach.

Layout (content-addressed, shared by every experiment and repository)::

    $REPROBOX_WHEELHOUSE (default ~/.cache/reprobox/wheelhouse)/sha256/<hex>/<file name>

A file is written to a temporary name in its folder and renamed into place once its digest is
checked, so a reader never sees half a file and a file is never stored under a wrong digest. A
second build of the same lock finds everything here and fetches nothing.

Where the capture records no hash (a VCS commit, an archive URL without one), the file is fetched
*without* credentials (no netrc, no credential helper, no SSH agent, an empty home folder),
hashed here, and reported as unverified. Where an old-style sdist must be built in the image, the
build backend it needs (setuptools and wheel, at versions reprobox names) is added from the host's
index with the index's hashes, and reported as added.

API for other backends: :func:`wheelhouse_dir`, :class:`Wheelhouse` (``get``/``put``),
:func:`fetch_locked` and :func:`fetch_direct`, returning :class:`Artifact` records.
"""

from __future__ import annotations

import hashlib
import os
import platform as _platform
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .. import proc
from ..errors import IndexUnavailable, LockError, UsageError
from ..names import canonical_name, vcs_archive_name
from ..progress import Progress
from ..redact import strip_url_credentials
from .checks import Pin
from .config import IndexConfig
from .dists import DistFile, parse_filename, same_version
from .index import IndexClient
from .select import Target, interpreter_pairs, linux_arch, parse_wheel_tags
from .transport import Transport

#: The build backend an old-style sdist (no pyproject.toml), a VCS checkout or the project's own
#: packages are built with, offline, in the image: named and hashed by reprobox itself.
BUILD_BACKEND = (
    Pin(
        "setuptools",
        "75.3.0",
        ("f2504966861356aa38616760c0f66568e535562374995367b4e69c7143cf6bcd",),
        0,
    ),
    Pin(
        "wheel", "0.45.1", ("708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248",), 0
    ),
)
#: Files downloaded at once (each on its own keep-alive connection).
DOWNLOADS = 8
_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,250}", re.ASCII)


def wheelhouse_dir() -> Path:
    """``$REPROBOX_WHEELHOUSE``, else ``$XDG_CACHE_HOME/reprobox/wheelhouse`` (``~/.cache``)."""
    override = os.environ.get("REPROBOX_WHEELHOUSE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "wheelhouse"


@dataclass(frozen=True)
class Artifact:
    """One file in the wheelhouse that a rebuild installs."""

    name: str  # the distribution, normalized
    version: str
    filename: str
    sha256: str
    path: Path
    #: ``lock``: the lock's hash was checked; ``index``: the index's hash was checked (an added
    #: build backend); ``unverified``: nothing recorded a hash, it was computed here.
    verified: str
    origin: str  # "index" | "vcs" | "archive" | "repository" | "sealed" | "build backend"
    fetched: bool = False  # downloaded by this call (not already in the wheelhouse)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.filename}, sha256 {self.sha256[:12]})"


class Wheelhouse:
    """The content-addressed folder (see the module docstring)."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root is not None else wheelhouse_dir()

    def folder(self, sha256: str) -> Path:
        if not _HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256

    def get(self, sha256: str) -> Optional[Path]:
        """The stored file with this digest, or None."""
        folder = self.folder(sha256)
        try:
            entries = [
                e
                for e in folder.iterdir()
                if not e.name.startswith(".") and e.is_file() and not e.is_symlink()
            ]
        except (FileNotFoundError, NotADirectoryError):
            return None
        return sorted(entries)[0] if entries else None

    def put(
        self, filename: str, chunks: Iterable[bytes], expected: Optional[Iterable[str]] = None
    ) -> tuple[str, Path]:
        """Store a file under its digest; with ``expected``, refuse any other digest."""
        if not _FILE_NAME.fullmatch(filename) or filename in (".", ".."):
            raise UsageError(f"refusing to store a file named {filename!r} in the wheelhouse")
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=tmp_root)
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    h.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            digest = h.hexdigest()
            wanted = set(expected) if expected is not None else None
            if wanted is not None and digest not in wanted:
                raise LockError(
                    f"{filename} has sha256 {digest}, which the lock does not list",
                    "the index serves another file than the one locked: check pip's "
                    "configuration (`pip config list`), or re-lock with `reprobox lock <exp>`",
                )
            folder = self.folder(digest)
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, folder / filename)
            return digest, folder / filename
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _ref(self, key: str) -> Path:
        return self.root / "refs" / hashlib.sha256(key.encode()).hexdigest()

    def remember(self, key: str, sha256: str) -> None:
        """Note which stored file ``key`` (a VCS commit, an unhashed URL) gave, atomically."""
        ref = self._ref(key)
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(sha256 + "\n")
        os.replace(tmp, ref)

    def recall(self, key: str) -> Optional[tuple[str, Path]]:
        """The stored file ``key`` gave before, if it is still here."""
        try:
            digest = self._ref(key).read_text().strip()
        except OSError:
            return None
        if not _HEX.fullmatch(digest):
            return None
        path = self.get(digest)
        return (digest, path) if path is not None else None

    def put_file(
        self, path: Path, filename: Optional[str] = None, expected: Optional[Iterable[str]] = None
    ) -> tuple[str, Path]:
        def read() -> Iterable[bytes]:
            with open(path, "rb") as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")

        return self.put(filename or path.name, read(), expected)


# --------------------------------------------------------------------------- choosing a file


def build_target(target: Target, machine: Optional[str] = None) -> Target:
    """The capture's interpreter on Linux, on this machine's architecture (what a container
    build or a venv here installs for)."""
    arch = (machine or _platform.machine()).lower()
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    return Target(target.full_version, target.implementation, target.abi, "linux", arch)


def _wheel_tags(filename: str) -> list[tuple[str, str, str]]:
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return []
    pys, abis, plats = parts[-3], parts[-2], parts[-1]
    return [(p, a, pl) for p in pys.split(".") for a in abis.split(".") for pl in plats.split(".")]


def _fits(tags: Iterable[tuple[str, str, str]], target: Target) -> bool:
    """Whether a wheel of these (python, abi, platform) tags installs on ``target``."""
    pairs = interpreter_pairs(target)
    for py, abi, plat in tags:
        if (py, abi) not in pairs:
            continue
        glibc = not plat.startswith("musllinux")
        if plat == "any" or (glibc and linux_arch(plat) == target.machine):
            return True
    return False


def wheel_expected(installed: frozenset, target: Target) -> bool:
    """Whether the capture installed a wheel (its ``installed`` tags) that also installs on
    ``target``: then the lock must name that wheel, and an sdist of the same release is not
    taken in its place (it would be built here, its setup.py run, into other files)."""
    return _fits(((t.interpreter, t.abi, t.platform) for t in installed), target)


def _names_pin(filename: str, pin: Pin) -> bool:
    """Whether a wheelhouse file is a release of ``pin``: a file is kept by its sha256, and a
    lock may pair another project's hash with this name."""
    parsed = parse_filename(filename, pin.name)
    return (
        parsed is not None
        and canonical_name(parsed.name) == canonical_name(pin.name)
        and same_version(parsed.version, pin.version)
    )


def rank(filename: str, target: Target, installed: frozenset = frozenset()) -> Optional[int]:
    """How good a file is for ``target`` (lower is better), or None when it cannot install.

    0: the wheel the capture had installed; 1: another wheel for this interpreter, glibc Linux on
    this architecture or pure; 2: an sdist (built in the image, offline).
    """
    if not filename.endswith(".whl"):
        return 2 if filename.lower().endswith((".tar.gz", ".zip", ".tar.bz2", ".tgz")) else None
    if not _fits(_wheel_tags(filename), target):
        return None
    if installed and {str(t) for t in installed} == {
        f"{py}-{abi}-{plat}" for py, abi, plat in _wheel_tags(filename)
    }:
        return 0
    return 1


# --------------------------------------------------------------------------- fetching


class Artifacts:
    """What a set of fetched files says of itself (``artifacts``: a field of the subclass)."""

    artifacts: tuple[Artifact, ...]

    @property
    def unverified(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.verified == "unverified")

    @property
    def added(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.origin == "build backend")


@dataclass(frozen=True)
class FetchResult(Artifacts):
    artifacts: tuple[Artifact, ...]
    fetched: int  # files downloaded by this call
    bytes: int


#: Seconds between two progress lines of a long fetch.
PROGRESS_EVERY_S = 2.0


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def _download(
    client: object, f: DistFile, house: Wheelhouse, expected: Optional[Iterable[str]]
) -> tuple[str, Path, int]:
    if f.path:  # a local find-links folder or file:// index of the host's own configuration
        digest, path = house.put_file(Path(f.path), f.filename, expected)
        return digest, path, path.stat().st_size
    resp = client.transport.get(f.url, {"Accept": "*/*"})  # type: ignore[attr-defined]
    if resp.status != 200:
        raise IndexUnavailable(
            f"cannot download {strip_url_credentials(f.url)} (HTTP {resp.status})",
            "check access to the index in pip's configuration (`pip config list`)",
        )
    digest, path = house.put(f.filename, [resp.body], expected)
    return digest, path, len(resp.body)


def fetch_locked(
    pins: Sequence[Pin],
    target: Target,
    config: IndexConfig,
    *,
    house: Optional[Wheelhouse] = None,
    installed_tags: Optional[dict[str, tuple[str, ...]]] = None,
    backend: bool = False,
    progress: Optional[Progress] = None,
    cache_dir: Optional[Path] = None,
) -> FetchResult:
    """One file per pin in the wheelhouse, its sha256 one the lock lists.

    Looks first in the wheelhouse (a second build fetches nothing), then on the host's own
    indexes (``config``), by name and version: no URL of the capture is ever used. ``backend``
    also adds the build backend an sdist needs (:data:`BUILD_BACKEND`).
    """
    say = progress or (lambda _m: None)
    house = house or Wheelhouse()
    target = (
        build_target(target) if target.sys_platform != "linux" or not target.machine else target
    )
    tags = installed_tags or {}
    backend_names = {p.name for p in BUILD_BACKEND} if backend else set()
    wanted = list(pins) + [p for p in BUILD_BACKEND if backend]

    def artifact(pin: Pin, filename: str, digest: str, path: Path, fetched: bool) -> Artifact:
        origin = "build backend" if pin.name in backend_names and pin in BUILD_BACKEND else "index"
        return Artifact(pin.name, pin.version, filename, digest, path, "lock", origin, fetched)

    def usable(pin: Pin, filename: str) -> Optional[int]:
        installed = parse_wheel_tags(tags.get(pin.name, ()))
        r = rank(filename, target, installed)
        if r == 2 and wheel_expected(installed, target):
            return None  # the capture installed a wheel: not an sdist in its place
        return r

    chosen: dict[int, Artifact] = {}
    missing: list[tuple[int, Pin]] = []
    for i, pin in enumerate(wanted):
        best: Optional[tuple[int, str, Path]] = None
        for digest in pin.hashes:
            path = house.get(digest)
            if path is None or not _names_pin(path.name, pin):
                continue
            r = usable(pin, path.name)
            if r is not None and (best is None or r < best[0]):
                best = (r, digest, path)
        if best is not None:
            chosen[i] = artifact(pin, best[2].name, best[1], best[2], False)
        else:
            missing.append((i, pin))
    fetched = total = 0
    if missing:
        client = IndexClient(config, cache_dir)
        try:
            found = client.lookup_many(
                list(dict.fromkeys((p.name, p.version) for _i, p in missing))
            )
            jobs: list[tuple[int, Pin, DistFile]] = []
            for i, pin in missing:
                candidates: list[tuple[int, DistFile]] = []
                for lookup in found[(pin.name, pin.version)]:
                    for f in lookup.files:
                        if f.sha256 is not None and f.sha256 not in pin.hashes:
                            continue
                        r = usable(pin, f.filename)
                        if r is not None:
                            candidates.append((r, f))
                if not candidates:
                    where = ", ".join(s.describe() for s in client.sources()) or "no index"
                    installed = parse_wheel_tags(tags.get(pin.name, ()))
                    what = (
                        "wheel (the capture installed one)"
                        if wheel_expected(installed, target)
                        else "file"
                    )
                    raise LockError(
                        f"no {what} of {pin.name}=={pin.version} with a hash the lock lists "
                        f"installs on Python {target.full_version} linux/{target.machine} from "
                        f"this machine's package sources ({where})",
                        "configure the index that serves it in pip's configuration (`pip config "
                        "set global.extra-index-url URL`), or re-lock with `reprobox lock <exp>`",
                    )
                candidates.sort(key=lambda c: (c[0], c[1].source.order, c[1].filename))
                jobs.append((i, pin, candidates[0][1]))
            # largest first: the long poles start at once; the pool shares keep-alive connections
            jobs.sort(key=lambda j: -(j[2].size or 0))
            expected_bytes = sum(j[2].size or 0 for j in jobs)
            say(
                f"fetching {len(jobs)} file(s) into the wheelhouse {house.root}"
                + (f" ({_mib(expected_bytes)})" if expected_bytes else "")
            )
            shown = time.monotonic()
            with ThreadPoolExecutor(max_workers=min(DOWNLOADS, len(jobs))) as pool:
                futures = {
                    pool.submit(_download, client, f, house, pin.hashes): (i, pin, f)
                    for i, pin, f in jobs
                }
                for fut in as_completed(futures):
                    i, pin, f = futures[fut]
                    digest, path, size = fut.result()
                    fetched += 1
                    total += size
                    chosen[i] = artifact(pin, f.filename, digest, path, True)
                    # progress: packages n/N and bytes, at most every 2 s (and the last one)
                    if fetched == len(jobs) or time.monotonic() - shown >= PROGRESS_EVERY_S:
                        shown = time.monotonic()
                        say(
                            f"  wheelhouse: {fetched}/{len(jobs)} file(s), {_mib(total)}"
                            + (f" of {_mib(expected_bytes)}" if expected_bytes else "")
                            + f" (last: {f.filename})"
                        )
        finally:
            client.close()
    return FetchResult(tuple(chosen[i] for i in sorted(chosen)), fetched, total)


# --------------------------------------------------------------------------- direct sources


def _isolated_env(home: Path) -> dict[str, str]:
    """An environment that offers no credential: empty home, no agent, no helpers, no prompt."""
    keep = (
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o IdentitiesOnly=yes "
            "-o IdentityFile=/dev/null -F /dev/null",
        }
    )
    return env


def _git_archive(src: "DirectSource", house: Wheelhouse) -> tuple[str, Path]:
    """``git fetch`` without credentials, ``git archive`` of the commit, into the wheelhouse."""
    name, version, url = src.name, src.version, src.url
    commit, subdirectory = src.commit or "", src.subdirectory
    if url.startswith("git+"):
        url = url[4:]
    if not re.match(r"(https?|git|ssh)://", url) and not re.match(r"[\w.-]+@[\w.-]+:", url):
        raise UsageError(
            f"package {name}: the VCS URL {strip_url_credentials(url)!r} is not a remote "
            "repository (http, https, git or ssh)",
            "a capture's package is never fetched from a path on this machine; install it "
            "from a remote repository and re-capture",
        )
    with tempfile.TemporaryDirectory(prefix="reprobox-vcs-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        repo = Path(tmp) / "repo"
        env = _isolated_env(home)
        git = [
            "git",
            "-c",
            "credential.helper=",
            "-c",
            "core.askPass=/bin/false",
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "core.hooksPath=/dev/null",
        ]
        hint = (
            "the repository must be readable without credentials; reprobox never uses this "
            "machine's git credentials for a capture's package"
        )
        proc.run([*git, "init", "--quiet", str(repo)], env=env, what="git init")
        proc.run(
            [*git, "-C", str(repo), "fetch", "--quiet", "--depth=1", "--", url, commit],
            env=env,
            timeout=600,
            what=f"fetching {name} at {commit[:12]} (no credentials)",
            hint=hint,
        )
        tree = f"{commit}:{subdirectory}" if subdirectory else commit
        filename = src.filename
        out = Path(tmp) / filename
        proc.run(
            [
                *git,
                "-C",
                str(repo),
                "archive",
                "--format=tar.gz",
                f"--prefix={canonical_name(name)}-{version}/",
                f"--output={out}",
                tree,
            ],
            env=env,
            timeout=600,
            what=f"archiving {name} at {commit[:12]}",
        )
        return house.put_file(out, filename)


def _anonymous_get(url: str, config: IndexConfig) -> bytes:
    """GET with no credential of this machine: none from the URL, no netrc, empty home."""
    bare = IndexConfig(
        index_url=config.index_url,
        cert=config.cert,
        proxies=config.proxies,
        timeout=config.timeout,
        retries=config.retries,
    )
    with tempfile.TemporaryDirectory(prefix="reprobox-anon-") as home:
        transport = Transport(replace(bare), environ={"HOME": home, "NETRC": os.devnull})
        try:
            resp = transport.get(strip_url_credentials(url), {"Accept": "*/*"})
        finally:
            transport.close()
    if resp.status != 200:
        raise IndexUnavailable(
            f"cannot download {strip_url_credentials(url)} (HTTP {resp.status})",
            "the archive must be downloadable without credentials",
        )
    return resp.body


@dataclass(frozen=True)
class DirectSource:
    """A package installed from a VCS commit or an archive, as the build needs it."""

    name: str
    version: str
    kind: str  # vcs | archive
    url: str
    commit: Optional[str] = None
    subdirectory: Optional[str] = None
    hash: Optional[str] = None  # "sha256=<hex>" when recorded
    repo_path: Optional[str] = None  # an archive inside the repository (read at the commit)
    #: A local-path VCS source sealed into the experiment at capture (its file name there).
    sealed: Optional[str] = None

    @property
    def filename(self) -> str:
        """The file's name in the wheelhouse and the build context (known before fetching)."""
        if self.kind == "vcs":
            return vcs_archive_name(self.name, self.version, self.commit)
        where = self.repo_path or self.url.split("#", 1)[0]
        return where.rstrip("/").rsplit("/", 1)[-1]


def fetch_direct(
    sources: Sequence[DirectSource],
    config: IndexConfig,
    *,
    house: Optional[Wheelhouse] = None,
    read_repo_file: Optional[Callable[[str], bytes]] = None,
    read_sealed_file: Optional[Callable[[str], bytes]] = None,
    progress: Optional[Progress] = None,
) -> FetchResult:
    """Every VCS / archive package in the wheelhouse, fetched without credentials.

    ``read_repo_file(path)`` gives the bytes of a file of the repository at the experiment's
    commit (archives inside the repository); ``read_sealed_file(name)`` a file of the experiment
    (a local-path VCS source archived at capture), checked against the sha256 the capture
    recorded. Nothing outside the repository is ever read.
    """
    say = progress or (lambda _m: None)
    house = house or Wheelhouse()
    out: list[Artifact] = []
    fetched = total = 0
    for src in sources:
        algo, _, recorded = (src.hash or "").partition("=")
        recorded = recorded.lower() if algo == "sha256" else ""
        if recorded and house.get(recorded) is not None:
            path = house.get(recorded)
            assert path is not None
            out.append(
                Artifact(src.name, src.version, src.filename, recorded, path, "lock", src.kind)
            )
            continue
        if src.sealed is not None:
            if read_sealed_file is None or not recorded:
                raise UsageError(
                    f"package {src.name}: its source {src.sealed} is a file of the "
                    "experiment, which this command cannot read",
                    "rebuild with `reprobox build` or `reprobox run`",
                )
            digest, path = house.put(src.filename, [read_sealed_file(src.sealed)], [recorded])
            out.append(
                Artifact(src.name, src.version, src.filename, digest, path, "lock", "sealed")
            )
            continue
        if src.repo_path is not None:
            if read_repo_file is None:
                raise UsageError(
                    f"package {src.name}: its archive {src.repo_path} is in the "
                    "repository, which this command cannot read"
                )
            digest, path = house.put(
                src.filename, [read_repo_file(src.repo_path)], [recorded] if recorded else None
            )
            out.append(
                Artifact(
                    src.name,
                    src.version,
                    src.filename,
                    digest,
                    path,
                    "lock" if recorded else "unverified",
                    "repository",
                )
            )
            continue
        key = f"{src.kind} {src.url} {src.commit or ''} {src.subdirectory or ''}"
        known = house.recall(key) if not recorded else None
        if known is not None:  # a commit id names its tree: fetched once is fetched for good
            out.append(
                Artifact(
                    src.name, src.version, src.filename, known[0], known[1], "unverified", src.kind
                )
            )
            continue
        if src.kind == "vcs":
            say(
                f"fetching {src.name} from {strip_url_credentials(src.url)} at "
                f"{(src.commit or '')[:12]} (no credentials)"
            )
            digest, path = _git_archive(src, house)
            verified = "unverified"
            house.remember(key, digest)
        else:
            filename = src.filename
            say(f"fetching {strip_url_credentials(src.url)} (no credentials)")
            body = _anonymous_get(src.url.split("#", 1)[0], config)
            digest, path = house.put(filename, [body], [recorded] if recorded else None)
            verified = "lock" if recorded else "unverified"
        if not recorded:
            house.remember(key, digest)
        fetched += 1
        total += path.stat().st_size
        out.append(
            Artifact(
                src.name, src.version, src.filename, digest, path, verified, src.kind, fetched=True
            )
        )
    return FetchResult(tuple(out), fetched, total)


def link_into(artifacts: Iterable[Artifact], folder: Path) -> list[str]:
    """Hard-link (else copy) the artifacts into ``folder`` (flat), removing anything else there."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    for a in artifacts:
        wanted[a.filename] = a.path
    for entry in folder.iterdir():
        if entry.name not in wanted:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for name, src in wanted.items():
        dest = folder / name
        try:
            if dest.stat().st_ino == src.stat().st_ino:
                continue
        except OSError:
            pass
        place_file(src, dest)
    return sorted(wanted)


def place_file(src: Path, dest: Path) -> None:
    """``dest`` becomes ``src``'s content atomically: a hard link where the file system allows
    (no copy of a multi-GB wheel), else a copy keeping the mtime."""
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


__all__ = [
    "place_file",
    "BUILD_BACKEND",
    "Artifact",
    "DirectSource",
    "FetchResult",
    "Wheelhouse",
    "build_target",
    "fetch_direct",
    "fetch_locked",
    "link_into",
    "rank",
    "wheelhouse_dir",
]
