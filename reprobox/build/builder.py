"""build_experiment: a stored experiment -> its container image (the steps are in the package's
docstring, :mod:`reprobox.build`); rendering is pure (:mod:`.render`), everything with side
effects is here."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import platform
import re
import threading
from secrets import token_hex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .. import __version__, proc
from ..errors import EngineError, UsageError
from ..store import FILE_NAME_RE, Store, StoredExperiment
from ..engine import BuildRequest, Engine, EngineBuild, get_engine, step_titles
from ..lock import read_index_config
from ..lock import uv as lock_uv
from ..lock.checks import MAX_LOCK_BYTES, Pin, check_pylock, check_requirements_lock
from ..lock.select import capture_target
from ..lock.wheelhouse import (
    Artifact,
    Artifacts,
    DirectSource,
    Wheelhouse,
    build_target,
    fetch_direct,
    fetch_locked,
)
from ..model import grammar as validate
from ..names import canonical_name
from ..workspace.git import validate_commit
from .context import (
    ContextInputs,
    SYSTEM_DOCKERFILE,
    ContextLock,
    SecretFiles,
    assemble_context,
    context_dir,
    forward_index_config,
    system_context,
    write_if_changed,
)
from .images import (
    checked_image_flag,
    explain_base_choice,
    pyproject_base_warning,
    select_base_image,
)
from .render import WORKDIR, DockerPlan, RenderOptions, plan_image, render_dockerfile, render_plan
from ..progress import Progress

__all__ = [
    "WORKDIR",
    "BuildResult",
    "RenderOptions",
    "build_experiment",
    "default_tag",
    "render_dockerfile",
    "select_base_image",
    "unverified_notes",
]


@dataclass(frozen=True)
class BuildResult:
    """What ``reprobox build`` did (or, with ``dry_run``, would do)."""

    tag: str
    image_id: Optional[str]
    dockerfile: str
    base_image: str
    base_source: str  # flag | config | auto
    builder: str  # "buildkit (<client>)" | "classic" | "none (dry run)"
    installer: str
    timings: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    dry_run: bool = False
    context: Optional[str] = None
    cached_steps: int = 0
    steps: int = 0
    #: Files the host downloaded into its wheelhouse for this build (0: all were there).
    fetched: int = 0
    #: Files installed with no hash recorded in the capture (fetched without credentials).
    unverified: tuple[str, ...] = ()
    #: Files reprobox added (the build backend old-style sdists need offline).
    added: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return float(self.timings.get("total", 0.0))

    @property
    def cached(self) -> bool:
        """Every build step came from the build cache (nothing was rebuilt)."""
        return self.steps > 0 and self.cached_steps >= self.steps - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "base_image": self.base_image,
            "base_source": self.base_source,
            "builder": self.builder,
            "installer": self.installer,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "dry_run": self.dry_run,
            "context": self.context,
            "steps": self.steps,
            "cached_steps": self.cached_steps,
            "fetched": self.fetched,
            "unverified": list(self.unverified),
            "added": list(self.added),
        }


def default_tag(repo_root: Path, exp_id: str) -> str:
    """``reprobox/<repo-name>:<exp id>``, the repository name folded into the tag grammar."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(repo_root).resolve().name.lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("._-") or "project"
    return f"reprobox/{name[:100]}:{exp_id}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _base_hint(image: str, environment: Any) -> str:
    m = re.fullmatch(r"(?:[\w.-]+/)?python:(\d+\.\d+\.\d+\w*)-slim-([a-z]+)", image)
    if m:
        return (
            f"build it here without a registry: `reprobox base --python {m.group(1)} "
            f"--os {m.group(2)}`, or pass another base with --base-image"
        )
    if image.startswith("nvidia/cuda:"):
        return (
            "pull it where a registry is reachable (`docker pull " + image + "`, then "
            "`docker save`/`docker load`), or pass another base with --base-image"
        )
    version = environment.interpreter.version
    return (
        f"pull or load {image}, pass another base with --base-image, or build a Python "
        f"base with `reprobox base --python {version}`"
    )


