"""build: the container image of an experiment, exact and offline-capable.

    select_base_image (images.py)  ->  plan_image + render (render.py, templates/Dockerfile.j2)
    ->  assemble_context (context.py: code at the commit, lock, wheels, tools)
    ->  engine.build (engine.py: BuildKit with cache mounts and secrets, else classic)
    ->  store.set_image (local state)

``reprobox base`` (base.py) makes the ``python:X.Y.Z-slim-<codename>`` base without a registry.
Rendering is pure; everything with side effects is in :func:`build_experiment`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .. import __version__
from ..errors import EngineError, UsageError
from ..store import Store, StoredExperiment
from .base import build_base
from .engine import BuildRequest, Engine, EngineBuild, Mount, RunOutput, get_engine, step_titles
from .images import checked_image_flag, explain_base_choice, select_base_image
from .render import WORKDIR, RenderOptions, plan_image, render_dockerfile, render_plan

Progress = Callable[[str], None]

__all__ = [
    "WORKDIR",
    "BuildResult",
    "Engine",
    "EngineBuild",
    "Mount",
    "RenderOptions",
    "RunOutput",
    "build_base",
    "build_experiment",
    "default_tag",
    "get_engine",
    "render_dockerfile",
    "select_base_image",
]


@dataclass(frozen=True)
class BuildResult:
    """What ``reprobox build`` did (or, with ``dry_run``, would do)."""

    tag: str
    image_id: Optional[str]
    dockerfile: str
    base_image: str
    base_source: str  # flag | pyproject | auto
    builder: str  # "buildkit (<client>)" | "classic" | "none (dry run)"
    installer: str
    timings: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    dry_run: bool = False
    context: Optional[str] = None
    cached_steps: int = 0
    steps: int = 0

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
        return (f"build it here without a registry: `reprobox base --python {m.group(1)} "
                f"--os {m.group(2)}`, or pass another base with --base-image")
    if image.startswith("nvidia/cuda:"):
        return ("pull it where a registry is reachable (`docker pull " + image + "`, then "
                "`docker save`/`docker load`), or pass another base with --base-image")
    version = environment.interpreter.version
    return (f"pull or load {image}, pass another base with --base-image, or build a Python "
            f"base with `reprobox base --python {version}`")


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
    from .. import validate
    from .context import (
        ContextInputs,
        ContextLock,
        SecretFiles,
        assemble_context,
        context_dir,
        find_uv,
        forward_index_config,
    )

    report = progress or (lambda _line: None)
    timings: dict[str, float] = {}
    start = time.monotonic()
    exp, env = stored.experiment, stored.environment
    validate.validate_experiment(exp, env, folder=stored.path)
    if record and not dry_run:
        store.local_dir("images")  # a linked .reprobox/local is refused before the build
    image, source = select_base_image(env, override=base_image, repo_root=store.root)
    tag = checked_image_flag(tag, "--tag") if tag else default_tag(store.root, exp.id)
    if network is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", network):
        raise UsageError(f"--network {network!r} is not a Docker network name",
                         "use bridge, host, none, or the name of a network from `docker network ls`")

    if dry_run:
        plan = plan_image(exp, env, base_image=image, options=RenderOptions())
        return BuildResult(tag, None, render_plan(plan), image, source, "none (dry run)", "uv",
                           {"render": time.monotonic() - start}, plan.warnings, dry_run=True)

    report(explain_base_choice(env, image, source))
    engine = get_engine()
    if not engine.available():
        engine.info()  # raises the EngineError that names the fix
    client = engine.buildkit()
    uv = find_uv() if client else None
    if uv is not None and platform.machine() not in ("x86_64", "aarch64", "arm64"):
        uv = None
    options = RenderOptions(buildkit=client is not None, installer="uv" if uv else "pip",
                            cache_id=cache_id or RenderOptions.cache_id)
    plan = plan_image(exp, env, base_image=image, options=options)
    dockerfile = render_plan(plan)
    warnings = list(plan.warnings)
    for w in plan.warnings:
        report(f"warning: {w}")
    timings["plan"] = time.monotonic() - start

    engine.ensure_image(image, _base_hint(image, env))

    from ..lock import read_index_config

    forwarding = forward_index_config(read_index_config())
    for w in forwarding.warnings:
        report(f"warning: {w}")
        warnings.append(w)
    if client is None and (forwarding.ca_bundle is not None or forwarding.has_secret_values):
        raise EngineError(
            "this build needs pip's CA bundle or index credentials, which only BuildKit can "
            "pass without writing them into a layer, and no BuildKit-capable docker client "
            "was found",
            "install the buildx plugin (`apt-get install docker-buildx`) or Debian's docker.io "
            "client, or set REPROBOX_DOCKER to a docker client that has BuildKit",
        )

    lock_file = stored.file("requirements.lock")
    pylock = stored.file("pylock.toml")
    folder = context_dir(store.root)
    with ContextLock(folder), SecretFiles(forwarding) as secrets:
        t = time.monotonic()
        ctx = assemble_context(store.root, stored, ContextInputs(
            plan=plan,
            dockerfile=dockerfile,
            uv_binary=uv,
            lock_text=lock_file.read_text(encoding="utf-8") if lock_file.is_file() else None,
            pylock=pylock if pylock.is_file() else None,
        ), folder)
        for w in ctx.warnings:
            report(f"warning: {w}")
            warnings.append(w)
        timings["context"] = time.monotonic() - t
        labels = {"org.opencontainers.image.created": _now(), "reprobox.version": __version__}
        t = time.monotonic()
        built = engine.build(BuildRequest(
            context=ctx.path,
            dockerfile=ctx.dockerfile,
            tag=tag,
            labels=labels,
            secrets=secrets if client else {},
            build_args={} if client else dict(forwarding.build_args),
            network=network,
            buildkit=client is not None,
            no_cache=no_cache,
            step_titles=step_titles(dockerfile),
        ), report)
        timings["build"] = time.monotonic() - t
    warnings += [w for w in built.warnings if w not in warnings]
    if record and stored.image != tag:
        store.set_image(stored, tag)  # local state (.reprobox/local), never the sealed record
    timings["total"] = time.monotonic() - start
    builder = f"buildkit ({client.description})" if client else "classic"
    return BuildResult(tag, built.image_id, dockerfile, image, source, builder,
                       options.installer, timings, tuple(warnings), context=str(ctx.path),
                       cached_steps=built.cached_steps, steps=built.steps)
