"""The target interpreter: find it, run the probe inside it, turn its raw output into the model.

reprobox may live apart from the environment it records (pipx / uv tool style), so everything
about the target is learned by running ``probe.py`` (standard library only) *in* the target
interpreter, once. This module is the host side: how the probe is run, and the parsing of its
JSON into :mod:`reprobox.model` objects (PEP 503 names, PEP 610 sources with credentials
stripped, paths relative to the repository). Which interpreter, and the probe's command line,
are in :mod:`.interp` (importable before the rest of reprobox, see :mod:`.early`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import proc
from ..errors import InterpreterError, ReproboxError, UsageError, ValidationError
from ..model import InstalledChange, Interpreter, Package, PackageSource
from ..model import grammar as validate
from ..names import canonical_name, vcs_archive_name
from ..redact import strip_url_credentials
from ..store import FILE_NAME_RE
from . import early
from .interp import (
    _FIX_PYTHON,
    PROBE,
    answer_file,
    find_target_python as find_target_python,
    probe_cache_file,
    probe_command,
    probe_env,
    resolve_target as resolve_target,
)
from .probecache import ResultCache, usable

if TYPE_CHECKING:
    from concurrent.futures import Future

PROBE_VERSION = 1
#: A cold probe of a large environment reads a few thousand small files; a minute is generous.
PROBE_TIMEOUT = 120.0
MIN_PYTHON = (3, 8)

#: Consumer names the probe uses for what is not a distribution.
PYTHON_USER = "<python>"
UNKNOWN_USER = "<unknown>"

# --------------------------------------------------------------------------- running the probe


def _python_version(python: Path, env: Mapping[str, str]) -> str | None:
    try:
        out = proc.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            env=env,
            check=False,
            timeout=30,
        )
    except (ReproboxError, OSError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_probe(
    python: Path, cache_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``probe.py`` in ``python`` and return its JSON object.

    ``cache_dir`` holds one cache file per interpreter (ELF parses, RECORD listings) so that a
    second capture re-reads only what changed. ``environ`` is the user's environment (default:
    this process's); the probe gets it minus the ``PYTHON*`` variables that would skew it. A
    missing, broken or too old interpreter, or output that is not the probe's JSON, raises
    :class:`InterpreterError`.
    """
    python = Path(python)
    if not PROBE.is_file():
        raise InterpreterError(
            f"reprobox's probe script is missing ({PROBE})",
            "reinstall reprobox: `pip install --force-reinstall reprobox`",
        )
    user_env = dict(os.environ if environ is None else environ)
    env = probe_env(user_env)
    cache_file = None if cache_dir is None else probe_cache_file(cache_dir, python)
    argv = probe_command(python, cache_file, user_env, PROBE)
    memo = None
    if cache_file is not None and usable(python, user_env):
        memo = ResultCache(answer_file(cache_file), python, env, PROBE)
        # checked before the command line loaded (a later capture), else here
        checked = early.checked_answer(memo.path, python, env)
        cached = checked[0] if checked is not None else memo.load()
        if cached is not None:
            return _host_warnings(cached, user_env)
        memo.probe_starts()
    what = f"inspecting {python}"
    hint = f"check that the interpreter starts: run `{python} -c 'import sys'`"
    try:
        # the same probe, started before the command line loaded (a first capture)
        adopted = early.adopt(argv, env, PROBE_TIMEOUT, what, hint)
        if adopted is not None:
            result, started_ns = adopted
            if memo is not None:  # its answer is stale if anything changed since it started
                memo.started_ns = min(memo.started_ns or started_ns, started_ns)
        else:
            result = proc.run(
                argv, env=env, check=False, timeout=PROBE_TIMEOUT, what=what, hint=hint
            )
    except OSError as exc:  # permission denied, exec format error
        raise InterpreterError(f"cannot run {python}: {exc.strerror or exc}", _FIX_PYTHON) from None
    except ReproboxError as exc:
        raise InterpreterError(exc.message, exc.hint or _FIX_PYTHON) from None
    if result.returncode != 0:
        version = _python_version(python, env)
        if version is not None:
            parts = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
            if parts < MIN_PYTHON:
                raise InterpreterError(
                    f"{python} is Python {version}; reprobox records Python "
                    f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
                    "pass a newer interpreter with --python",
                )
        tail = "\n".join((result.stderr or "").strip().splitlines()[-8:])
        if version is not None and PROBE.name in (result.stderr or ""):
            raise InterpreterError(
                f"the environment probe failed inside {python} (Python {version}):\n{tail}",
                "this is a reprobox bug: please report it with the lines above; meanwhile "
                "`reprobox capture --python` another interpreter of the same environment",
            )
        raise InterpreterError(
            f"{python} is not a working Python interpreter (exit status {result.returncode})"
            + (f":\n{tail}" if tail else ""),
            _FIX_PYTHON,
        )
    lines = (result.stdout or "").strip().splitlines()
    try:
        raw = json.loads(lines[-1]) if lines else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or raw.get("probe_version") != PROBE_VERSION:
        raise InterpreterError(
            f"{python} did not answer the environment probe with the expected JSON",
            "something in that environment writes to stdout at start-up (a .pth file or "
            f"sitecustomize); run `{python} -c pass` to see it, then remove it",
        )
    if memo is not None:
        memo.store(raw)
    return _host_warnings(raw, user_env)