def build_experiment(
    store: Store,
    stored: StoredExperiment,
    *,
    tag: Optional[str] = None,
    base_image: Optional[str] = None,
    network: Optional[str] = None,
    progress: Optional[Progress] = None,
    dry_run: bool = False,
    no_cache: bool = False,
    cache_id: Optional[str] = None,
    record: bool = True,
) -> BuildResult:
    """Build (or with ``dry_run`` only render) the image of a stored experiment.

    Records the tag in the store (``experiment.json``'s ``image``) once the image is built, unless
    ``record`` is false (``reprobox run`` builds without touching the committed record).
    ``no_cache`` ignores the layer cache; ``cache_id`` names the installer and apt cache mounts
    (default ``reprobox``, shared by all builds): a new name starts them empty.
    """
    report = progress or (lambda _line: None)
    timings: dict[str, float] = {}
    start = time.monotonic()
    exp, env = stored.experiment, stored.environment  # validated once, by the store
    if record and not dry_run:
        store.local_dir("images")  # a linked .reprobox/local is refused before the build
    image, source = select_base_image(env, override=base_image)
    tag = checked_image_flag(tag, "--tag") if tag else default_tag(store.root, exp.id)
    if network is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", network):
        raise UsageError(
            f"--network {network!r} is not a Docker network name",
            "use bridge, host, none, or the name of a network from `docker network ls`",
        )
    early: list[str] = []
    ignored = pyproject_base_warning(store.root)
    if ignored:
        early.append(ignored)
    pins = checked_lock(stored)

    if dry_run:
        plan = plan_image(exp, env, base_image=image, options=RenderOptions())
        return BuildResult(
            tag,
            None,
            render_plan(plan),
            image,
            source,
            "none (dry run)",
            "uv",
            {"render": time.monotonic() - start},
            tuple(early) + plan.warnings,
            dry_run=True,
        )

    for w in early:
        report(f"warning: {w}")
    report(explain_base_choice(env, image, source))
    engine = get_engine()
    if not engine.available():
        engine.info()  # raises the EngineError that names the fix
    client = engine.buildkit()
    uv = lock_uv.find_uv() if client else None
    if uv is not None and platform.machine() not in ("x86_64", "aarch64", "arm64"):
        uv = None
    installer = os.environ.get("REPROBOX_BUILD_INSTALLER", "").strip().lower()
    if installer not in ("", "uv", "pip"):
        raise UsageError(
            f"REPROBOX_BUILD_INSTALLER={installer[:80]!r} is neither uv nor pip",
            "set it to `uv` or `pip`, or unset it",
        )
    if installer == "pip":
        uv = None  # the image's own pip installs (as on a host without uv)
    options = RenderOptions(
        buildkit=client is not None,
        installer="uv" if uv else "pip",
        cache_id=cache_id or RenderOptions.cache_id,
        network_none=client is not None and _run_network_flag(engine),
    )
    plan = plan_image(exp, env, base_image=image, options=options)
    dockerfile = render_plan(plan)
    warnings = early + list(plan.warnings)
    for w in plan.warnings:
        report(f"warning: {w}")
    timings["plan"] = time.monotonic() - start

    config = read_index_config()
    engine.ensure_image(image, _base_hint(image, env))
    forwarding = forward_index_config(config)
    if (
        client is None
        and (forwarding.ca_bundle is not None or forwarding.has_secret_values)
        and plan.system.packages
    ):
        raise EngineError(
            "this build needs pip's CA bundle or proxy credentials for the system packages, "
            "which only BuildKit can pass without writing them into a layer, and no "
            "BuildKit-capable docker client was found",
            "install the buildx plugin (`apt-get install docker-buildx`) or Debian's docker.io "
            "client, or set REPROBOX_DOCKER to a docker client that has BuildKit",
        )
    # Two threads may report from here on: the system part's build and this one.
    report = _one_line_at_a_time(report)

    folder = context_dir(store.root)
    with ContextLock(folder), SecretFiles(forwarding) as secrets:
        for w in forwarding.warnings:
            report(f"warning: {w}")
            warnings.append(w)
        # The builder cannot turn the network off per step: the steps that need it (system
        # packages, CPython) are an image of their own, built with the network while the host
        # fetches the wheels and assembles the context, which it needs neither of; then the
        # Python packages are built from it with the whole build's network off.
        two_part = not options.network_none
        system: Optional[_SystemPart] = None
        if two_part and plan.has_system_part:
            system_text = render_plan(plan, part="system")
            system_dir = system_context(folder, system_text, uv if plan.install_python else None)
            system = _SystemPart.start(
                engine,
                BuildRequest(
                    context=system_dir,
                    dockerfile=system_dir / SYSTEM_DOCKERFILE,
                    tag=system_tag(system_text),
                    labels={},
                    secrets=secrets if client else {},
                    build_args={},
                    network=network,
                    buildkit=client is not None,
                    no_cache=no_cache,
                    step_titles=step_titles(system_text),
                ),
                report,
            )
        phases: list[EngineBuild] = []
        try:
            t = time.monotonic()
            fetched = fetch_artifacts(store, stored, plan, pins, config, report)
            timings["fetch"] = time.monotonic() - t
            for line in fetched.notes():
                report(line)
            for w in fetched.warnings():
                report(f"warning: {w}")
                warnings.append(w)
            t = time.monotonic()
            ctx = assemble_context(
                store.root,
                stored,
                ContextInputs(
                    plan=plan,
                    dockerfile=dockerfile,
                    uv_binary=uv,
                    pins=pins,
                    artifacts=fetched.artifacts,
                    replay_files={
                        name: read_sealed(stored, name) for _p, _q, name, _d in plan.replay
                    },
                ),
                folder,
            )
            for w in ctx.warnings:
                report(f"warning: {w}")
                warnings.append(w)
            timings["context"] = time.monotonic() - t
            labels = {"org.opencontainers.image.created": _now(), "reprobox.version": __version__}
            if fetched.unverified:
                labels["reprobox.unverified"] = validate.label_value(
                    " ".join(a.filename for a in fetched.unverified), "unverified artifacts"
                )
            t = time.monotonic()
            python_dockerfile, python_network = ctx.dockerfile, network
            if two_part:
                python_network = "none"
                system_image = plan.base_image
                if system is not None:
                    phases.append(system.result())
                    system_image = system.request.tag
                    timings["build-system"] = system.seconds
                python_text = render_plan(plan, part="python", system_image=system_image)
                python_dockerfile = ctx.path / "Dockerfile.python"
                write_if_changed(python_dockerfile, python_text.encode())
                titles = step_titles(python_text)
            else:
                titles = step_titles(dockerfile)
            built = engine.build(
                BuildRequest(
                    context=ctx.path,
                    dockerfile=python_dockerfile,
                    tag=tag,
                    labels=labels,
                    secrets={} if python_network == "none" else (secrets if client else {}),
                    build_args={},
                    network=python_network,
                    buildkit=client is not None,
                    no_cache=no_cache,
                    step_titles=titles,
                ),
                report,
            )
            phases.append(built)
        finally:
            if system is not None:
                system.stop()  # a build that failed before the system part ended stops it
                if system.tagged:
                    _remove_intermediate(engine, system.request.tag, report)
        timings["build"] = time.monotonic() - t
    warnings += [w for w in built.warnings if w not in warnings]
    if record and stored.image != tag:
        store.set_image(stored, tag)  # local state (.reprobox/local), never the sealed record
    timings["total"] = time.monotonic() - start
    builder = f"buildkit ({client.description})" if client else "classic"
    return BuildResult(
        tag,
        built.image_id,
        dockerfile,
        image,
        source,
        builder,
        options.installer,
        timings,
        tuple(warnings),
        context=str(ctx.path),
        cached_steps=sum(b.cached_steps for b in phases),
        steps=sum(b.steps for b in phases),
        fetched=fetched.fetched,
        unverified=tuple(a.describe() for a in fetched.unverified),
        added=tuple(a.describe() for a in fetched.added),
    )


