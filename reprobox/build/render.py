"""Pure rendering: an experiment and its environment in, Dockerfile text out.

Two stages, each testable alone: :func:`plan_image` turns the capture into a :class:`DockerPlan`
(plain data: which system packages, pinned or not, which requirement lines, which folders to copy,
which labels), validating every value on the way; :func:`render_plan` fills the template
``templates/Dockerfile.j2`` with it. Nothing here touches the disk beyond reading the template,
the network or the container engine, so ``reprobox build --dry-run`` and the golden-file tests see
exactly what a build would use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from ..model import grammar as validate
from ..errors import UsageError, ValidationError
from ..model import Environment, Experiment, Package
from ..lock.requirements import url_requirement
from ..lock.wheelhouse import DirectSource
from ..redact import strip_url_credentials
from ..store import FILE_NAME_RE
from ..templating import render_template
from . import images

#: Where ``reprobox run`` mounts the checkout in the container. Local packages are copied (and
#: installed editable) at the same place, so the installed package points into the mounted code.
WORKDIR = "/workspace"
#: Where build-time files (lock, wheels, tools) are mounted during RUN steps; never in a layer.
STAGE = "/tmp/reprobox"
#: Folders of the context's ``wheels/`` (one per install step, so that a step's cache key is
#: what it installs): ``direct`` (VCS and archive packages), ``local`` (the build backend the
#: project's own packages need); each lock layer has its own (:attr:`LockGroup.folder`).
DIRECT_WHEELS = "direct"
LOCAL_WHEELS = "local"
#: Where the image's apt step lists the system packages it could not install at their recorded
#: version ("name recorded installed", "-" for none); read back for the verdict.
SUBSTITUTIONS_FILE = "/etc/reprobox/substitutions"

INSTALLERS = ("uv", "pip")

_ARCH_TO_DEB = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "i686": "i386",
}


@dataclass(frozen=True)
class RenderOptions:
    """How to render, as opposed to what: the builder's and the installer's capabilities.

    ``buildkit`` renders cache and secret mounts (and bind mounts of the context's tools); without
    it the classic builder copies the context files in. ``installer`` is ``uv`` (the host's uv
    binary, bind-mounted into RUN steps) or ``pip`` (the base image's own pip).
    """

    buildkit: bool = True
    installer: str = "uv"
    workdir: str = WORKDIR
    #: Prefix of the BuildKit cache-mount ids (installer and apt caches shared across builds).
    cache_id: str = "reprobox"
    #: Write .pyc files at build time. On: the rerun container runs as its own user, which
    #: cannot write into the image's site-packages, so without them every run (not only the
    #: first) compiles what it imports (benchmarks/bench_build.py, "first run").
    compile_bytecode: bool = True
    #: ``RUN --network=none`` on the steps that install Python packages (BuildKit's Dockerfile
    #: frontend 1.3 and later: Docker 23+); older builders keep the default network there, but
    #: those steps still see no index and no secret.
    network_none: bool = False


@dataclass(frozen=True)
class SystemPlan:
    #: ``name=version`` when pinned, else ``name``.
    packages: tuple[str, ...] = ()
    pinned: bool = False
    note: str = ""
    warning: Optional[str] = None
    cache_key: str = "debian"
    #: Lines of the deb822 file the apt step writes (the capture host's sources), or () to keep
    #: the base image's own.
    sources: tuple[str, ...] = ()
    #: ``name=version`` as recorded, pinned or not: the step lists each one the image does not
    #: hold at that version (a substitution, read back for the verdict).
    recorded: tuple[str, ...] = ()


#: Key files a Debian or Ubuntu base image holds: a recorded source signed by another key is not
#: used (its key is not there, and signature checking stays on).
IMAGE_KEYRINGS = ("debian-archive-keyring.gpg", "ubuntu-archive-keyring.gpg")


#: Hosts of the distributions' own archives. A capture is untrusted input: its apt sources may
#: only steer the image's apt to one of these (signatures checked with the keys the base image
#: holds), never to any host a stranger names.
ARCHIVE_HOSTS = re.compile(
    r"(deb|security|snapshot|ftp|archive)\.debian\.org|ftp\.[a-z]{2}\.debian\.org"
    r"|(archive|security|ports|snapshot|old-releases)\.ubuntu\.com"
    r"|[a-z]{2}\.archive\.ubuntu\.com"
)


def is_archive_host(uri: str) -> bool:
    """``uri`` is an http(s) URI on one of :data:`ARCHIVE_HOSTS` (no port, no credentials)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and port is None
        and parts.username is None
        and bool(ARCHIVE_HOSTS.fullmatch(parts.hostname or ""))
    )


def apt_sources_file(environment: Environment) -> tuple[tuple[str, ...], list[str]]:
    """The deb822 lines that make the image's apt read the capture host's archive (state), and
    warnings for the sources left out. Each part was checked by validate.apt_source; snapshot
    archives get ``Check-Valid-Until: no`` (their Release files are old by design); signatures
    are always checked (never ``Trusted: yes``)."""
    lines: list[str] = []
    warnings: list[str] = []
    for i, src in enumerate(environment.apt_sources):
        validate.apt_source(src, f"apt_sources[{i}]")
        if not is_archive_host(src.uri):
            warnings.append(
                f"the apt source {src.uri} is not one of Debian's or Ubuntu's own "
                "archives: not used in the image (the base image's sources are)"
            )
            continue
        if src.signed_by is not None and src.signed_by not in IMAGE_KEYRINGS:
            warnings.append(
                f"the apt source {src.uri} is signed by {src.signed_by}, a key the "
                "base image does not hold: not used in the image"
            )
            continue
        if lines:
            lines.append("")
        lines += ["Types: deb", f"URIs: {src.uri}", f"Suites: {' '.join(src.suites)}"]
        if src.components:
            lines.append(f"Components: {' '.join(src.components)}")
        if src.signed_by is not None:
            lines.append(f"Signed-By: /usr/share/keyrings/{src.signed_by}")
        if src.snapshot is not None:
            lines.append("Check-Valid-Until: no")
    return tuple(lines), warnings


@dataclass(frozen=True)
class CopyDir:
    src: str  # repo-relative folder ("" for the root), under src/ in the context
    dest: str  # absolute folder in the image


@dataclass(frozen=True)
class LocalInstall:
    name: str
    path: str  # repo-relative
    dest: str  # absolute in the image
    editable: bool


@dataclass(frozen=True)
class LockGroup:
    """One layer of locked index packages, installed from ``lock/<file>`` in the context."""

    file: str
    title: str
    names: tuple[str, ...]

    @property
    def folder(self) -> str:
        """Its folder of the context's ``wheels/``: what this layer installs, nothing else."""
        return "lock-" + self.file.rsplit(".", 1)[0]


#: Packages with compiled extensions (large, and updated rarely) go in the first layer, pure-Python
#: ones in the second: moving a pure-Python package then rebuilds only the smaller layer.
_GROUP_TITLES = {
    "compiled.txt": "Locked Python packages, layer 1 of 2: those with compiled extensions "
    "(large, rarely changed).",
    "pure.txt": "Locked Python packages, layer 2 of 2: pure Python.",
    "all.txt": "Locked Python packages.",
}


def _is_pure(pkg: Package) -> bool:
    return bool(pkg.wheel_tags) and all(t.endswith("-none-any") for t in pkg.wheel_tags)


def lock_groups(packages: list[Package]) -> tuple[LockGroup, ...]:
    compiled = tuple(p.name for p in packages if not _is_pure(p))
    pure = tuple(p.name for p in packages if _is_pure(p))
    if not compiled or not pure:
        names = compiled or pure
        return (LockGroup("all.txt", _GROUP_TITLES["all.txt"], names),) if names else ()
    return (
        LockGroup("compiled.txt", _GROUP_TITLES["compiled.txt"], compiled),
        LockGroup("pure.txt", _GROUP_TITLES["pure.txt"], pure),
    )


@dataclass(frozen=True)
class DockerPlan:
    base_image: str
    exp_id: str
    commit: str
    python_version: str
    install_python: bool
    system: SystemPlan
    lock_groups: tuple[LockGroup, ...]
    direct: tuple[str, ...]
    copy_dirs: tuple[CopyDir, ...]
    local: tuple[LocalInstall, ...]
    #: What the host fetches (without credentials) for the ``direct`` lines.
    direct_sources: tuple[DirectSource, ...]
    #: Every distribution name the capture holds; anything else in the image is removed.
    expected: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    options: RenderOptions = field(default_factory=RenderOptions)
    #: Post-install changes re-applied after install: (package, path, experiment file, sha256).
    replay: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def python_mm(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    @property
    def last_step(self) -> Optional[str]:
        if self.copy_dirs:
            return "local"
        if self.direct:
            return "direct"
        if self.lock_groups:
            return "lock"
        return None

    @property
    def lock(self) -> bool:
        return bool(self.lock_groups)

    @property
    def has_system_part(self) -> bool:
        """Steps that need the network for trusted sources (Debian's archive, CPython)."""
        return self.install_python or bool(self.system.packages)


# --------------------------------------------------------------------------- planning


def _system_plan(environment: Environment, base_image: str) -> tuple[SystemPlan, list[str]]:
    warnings: list[str] = []
    host = environment.os
    target = images.base_distro(base_image)
    native = _ARCH_TO_DEB.get(host.arch or "", host.arch or "")
    specs: list[str] = []
    recorded: list[str] = []
    same_release = (
        target is not None
        and host.id == target.id
        and host.codename == target.codename
        and all(s.manager == "dpkg" for s in environment.system_packages)
    )
    for i, spkg in enumerate(environment.system_packages):
        where = f"system_packages[{i}]"
        validate.system_package(spkg.manager, spkg.name, spkg.version, where)
        if spkg.manager != "dpkg":
            validate.apt_package_name(spkg.name, f"{where}.name")
        if spkg.arch is not None:
            validate.apt_arch(spkg.arch, f"{where}.arch")
            if spkg.arch not in ("all", native):
                warnings.append(
                    f"system package {spkg.name}:{spkg.arch} is for another "
                    "architecture than the image; skipped"
                )
                continue
        specs.append(f"{spkg.name}={spkg.version}" if same_release else spkg.name)
        recorded.append(f"{spkg.name}={spkg.version}")
    if host.codename is not None:  # written into the Dockerfile's comment below
        validate.codename(host.codename, "os.codename")
    host_desc = " ".join(p for p in (host.id, host.codename) if p) or "an unknown system"
    cache_key = f"{target.id}-{target.codename}" if target else "base"
    if not specs:
        return SystemPlan(cache_key=cache_key), warnings
    if same_release:
        note = f"Pinned to the versions on the capture host ({host_desc})."
        sources, source_warnings = apt_sources_file(environment)
        warnings += source_warnings
        if sources:
            snapshots = sorted({s.snapshot for s in environment.apt_sources if s.snapshot})
            note += (
                " From the capture host's apt sources"
                + (f" (archive state {', '.join(snapshots)})" if snapshots else "")
                + "."
            )
        return SystemPlan(
            tuple(specs), True, note, None, cache_key, sources, tuple(recorded)
        ), warnings
    base_desc = str(target) if target else f"unknown (from {base_image})"
    warning = (
        f"reprobox: warning: system packages are not pinned: the capture host runs "
        f"{host_desc}, the base image's distribution is {base_desc}; versions will differ"
    )
    warnings.append(warning.removeprefix("reprobox: warning: "))
    note = f"Unpinned: the capture host ({host_desc}) is not the base's release ({base_desc})."
    return SystemPlan(
        tuple(specs), False, note, warning, cache_key, recorded=tuple(recorded)
    ), warnings


def recorded_pip(environment: Environment) -> Optional[str]:
    """The pip version of the captured environment when it is installed there from the index
    (then the image's pip, after the lock's layers, is that one)."""
    pkg = environment.package("pip")
    return pkg.version if pkg is not None and pkg.source.kind == "index" else None


def sealed_source(pkg: Package, where: str) -> str:
    """The experiment file holding a local-path VCS package's source (sealed at capture).

    The path the capture names is never read: only the file of the experiment, whose sha256
    the capture recorded. A capture without it (an older reprobox, or a too large source) is
    refused, naming the package.
    """
    src = pkg.source
    url = strip_url_credentials(str(src.url))
    if not src.path or not src.hash:
        raise UsageError(
            f"package {pkg.name} was installed from a repository on the capture machine ({url}), "
            "and the capture does not carry its source: a path of another machine is never read",
            "capture again with this version of reprobox on the machine that has the repository "
            "(it seals the commit into the experiment), or install the package from a remote "
            "repository or an index",
        )
    if not FILE_NAME_RE.match(src.path) or not src.path.endswith(".tar.gz"):
        raise ValidationError(f"{where}.path", src.path, "is not a file of the experiment")
    validate.archive_hash(src.hash, f"{where}.hash")
    if not src.hash.startswith("sha256="):
        raise ValidationError(f"{where}.hash", src.hash, "is not a sha256")
    return src.path


def direct_source(
    pkg: Package, where: str, pip_version: Optional[str] = None
) -> tuple[str, DirectSource]:
    """The requirement line installing a VCS or archive package from the context's wheels, and
    what the host must fetch for it (without credentials) into its wheelhouse.

    A ``file://`` archive is taken only from the repository (read at the experiment's commit);
    one outside the repository is never read: refused, naming the package.
    """
    src = pkg.source
    fragment: list[str] = []
    if src.kind == "vcs":
        validate.url(f"{where}.url", src.url, validate.VCS_SCHEMES, allow_scp=True)
        commit = validate.vcs_commit(src.commit, f"{where}.commit")
        vcs = src.vcs or "git"
        if vcs != "git":
            raise UsageError(
                f"package {pkg.name} was installed from a {vcs} repository",
                "only git sources can be fetched for a rebuild; install the package "
                "from an index or a git repository and re-capture",
            )
        url = str(src.url)
        sub = (
            validate.relpath(f"{where}.subdirectory", src.subdirectory)
            if src.subdirectory
            else None
        )
        sealed = None
        if url.startswith("file:") or url.startswith("git+file:"):
            sealed = sealed_source(pkg, where)
        direct = DirectSource(
            pkg.name,
            pkg.version,
            "vcs",
            url,
            commit=commit,
            subdirectory=sub,
            hash=src.hash if sealed else None,
            sealed=sealed,
        )
    else:
        validate.url(f"{where}.url", src.url, validate.ARCHIVE_SCHEMES)
        url = str(src.url).split("#", 1)[0]
        if src.hash:
            validate.archive_hash(src.hash, f"{where}.hash")
        if src.subdirectory:
            fragment.append(
                "subdirectory=" + validate.relpath(f"{where}.subdirectory", src.subdirectory)
            )
        repo_path = None
        if url.startswith("file:"):
            if not src.path or src.path.startswith("/"):
                raise UsageError(
                    f"package {pkg.name} was installed from the archive {url}, outside the "
                    "repository: reprobox never reads a file of this machine for a capture",
                    "commit the archive into the repository, or install the package from an "
                    "index, and re-capture",
                )
            repo_path = validate.relpath(f"{where}.path", src.path, allow_dot=False)
        direct = DirectSource(
            pkg.name, pkg.version, "archive", url, hash=src.hash, repo_path=repo_path
        )
    file_name = direct.filename
    validate.relpath(f"{where} file name", file_name, allow_dot=False)
    if "/" in file_name:
        raise ValidationError(f"{where}.url", src.url, "does not end in a file name")
    line = url_requirement(
        pkg.name, f"file://{STAGE}/wheels/{DIRECT_WHEELS}/{file_name}", pip_version, tuple(fragment)
    )
    return line, direct


def replay_plan(environment: Environment) -> tuple[tuple[str, str, str, str], ...]:
    """The post-install changes a rebuild re-applies (those the capture carried), checked: a
    path a package installs, a file of the experiment, a sha256."""
    out = []
    for i, c in enumerate(environment.installed_changes):
        if c.replay is None:
            continue
        where = f"installed_changes[{i}]"
        validate.package_name(c.package, f"{where}.package")
        validate.relpath(f"{where}.path", c.path, allow_dot=False)
        if c.change != "modified" or c.path.endswith(".pth"):
            raise ValidationError(
                f"{where}.replay",
                c.replay,
                "only a modified file a package installed is re-applied",
            )
        if not FILE_NAME_RE.match(c.replay):
            raise ValidationError(f"{where}.replay", c.replay, "is not a file of the experiment")
        if not c.sha256 or not re.fullmatch(r"[0-9a-f]{64}", c.sha256):
            raise ValidationError(f"{where}.sha256", c.sha256, "is not a sha256")
        out.append((c.package, c.path, c.replay, c.sha256))
    return tuple(out)


def _nested_in(path: str, others: set[str]) -> bool:
    return any(o == "." or (o != path and path.startswith(o + "/")) for o in others if o != path)


def plan_image(
    experiment: Experiment,
    environment: Environment,
    *,
    base_image: str,
    options: Optional[RenderOptions] = None,
) -> DockerPlan:
    """Everything the Dockerfile says, as data; refuses any value outside its grammar."""
    options = options or RenderOptions()
    if options.installer not in INSTALLERS:
        raise UsageError(f"unknown installer {options.installer!r} (expected uv or pip)")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", options.cache_id):
        raise UsageError(f"cache id {options.cache_id!r} is not [a-z0-9._-]")
    validate.image_tag(base_image, "base image")
    exp_id = validate.experiment_id(experiment.id or experiment.compute_id(), "id")
    version = environment.interpreter.version
    images.python_image(version, "bookworm")  # refuses a version that is not an exact X.Y.Z
    warnings: list[str] = []

    system, sys_warnings = _system_plan(environment, base_image)
    warnings += sys_warnings

    index_packages: list[Package] = []
    direct: list[str] = []
    direct_sources: list[DirectSource] = []
    local: list[LocalInstall] = []
    # the pip installer runs the image's pip: the recorded one when the lock installs it
    pip_version = recorded_pip(environment) if options.installer == "pip" else None
    for pkg in environment.packages:
        where = f"packages[{pkg.name}]"
        validate.package_name(pkg.name, f"{where}.name")
        validate.version(pkg.version, f"{where}.version")
        kind = pkg.source.kind
        if kind == "index":
            index_packages.append(pkg)
            if any(tag.rsplit("-", 1)[-1].startswith("linux_") for tag in pkg.wheel_tags):
                warnings.append(
                    f"{pkg.name} {pkg.version} was built from source on the capture host (its "
                    "wheel is linux-only, not manylinux): the image builds it again and needs "
                    "its compiler and headers; pass a base that has them with --base-image if "
                    "the build fails"
                )
        elif kind in ("vcs", "archive"):
            line, fetch = direct_source(pkg, where + ".source", pip_version)
            direct.append(line)
            direct_sources.append(fetch)
        elif kind == "directory":
            src = pkg.source
            if not (src.in_repo and src.path is not None):
                raise UsageError(
                    f"package {pkg.name} {pkg.version} was installed from the folder "
                    f"{src.path or src.url or '?'}, outside the repository: reprobox never reads "
                    "a folder of this machine for a capture",
                    "move the package into the repository (or install it from an index) and "
                    "re-capture",
                )
            rel = validate.relpath(f"{where}.source.path", src.path).rstrip("/") or "."
            dest = options.workdir if rel == "." else f"{options.workdir}/{rel}"
            local.append(LocalInstall(pkg.name, rel, dest, bool(src.editable)))
        else:  # pragma: no cover - model.from_dict refuses other kinds
            raise ValidationError(f"{where}.source.kind", kind, "is not a known source kind")

    paths = {item.path for item in local}
    copy_dirs = tuple(
        CopyDir("" if p == "." else p + "/", options.workdir + ("/" if p == "." else f"/{p}/"))
        for p in sorted(paths)
        if not _nested_in(p, paths)
    )

    base_repo = (
        base_image.split("@")[0].rsplit(":", 1)[0]
        if ":" in base_image.split("/")[-1]
        else base_image.split("@")[0]
    )
    install_python = base_repo.split("/")[-1] == "cuda"
    if install_python and options.installer != "uv":
        raise UsageError(
            f"the base image {base_image} has no Python; installing Python {version} on it "
            "needs uv on this machine",
            "install uv (`pip install uv`) or pass a base image that has Python: --base-image",
        )

    replay = replay_plan(environment)

    git = experiment.git
    labels: list[tuple[str, str]] = [
        ("reprobox.experiment", exp_id),
        ("reprobox.env-digest", validate.digest(environment.digest, "environment digest")),
        ("reprobox.python", version),
        (
            "org.opencontainers.image.title",
            validate.label_value(f"reprobox experiment {experiment.name}", "name"),
        ),
        ("org.opencontainers.image.revision", validate.vcs_commit(git.commit, "git.commit")),
        ("org.opencontainers.image.base.name", base_image),
    ]
    if git.remote:
        source = validate.label_value(strip_url_credentials(git.remote), "git.remote")
        labels.append(("org.opencontainers.image.source", source))

    return DockerPlan(
        base_image=base_image,
        exp_id=exp_id,
        commit=git.commit,
        python_version=version,
        install_python=install_python,
        system=system,
        lock_groups=lock_groups(index_packages),
        direct=tuple(direct),
        copy_dirs=copy_dirs,
        local=tuple(local),
        direct_sources=tuple(direct_sources),
        expected=tuple(sorted(p.name for p in environment.packages)),
        labels=tuple(labels),
        warnings=tuple(warnings),
        options=options,
        replay=replay,
    )


# --------------------------------------------------------------------------- rendering


def render_plan(plan: DockerPlan, part: str = "all", system_image: Optional[str] = None) -> str:
    """The Dockerfile of ``plan``: whole (``all``), or one of its two parts for builders that
    cannot turn the network off per step: ``system`` (the base, CPython and system packages,
    built with the network) and ``python`` (everything else, built with the network off, from
    ``system_image``, the system part's image)."""
    opts = plan.options
    if part not in ("all", "system", "python") or (part == "python") != bool(system_image):
        raise ValueError(f"bad Dockerfile part {part!r} (system image {system_image!r})")
    return render_template(
        "Dockerfile.j2",
        base_image=plan.base_image,
        exp_id=plan.exp_id,
        commit=plan.commit,
        python_version=plan.python_version,
        python_mm=plan.python_mm,
        install_python=plan.install_python,
        system=plan.system,
        lock_groups=plan.lock_groups,
        direct=plan.direct,
        copy_dirs=plan.copy_dirs,
        local=plan.local,
        labels=plan.labels,
        last_step=plan.last_step,
        replay=plan.replay,
        buildkit=opts.buildkit,
        cache_id=opts.cache_id,
        compile_bytecode=opts.compile_bytecode,
        network_none=opts.network_none,
        part=part,
        system_image=system_image or "",
        installer=opts.installer,
        workdir=opts.workdir,
        stage=STAGE,
        direct_folder=DIRECT_WHEELS,
        local_folder=LOCAL_WHEELS,
        uv=f"{STAGE}/tools/uv",
        substitutions_file=SUBSTITUTIONS_FILE,
    )


def render_dockerfile(
    experiment: Experiment,
    environment: Environment,
    *,
    base_image: str,
    options: Optional[RenderOptions] = None,
) -> str:
    """The experiment's Dockerfile (pure: same inputs, same text)."""
    return render_plan(plan_image(experiment, environment, base_image=base_image, options=options))