def _host_warnings(raw: dict[str, Any], user_env: Mapping[str, str]) -> dict[str, Any]:
    """What this side adds to the probe's warnings."""
    warnings = raw.setdefault("warnings", [])
    if user_env.get("PYTHONPATH"):
        warnings.append(
            "PYTHONPATH is set: packages reachable only through it are not recorded and will "
            "be missing from a rebuild; install them into the environment instead"
        )
    return raw


def start_probe(
    python: Path, cache_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Future[dict[str, Any]]:
    """:func:`run_probe` on a worker thread, so that other capture stages (git, hardware) run
    while the target interpreter works; ``.result()`` returns its dict or raises its error."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprobox-probe")
    try:
        return pool.submit(run_probe, python, cache_dir, environ)
    finally:
        pool.shutdown(wait=False)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ProbeResult:
    """What the probe found, in model form, plus the raw pieces other capture stages read."""

    interpreter: Interpreter
    #: Active distributions (first on sys.path wins), sorted by normalized name.
    packages: tuple[Package, ...]
    #: soname -> realpath of the system library it resolves to, None when missing here.
    #: Libraries shipped inside wheels and those from the interpreter's own prefix are left out.
    needed_libraries: dict[str, str | None]
    #: soname -> normalized names of the distributions needing it (``<python>`` for the
    #: interpreter and its stdlib extension modules, ``<unknown>`` for unclaimed files).
    library_users: dict[str, list[str]]
    #: The probe's ``os`` section: ``release`` (os-release fields), system, kernel, machine, glibc.
    os_raw: dict[str, Any]
    #: Small version files (``torch/version.py``...) by path relative to site-packages.
    files: dict[str, str]
    warnings: list[str]
    #: Distributions hidden behind an earlier one of the same name (not importable).
    shadowed: tuple[Package, ...] = ()
    #: soname -> realpath for libraries inside the interpreter's prefix (libpython of a pyenv
    #: build, a conda env's lib/): part of the interpreter/env, not of the OS.
    prefix_libraries: dict[str, str] = field(default_factory=dict)
    #: soname -> a few of the files needing it (diagnosis: which module wants a missing lib).
    library_files: dict[str, list[str]] = field(default_factory=dict)
    #: Installation kind of the base interpreter behind a venv (pyenv, uv, system...).
    base_kind: str | None = None
    #: Installed files that differ from their RECORD (see ``probe.installed_file_changes``).
    installed_changes: tuple[InstalledChange, ...] = ()
    #: (package, path) -> content of a changed file that is small UTF-8 text (replay candidates).
    changed_texts: dict[tuple[str, str], str] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: The full probe output, for anything not lifted into the fields above.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def libraries_by_path(self) -> dict[str, list[str]]:
        """realpath -> sonames resolved to it: the input :func:`system.owning_packages` wants."""
        out: dict[str, list[str]] = {}
        for soname, path in sorted(self.needed_libraries.items()):
            if path:
                out.setdefault(path, []).append(soname)
        return out


def clean_url(url: str) -> str:
    """Strip credentials but keep the ``git@`` user of ssh URLs (PEP 610 allows it; no secret)."""
    cleaned = strip_url_credentials(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return cleaned
    if parts.scheme.endswith("ssh") and parts.username == "git" and parts.password is None:
        c = urlsplit(cleaned)
        return urlunsplit((c.scheme, "git@" + c.netloc, c.path, c.query, c.fragment))
    return cleaned


def file_url_path(url: str) -> str | None:
    """The local path of a ``file://`` URL (None for any other scheme)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        return None
    return unquote(parts.path)


def _local_path(path: str, repo_root: Path) -> tuple[str, bool]:
    """A path relative to the repository (POSIX) when inside it, else absolute."""
    full = Path(path)
    try:
        rel = full.resolve().relative_to(repo_root.resolve())
    except (ValueError, OSError):
        return full.as_posix(), False
    return rel.as_posix() or ".", True


def _archive_hash(info: Mapping[str, Any]) -> str | None:
    hashes = info.get("hashes")
    if isinstance(hashes, dict) and hashes:
        if isinstance(hashes.get("sha256"), str):
            return f"sha256={hashes['sha256']}"
        algo = min(hashes)
        return f"{algo}={hashes[algo]}"
    legacy = info.get("hash")
    if isinstance(legacy, str) and "=" in legacy:
        return legacy
    return None


def source_from_direct_url(direct: Any, repo_root: Path) -> tuple[PackageSource, str | None]:
    """PEP 610 ``direct_url.json`` -> :class:`PackageSource`, plus a warning if it is malformed."""
    if not isinstance(direct, dict) or not isinstance(direct.get("url"), str):
        return PackageSource("index"), "direct_url.json has no url"
    url = direct["url"]
    sub = direct.get("subdirectory")
    subdirectory = sub if isinstance(sub, str) else None
    local = file_url_path(url)
    if isinstance(direct.get("vcs_info"), dict):
        vcs = direct["vcs_info"]
        return PackageSource(
            kind="vcs",
            url=clean_url(url),
            vcs=vcs.get("vcs") if isinstance(vcs.get("vcs"), str) else None,
            commit=vcs.get("commit_id") if isinstance(vcs.get("commit_id"), str) else None,
            requested_revision=vcs.get("requested_revision")
            if isinstance(vcs.get("requested_revision"), str)
            else None,
            subdirectory=subdirectory,
        ), None
    if isinstance(direct.get("archive_info"), dict):
        path = None
        if local is not None:
            path, _inside = _local_path(local, repo_root)
        return PackageSource(
            kind="archive",
            url=clean_url(url),
            hash=_archive_hash(direct["archive_info"]),
            subdirectory=subdirectory,
            path=path,  # repo-relative when the archive lies inside the repository
        ), None
    if isinstance(direct.get("dir_info"), dict):
        if local is None:
            return PackageSource("directory", url=clean_url(url)), (
                f"direct_url.json names a folder by a non-file URL {clean_url(url)!r}"
            )
        path, in_repo = _local_path(local, repo_root)
        return PackageSource(
            kind="directory",
            path=path,
            editable=bool(direct["dir_info"].get("editable", False)),
            in_repo=in_repo,
            subdirectory=subdirectory,
        ), None
    return PackageSource("index"), "direct_url.json has none of vcs_info, archive_info, dir_info"


_PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


def _project_root(folder: str) -> str:
    """The project folder of a ``develop`` install (its egg-info may sit in ``src/``)."""
    p = Path(folder)
    for candidate in (p, p.parent):
        if any((candidate / f).is_file() for f in _PROJECT_FILES):
            return os.fspath(candidate)
    return folder


def check_versions(raw: Mapping[str, Any]) -> None:
    """Stop a capture whose environment has a distribution in use with no version an installer
    takes on a ``name==version`` line (a broken install, or a legacy non-PEP 440 version),
    naming its folder and what to do. Shadowed ones are not in use: they stay warnings."""
    for rec in raw.get("distributions") or ():
        if not isinstance(rec, Mapping):
            continue
        display = str(rec.get("name") or "")
        where = str(rec.get("metadata_dir") or display)
        version = str(rec.get("version") or "")
        name = canonical_name(display) or "NAME"
        if not version:
            problem = rec.get("problem") or "its metadata has no Version"
            raise UsageError(
                f"{where} is a broken install: {problem}, so there is no version of it to record",
                f"reinstall it (`python -m pip install --force-reinstall --no-deps {name}`) or "
                "remove that folder, then capture again",
            )
        try:
            validate.version(version, f"the version of {display}")
        except ValidationError:
            raise UsageError(
                f"{display} {version!r} ({where}) is not a PEP 440 version, which no installer "
                "takes on a requirement line, so it cannot be locked or rebuilt",
                f"install a release of {name} with a PEP 440 version, or uninstall it, then "
                "capture again",
            ) from None


def _package(rec: Mapping[str, Any], repo_root: Path, warnings: list[str]) -> Package:
    display = str(rec.get("name") or "")
    where = rec.get("metadata_dir") or display
    if rec.get("problem"):
        warnings.append(f"{where}: {rec['problem']} (recorded as {display} {rec.get('version')!r})")
    if rec.get("direct_url_error"):
        warnings.append(f"{where}: {rec['direct_url_error']}")
    if rec.get("direct_url") is not None:
        source, problem = source_from_direct_url(rec["direct_url"], repo_root)
        if problem:
            warnings.append(f"{where}: {problem}")
    elif rec.get("develop"):
        path, in_repo = _local_path(_project_root(str(rec.get("project_dir"))), repo_root)
        source = PackageSource(kind="directory", path=path, editable=True, in_repo=in_repo)
    else:
        source = PackageSource("index")
    return Package(
        name=canonical_name(display),
        version=str(rec.get("version") or ""),
        source=source,
        installer=rec.get("installer") or None,
        requested=bool(rec.get("requested")),
        wheel_tags=tuple(t for t in rec.get("wheel_tags") or () if isinstance(t, str)),
        # the model stores the spelling only where it differs from the normalized name
        display_name=display if display != canonical_name(display) else None,
    )


def _interpreter(raw: Mapping[str, Any]) -> Interpreter:
    if not isinstance(raw.get("implementation"), str) or not isinstance(raw.get("version"), str):
        raise InterpreterError(
            "the environment probe did not report the interpreter version",
            "report this as a reprobox bug, with the output of `python -VV`",
        )
    return Interpreter(
        implementation=raw["implementation"],
        version=raw["version"],
        abi=raw.get("abi"),
        soabi=raw.get("soabi"),
        platform=raw.get("platform"),
        build=raw.get("build") or None,
        compiler=raw.get("compiler") or None,
        kind=raw.get("kind"),
        gil_disabled=bool(raw.get("gil_disabled")),
        platform_tags=tuple(raw.get("platform_tags") or ()),
        executable=raw.get("executable"),
    )


_HEX64 = re.compile(r"[0-9a-f]{64}")


def installed_changes(
    dists: Any, warnings: Optional[list[str]] = None
) -> tuple[tuple[InstalledChange, ...], dict[tuple[str, str], str]]:
    """The probe's per-distribution ``installed_changes`` as model records, and the texts."""
    out: list[InstalledChange] = []
    texts: dict[tuple[str, str], str] = {}
    for rec in dists or ():
        if not isinstance(rec, Mapping) or not isinstance(rec.get("installed_changes"), list):
            continue
        name = canonical_name(str(rec.get("name") or ""))
        listed = []
        for c in rec["installed_changes"]:
            if not isinstance(c, Mapping) or not isinstance(c.get("path"), str):
                continue
            change = c.get("change")
            if change not in ("modified", "missing", "added"):
                continue
            size = c.get("size") if isinstance(c.get("size"), int) else None
            digest = c.get("sha256") if isinstance(c.get("sha256"), str) else None
            if digest is not None and not _HEX64.fullmatch(digest):
                digest = None
            out.append(InstalledChange(name, c["path"], change, size, digest))
            listed.append(f"{c['path']} ({change})")
            if isinstance(c.get("text"), str):
                texts[(name, c["path"])] = c["text"]
        more = rec.get("installed_changes_more")
        if warnings is not None and listed:
            extra = f" and {more} more" if isinstance(more, int) and more else ""
            warnings.append(
                f"{len(listed)} installed file(s) of {rec.get('name')} differ from what was "
                f"installed: {', '.join(listed[:5])}{' ...' if len(listed) > 5 else ''}{extra}; "
                "a rebuild installs the original files"
            )
    return tuple(out), texts


def parse_probe(raw: Mapping[str, Any], repo_root: Path) -> ProbeResult:
    """Turn the probe's JSON into model objects (see :class:`ProbeResult`)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("interpreter"), Mapping):
        raise InterpreterError(
            "the environment probe returned no interpreter section", "report this as a reprobox bug"
        )
    repo_root = Path(repo_root)
    warnings = [str(w) for w in raw.get("warnings") or ()]
    interp = raw["interpreter"]
    packages = [_package(rec, repo_root, warnings) for rec in raw.get("distributions") or ()]
    shadowed = []
    editable = {
        (p.name, p.version) for p in packages if p.source.kind == "directory" and p.source.editable
    }
    for rec in raw.get("shadowed") or ():
        pkg = _package(rec, repo_root, [])
        shadowed.append(pkg)
        if (pkg.name, pkg.version) in editable and str(rec.get("metadata_dir") or "").endswith(
            ".egg-info"
        ):
            # the .egg-info an editable install leaves in the project's source folder: the
            # build's by-product, not a stale copy (the installed dist-info is the one in use)
            continue
        warnings.append(
            f"{pkg.display_name or pkg.name} {pkg.version} in {rec.get('site')} is shadowed by "
            f"{rec.get('shadowed_by')} and cannot be imported; remove the stale copy"
        )
    changes, texts = installed_changes(raw.get("distributions"), warnings)
    needed: dict[str, str | None] = {}
    users: dict[str, list[str]] = {}
    prefix_libs: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    native = raw.get("native") or {}
    for soname, rec in sorted((native.get("libraries") or {}).items()):
        names = sorted(
            {u if u.startswith("<") else canonical_name(u) for u in rec.get("users", ())}
        )
        if rec.get("provider") == "python" and rec.get("realpath"):
            prefix_libs[soname] = rec["realpath"]
            continue
        needed[soname] = rec.get("realpath")
        users[soname] = names
        files[soname] = [str(f) for f in rec.get("files") or ()]
    return ProbeResult(
        interpreter=_interpreter(interp),
        packages=tuple(sorted(packages, key=lambda p: p.name)),
        needed_libraries=needed,
        library_users=users,
        os_raw=dict(raw.get("os") or {}),
        files={str(k): str(v) for k, v in (raw.get("files") or {}).items()},
        warnings=warnings,
        shadowed=tuple(shadowed),
        prefix_libraries=prefix_libs,
        library_files=files,
        base_kind=interp.get("base_kind"),
        installed_changes=changes,
        changed_texts=texts,
        raw=dict(raw),
    )


# --------------------------------------------------------------------------- local VCS sources

#: A sealed source archive is a file of the experiment: the store's cap for a record file.
SEALED_SOURCE_CAP = 8 * 1024 * 1024


def local_vcs_path(url: str | None) -> str | None:
    """The folder of a VCS URL naming a repository on this machine (``git+file:///...``)."""
    if not url:
        return None
    bare = url.split("+", 1)[1] if url.startswith(("git+", "hg+", "svn+", "bzr+")) else url
    return file_url_path(bare)


def sealed_source_name(pkg: Package) -> str:
    """The experiment file holding a local VCS source at its commit (the wheelhouse name too)."""
    return vcs_archive_name(pkg.name, pkg.version, pkg.source.commit)


def _archive_local_git(pkg: Package, folder: str) -> bytes:
    """``git archive`` of the package's commit from the repository on this machine."""
    src = pkg.source
    label = f"package {pkg.name} {pkg.version}"
    fix = (
        f"make commit {src.commit} reachable in {folder} (or install {pkg.name} from a remote "
        "repository or an index) and capture again"
    )
    if not Path(folder).is_dir():
        raise _refuse(
            f"{label} was installed from the repository {folder} on this machine, which no "
            "longer exists, so its commit cannot be sealed into the capture",
            fix,
        )
    git = [
        "git",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "protocol.allow=never",
        "-C",
        folder,
    ]
    found = proc.run([*git, "cat-file", "-e", f"{src.commit}^{{commit}}"], check=False, timeout=60)
    if found.returncode != 0:
        raise _refuse(
            f"{label} was installed from {folder} at commit {src.commit}, which that "
            "repository does not hold (rewritten or not fetched)",
            fix,
        )
    tree = f"{src.commit}:{src.subdirectory}" if src.subdirectory else str(src.commit)
    with tempfile.TemporaryDirectory(prefix="reprobox-seal-") as tmp:
        out = Path(tmp) / "source.tar.gz"
        done = proc.run(
            [
                *git,
                "archive",
                "--format=tar.gz",
                f"--prefix={canonical_name(pkg.name)}-{pkg.version}/",
                f"--output={out}",
                tree,
            ],
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            raise _refuse(
                f"{label}: git archive of commit {src.commit} in {folder} failed: {tail[0]}", fix
            )
        return out.read_bytes()


def _refuse(message: str, hint: str) -> ReproboxError:
    return UsageError(message, hint)


def seal_local_vcs(
    packages: tuple[Package, ...] | list[Package],
) -> tuple[list[Package], dict[str, bytes], list[str]]:
    """Local-path VCS packages exported at their commit into files of the experiment.

    A package installed from ``git+file:///path@commit`` can be rebuilt only where that path
    exists. The capture runs on the user's own machine, where it does: the commit is archived
    there (``git archive``) into a file of the experiment, sealed by the experiment's manifest,
    and its sha256 is recorded in the package's source (``path`` names the file, ``hash`` its
    digest). A rebuild installs from that file and never reads a path the capture names. A
    commit the repository no longer holds refuses the capture (exit 2, naming the package).
    """
    out: list[Package] = []
    files: dict[str, bytes] = {}
    warnings: list[str] = []

    for pkg in packages:
        src = pkg.source
        folder = local_vcs_path(src.url) if src.kind == "vcs" else None
        if folder is None:
            out.append(pkg)
            continue
        if (src.vcs or "git") != "git" or not src.commit:
            warnings.append(
                f"package {pkg.name} was installed from the {src.vcs} repository "
                f"{folder} on this machine: a rebuild cannot fetch it"
            )
            out.append(pkg)
            continue

        name = sealed_source_name(pkg)
        if not FILE_NAME_RE.match(name):
            warnings.append(
                f"package {pkg.name} was installed from the repository {folder} on "
                "this machine, and its name or version is too long for a file of the "
                "capture: a rebuild cannot install it"
            )
            out.append(pkg)
            continue
        data = _archive_local_git(pkg, folder)
        if len(data) > SEALED_SOURCE_CAP:
            warnings.append(
                f"package {pkg.name} was installed from the repository {folder} on this machine; "
                f"its source at {src.commit[:12]} is {len(data) // 1024} KiB, more than a capture "
                "carries: a rebuild cannot install it. Push that commit to a remote repository "
                "and install it from there"
            )
            out.append(pkg)
            continue
        digest = hashlib.sha256(data).hexdigest()
        files[name] = data
        out.append(replace(pkg, source=replace(src, path=name, hash=f"sha256={digest}")))
        warnings.append(
            f"package {pkg.name} was installed from the repository {folder} on this machine: its "
            f"source at commit {src.commit[:12]} is sealed into the experiment as {name} "
            f"({max(1, len(data) // 1024)} KiB, committed with it), so a rebuild needs no path "
            "of this machine"
        )
    return out, files, warnings


# --------------------------------------------------------------------------- post-install changes

#: At most this much changed content is carried by one capture (all replayed files together).
REPLAY_TOTAL_CAP = 1024 * 1024


def replay_name(change: InstalledChange) -> str:
    """The experiment file holding a changed installed file's content."""
    return f"installed-{(change.sha256 or '')[:20]}.txt"


def carry_changes(
    changes: tuple[InstalledChange, ...], texts: Mapping[tuple[str, str], str], red: Any
) -> tuple[tuple[InstalledChange, ...], dict[str, bytes], list[str]]:
    """Which post-install changes the capture carries, so that a rebuild re-applies them.

    Carried: a file the distribution's RECORD lists (``modified``), small UTF-8 text (the probe
    sends the content only then), not a ``.pth`` file, in which the redaction pass finds no
    secret, up to :data:`REPLAY_TOTAL_CAP` in all. Its content becomes a sealed file of the
    experiment and the change names it (``replay``). Every other change is only recorded (its
    size and sha256): verify then reports it.
    """
    out: list[InstalledChange] = []
    files: dict[str, bytes] = {}
    warnings: list[str] = []
    total = 0
    for c in changes:
        text = texts.get((c.package, c.path))
        reason = None
        if c.change != "modified":
            reason = "it was not installed by the package" if c.change == "added" else None
        elif text is None or c.sha256 is None:
            reason = "it is not small text"
        elif c.path.endswith(".pth"):
            reason = "it is a .pth file"
        elif red.file_text(text, c.path) != text:
            reason = "it holds what looks like a secret"
        elif total + len(text.encode("utf-8")) > REPLAY_TOTAL_CAP:
            reason = "the capture carries at most 1 MiB of changed files"
        data = text.encode("utf-8") if text is not None else b""
        if reason is None and hashlib.sha256(data).hexdigest() != c.sha256:
            reason = "its content changed while it was read"
        if reason is None:
            name = replay_name(c)
            files[name] = data
            total += len(data)
            out.append(replace(c, replay=name))
            continue
        out.append(c)
        if c.change != "missing":
            warnings.append(
                f"the change to {c.path} of {c.package} is recorded but not carried "
                f"({reason}): a rebuild has the file as installed, and verify says so"
            )
    return tuple(out), files, warnings


#: Bounds of the stale-source check of one package: files hashed, bytes read.
_STALE_MAX_FILES = 5000
_STALE_MAX_BYTES = 64 * 1024 * 1024


def stale_local_sources(
    packages: tuple[Package, ...] | list[Package],
    distributions: Any,
    repo_root: Path,
) -> list[str]:
    """Warnings for packages installed (not editable) from a folder of the repository whose
    source changed since: the run used the installed copy, a rerun builds the folder as it is
    recorded. A file is compared where the source has it at the installed path, flat or under
    ``src/``; a package whose layout maps files otherwise is not judged."""
    local = {
        canonical_name(p.name): p
        for p in packages
        if p.source.kind == "directory"
        and p.source.in_repo
        and not p.source.editable
        and p.source.path is not None
    }
    if not local or not isinstance(distributions, list):
        return []
    from ..payload import probe  # lazy: RECORD rows and plain-file hashing, as the probe reads

    root = os.path.realpath(repo_root)
    warnings: list[str] = []
    for d in distributions:
        if not isinstance(d, Mapping) or not d.get("has_record"):
            continue
        pkg = local.get(canonical_name(str(d.get("name") or "")))
        meta = d.get("metadata_dir")
        if pkg is None or not isinstance(meta, str) or pkg.source.path is None:
            continue
        folder = os.path.realpath(os.path.join(root, pkg.source.path))
        if not (folder == root or folder.startswith(root + os.sep)) or not os.path.isdir(folder):
            continue
        differing: list[tuple[str, str]] = []
        read = 0
        rows = [
            (rel, digest)
            for rel, _size, digest in probe.parse_record_rows(os.path.join(meta, "RECORD"))
            if digest
            and not rel.startswith(("/", ".."))
            and "\\" not in rel
            and ".dist-info/" not in rel
        ]
        for rel, recorded in rows[:_STALE_MAX_FILES]:
            for base in (folder, os.path.join(folder, "src")):
                cand = os.path.realpath(os.path.join(base, rel))
                if not cand.startswith(folder + os.sep) or not os.path.isfile(cand):
                    continue
                read += os.path.getsize(cand)
                if read > _STALE_MAX_BYTES:
                    break
                if probe._sha256_file(cand) != recorded:
                    differing.append((rel, os.path.relpath(cand, root)))
                break
            if read > _STALE_MAX_BYTES:
                break
        if differing:
            rel, src = differing[0]
            more = f" (and {len(differing) - 1} more file(s))" if len(differing) > 1 else ""
            warnings.append(
                f"package {pkg.name} {pkg.version} was installed from {pkg.source.path} before "
                f"its source changed: the run used the installed {rel}, which differs from "
                f"{src}{more}, and a rerun builds the source as recorded; reinstall it "
                f"(`pip install {shlex.quote('./' + pkg.source.path)}`, or `pip install -e` to "
                "follow the source) "
                "and capture again"
            )
    return warnings