def checked_lock(stored: StoredExperiment) -> Optional[tuple[Pin, ...]]:
    """requirements.lock (and pylock.toml) checked line by line against environment.json.

    None when the experiment has no lock. A line reprobox would not have written, or a pin the
    environment does not record, is refused (exit 2) naming the file and line.
    """

    def read(path: Path) -> Optional[str]:
        if not path.is_file() or path.is_symlink():
            return None
        with open(path, "rb") as fh:  # bounded: the checks refuse anything larger
            return fh.read(MAX_LOCK_BYTES + 1).decode("utf-8", errors="replace")

    pylock = read(stored.file("pylock.toml"))
    if pylock is not None:
        check_pylock(pylock, stored.environment)
    lock = read(stored.file("requirements.lock"))
    return None if lock is None else check_requirements_lock(lock, stored.environment)


@dataclass(frozen=True)
class Fetched(Artifacts):
    """Every file the Python steps of a build (or a venv) install, in the host's wheelhouse."""

    artifacts: tuple[Artifact, ...]
    fetched: int

    def notes(self) -> list[str]:
        cached = len(self.artifacts) - self.fetched
        out = [
            f"wheelhouse: {len(self.artifacts)} file(s), {self.fetched} fetched, "
            f"{cached} already there"
        ]
        out += [f"added to build sdists offline: {a.describe()}" for a in self.added]
        return out

    def warnings(self) -> list[str]:
        return [
            f"unverified: {a.describe()} has no hash in the capture; it was fetched "
            "without credentials and hashed on this machine"
            for a in self.unverified
        ]


