"""Pure rendering: an experiment and its environment in, Dockerfile text out.

Two stages, each testable alone: :func:`plan_image` turns the capture into a :class:`DockerPlan`
(plain data: which system packages, pinned or not, which requirement lines, which folders to copy,
which labels), validating every value on the way; :func:`render_plan` fills the template
``templates/Dockerfile.j2`` with it. Nothing here touches the disk beyond reading the template,
the network or the container engine, so ``reprobox build --dry-run`` and the golden-file tests see
exactly what a build would use.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from typing import Optional

from .. import validate
from ..errors import UsageError, ValidationError
from ..model import Environment, Experiment, Package
from ..lock.wheelhouse import DirectSource
from ..redact import strip_url_credentials
from . import images

#: Where ``reprobox run`` mounts the checkout in the container. Local packages are copied (and
#: installed editable) at the same place, so the installed package points into the mounted code.
WORKDIR = "/workspace"
#: Where build-time files (lock, wheels, tools) are mounted during RUN steps; never in a layer.
STAGE = "/tmp/reprobox"

INSTALLERS = ("uv", "pip")

_ARCH_TO_DEB = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                "armv7l": "armhf", "ppc64le": "ppc64el", "s390x": "s390x", "i686": "i386"}


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
    return (LockGroup("compiled.txt", _GROUP_TITLES["compiled.txt"], compiled),
            LockGroup("pure.txt", _GROUP_TITLES["pure.txt"], pure))


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
                warnings.append(f"system package {spkg.name}:{spkg.arch} is for another "
                                "architecture than the image; skipped")
                continue
        specs.append(f"{spkg.name}={spkg.version}" if same_release else spkg.name)
    host_desc = " ".join(p for p in (host.id, host.codename) if p) or "an unknown system"
    cache_key = f"{target.id}-{target.codename}" if target else "base"
    if not specs:
        return SystemPlan(cache_key=cache_key), warnings
    if same_release:
        note = f"Pinned to the versions on the capture host ({host_desc})."
        return SystemPlan(tuple(specs), True, note, None, cache_key), warnings
    base_desc = str(target) if target else f"unknown (from {base_image})"
    warning = (f"reprobox: warning: system packages are not pinned: the capture host runs "
               f"{host_desc}, the base image's distribution is {base_desc}; versions will differ")
    warnings.append(warning.removeprefix("reprobox: warning: "))
    note = f"Unpinned: the capture host ({host_desc}) is not the base's release ({base_desc})."
    return SystemPlan(tuple(specs), False, note, warning, cache_key), warnings


def direct_source(pkg: Package, where: str) -> tuple[str, DirectSource]:
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
            raise UsageError(f"package {pkg.name} was installed from a {vcs} repository",
                             "only git sources can be fetched for a rebuild; install the package "
                             "from an index or a git repository and re-capture")
        url = str(src.url)
        if url.startswith("file:") or url.startswith("git+file:"):
            raise UsageError(
                f"package {pkg.name} was installed from a repository on the capture machine "
                f"({strip_url_credentials(url)}): a path outside the repository is never read",
                "install it from a remote repository or an index and re-capture",
            )
        sub = (validate.relpath(f"{where}.subdirectory", src.subdirectory)
               if src.subdirectory else None)
        direct = DirectSource(pkg.name, pkg.version, "vcs", url, commit=commit, subdirectory=sub)
    else:
        validate.url(f"{where}.url", src.url, validate.ARCHIVE_SCHEMES)
        url = str(src.url).split("#", 1)[0]
        if src.hash:
            validate.archive_hash(src.hash, f"{where}.hash")
        if src.subdirectory:
            fragment.append("subdirectory=" + validate.relpath(f"{where}.subdirectory",
                                                               src.subdirectory))
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
        direct = DirectSource(pkg.name, pkg.version, "archive", url, hash=src.hash,
                              repo_path=repo_path)
    file_name = direct.filename
    validate.relpath(f"{where} file name", file_name, allow_dot=False)
    if "/" in file_name:
        raise ValidationError(f"{where}.url", src.url, "does not end in a file name")
    line = f"{pkg.name} @ file://{STAGE}/wheels/{file_name}"
    if fragment:
        line += "#" + "&".join(fragment)
    return line, direct


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
    validate.validate_experiment(experiment, environment)
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
            line, fetch = direct_source(pkg, where + ".source")
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
        for p in sorted(paths) if not _nested_in(p, paths)
    )

    base_repo = base_image.split("@")[0].rsplit(":", 1)[0] if ":" in base_image.split("/")[-1] \
        else base_image.split("@")[0]
    install_python = base_repo.split("/")[-1] == "cuda"
    if install_python and options.installer != "uv":
        raise UsageError(
            f"the base image {base_image} has no Python; installing Python {version} on it "
            "needs uv on this machine",
            "install uv (`pip install uv`) or pass a base image that has Python: --base-image",
        )

    git = experiment.git
    labels: list[tuple[str, str]] = [
        ("reprobox.experiment", exp_id),
        ("reprobox.env-digest", validate.digest(environment.digest, "environment digest")),
        ("reprobox.python", version),
        ("org.opencontainers.image.title", validate.label_value(
            f"reprobox experiment {experiment.name}", "name")),
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
    )


# --------------------------------------------------------------------------- rendering


@cache
def _jinja_env():  # type: ignore[no-untyped-def]
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reprobox.templates", "."),
        autoescape=False,  # a Dockerfile, not HTML: values are shell- or JSON-quoted explicitly
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["json"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    return env


def render_template(name: str, **context: object) -> str:
    """Render one of the package's templates (``templates/<name>``)."""
    return _jinja_env().get_template(name).render(**context)


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
        buildkit=opts.buildkit,
        cache_id=opts.cache_id,
        compile_bytecode=opts.compile_bytecode,
        network_none=opts.network_none,
        part=part,
        system_image=system_image or "",
        installer=opts.installer,
        workdir=opts.workdir,
        stage=STAGE,
        uv=f"{STAGE}/tools/uv",
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