def fetch_artifacts(
    store: Store,
    stored: StoredExperiment,
    plan: DockerPlan,
    pins: Optional[Sequence[Pin]],
    config: Any,
    progress: Optional[Progress] = None,
) -> Fetched:
    """The host fetches what the image installs into its wheelhouse (see lock/wheelhouse.py)."""
    return fetch_wheelhouse(
        store,
        stored,
        pins,
        plan.direct_sources,
        config,
        backend=bool(plan.local),
        progress=progress,
    )


def fetch_wheelhouse(
    store: Store,
    stored: StoredExperiment,
    pins: Optional[Sequence[Pin]],
    sources: Sequence[DirectSource],
    config: Any,
    *,
    backend: bool = False,
    progress: Optional[Progress] = None,
) -> Fetched:
    """Every file an install of ``stored`` needs, fetched by the host into its wheelhouse and
    hash-checked: the locked ``pins``, the direct ``sources`` (VCS and archive packages), and
    the build backend when one is needed (``backend``: something is built from the checkout;
    else only when an sdist came). Used by the image build and the venv backend alike."""
    env = stored.environment
    house = Wheelhouse()
    target = build_target(capture_target(env))
    tags = {canonical_name(p.name): p.wheel_tags for p in env.packages}
    direct = fetch_direct(
        sources,
        config,
        house=house,
        read_repo_file=lambda path: read_at_commit(store.root, stored, path),
        read_sealed_file=lambda name: read_sealed(stored, name),
        progress=progress,
    )
    needs_backend = backend or any(not a.is_wheel for a in direct.artifacts)
    locked = fetch_locked(
        pins or (),
        target,
        config,
        house=house,
        installed_tags=tags,
        backend=False,
        progress=progress,
    )
    needs_backend = needs_backend or any(not a.is_wheel for a in locked.artifacts)
    built = (
        fetch_locked((), target, config, house=house, backend=True, progress=progress)
        if needs_backend
        else None
    )
    artifacts = locked.artifacts + direct.artifacts + (built.artifacts if built else ())
    count = locked.fetched + direct.fetched + (built.fetched if built else 0)
    return Fetched(artifacts, count)


def read_at_commit(repo_root: Path, stored: StoredExperiment, path: str) -> bytes:
    """A file of the repository at the experiment's commit (never the working tree, never a
    path outside the repository: git reads its own objects)."""
    commit = validate_commit(stored.experiment.git.commit)
    got = proc.run(
        ["git", "cat-file", "blob", f"{commit}:{path}"], cwd=repo_root, check=False, text=False
    )
    if got.returncode != 0:
        raise UsageError(
            f"{path} is not in commit {commit[:12]}",
            "commit the archive, then re-capture the experiment",
        )
    return bytes(got.stdout)


def read_sealed(stored: StoredExperiment, name: str) -> bytes:
    """A file of the experiment (a local-path VCS source archived at capture), checked against
    the experiment's sealed manifest; never through a symbolic link."""
    want = stored.experiment.files.get(name)
    if not FILE_NAME_RE.match(name) or want is None:
        raise UsageError(
            f"{name} is not a file of experiment {stored.id}",
            "re-capture the experiment on the machine that has the package's repository",
        )
    try:
        fd = os.open(stored.file(name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise UsageError(
            f"cannot read {name} of experiment {stored.id}: {exc.strerror}",
            "restore the folder from git (`git checkout -- .reprobox/`)",
        ) from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(64 * 1024 * 1024 + 1)
    if "sha256:" + hashlib.sha256(data).hexdigest() != want:
        raise UsageError(
            f"{name} of experiment {stored.id} does not match its sealed digest",
            "restore the folder from git (`git checkout -- .reprobox/`)",
        )
    return data


def system_tag(system_dockerfile: str) -> str:
    """The local tag of one build's system part: its content's digest, and a part of its own so
    that two builds at once never remove each other's (the tag is removed when the build is
    done: the layers stay, shared with the image, and BuildKit's cache makes the next system
    part in a fraction of a second)."""
    digest = hashlib.sha256(system_dockerfile.encode()).hexdigest()[:20]
    return f"reprobox/system:{digest}-{token_hex(4)}"


def _one_line_at_a_time(report: Progress) -> Progress:
    """``report`` for two threads at once: each line whole, one after the other."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            report(line)

    return locked


class _SystemPart:
    """The system part of a two-part build, built on a thread of its own.

    It needs the network and its own small context only (:func:`.context.system_context`), and
    nothing the host fetches for the Python packages: building it while the host fills its
    wheelhouse and assembles the main context takes the shorter of the two off the build. The
    caller takes its :meth:`result` before the Python part, built ``FROM`` it; a build that
    fails or is interrupted before then stops it (:meth:`stop`).
    """

    def __init__(self, engine: Engine, request: BuildRequest, report: Progress) -> None:
        self.request = request
        self.seconds = 0.0
        self._engine = engine
        self._report = report
        self._built: Optional[EngineBuild] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(
            target=self._build, daemon=True, name="reprobox-system-part"
        )

    @classmethod
    def start(cls, engine: Engine, request: BuildRequest, report: Progress) -> _SystemPart:
        if request.stop is None:
            request = dataclasses.replace(request, stop=threading.Event())
        part = cls(engine, request, report)
        part._thread.start()
        return part

    def _build(self) -> None:
        started = time.monotonic()
        try:
            self._built = self._engine.build(self.request, self._report)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc
        finally:
            self.seconds = time.monotonic() - started

    def result(self) -> EngineBuild:
        """The built system part (waiting for it); its build's error if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._built is not None
        return self._built

    def stop(self) -> None:
        """Stop the build if it still runs (at its next line of output), and wait for it."""
        if self._thread.is_alive():
            assert self.request.stop is not None
            self.request.stop.set()
        self._thread.join()

    @property
    def tagged(self) -> bool:
        """Whether the build got as far as tagging its image (then the tag is removed). Asked
        while another error is on its way out: an engine that cannot answer is taken for yes,
        and the removal that follows says what it could not do, never hiding that error."""
        if self._built is not None:
            return True
        if self._error is None:
            return False
        try:
            return self._engine.image_id(self.request.tag) is not None
        except Exception:  # noqa: BLE001 - see above
            return True


def _remove_intermediate(engine: Engine, tag: str, report: Progress) -> None:
    """Remove the intermediate tag of a two-part build, by its name (never by image id: the
    same image may carry other names)."""
    try:
        engine.remove_image(tag)
    except EngineError as exc:
        report(f"warning: could not remove the intermediate image {tag}: {exc}")


def unverified_notes(prepared: Any) -> list[str]:
    """Verdict notes naming what was installed with no hash from the capture.

    The venv backend says so in its own notes; an image says so in its ``reprobox.unverified``
    label (written by :func:`build_experiment`), read here for the docker backend.
    """
    if getattr(prepared, "backend", None) != "docker":
        return []
    try:
        labels = get_engine().image_labels(prepared.handle)
    except Exception:  # noqa: BLE001 - a note is not worth failing a verdict for
        return []
    files = labels.get("reprobox.unverified", "").split()
    return [
        f"unverified: {name} has no hash in the capture (fetched without credentials and "
        "hashed on the building machine)"
        for name in files
    ]


def _run_network_flag(engine: Engine) -> bool:
    """Whether the builder's Dockerfile frontend knows ``RUN --network=none`` (Docker 23+)."""
    try:
        version = str(engine.info().get("server_version") or "")
    except Exception:  # noqa: BLE001 - an engine that cannot say gets the conservative answer
        return False
    m = re.match(r"(\d+)\.", version)
    return m is not None and int(m.group(1)) >= 23
