"""The container image of a conda capture: the recorded packages, installed exactly, offline.

    check every conda record  ->  host fetches each archive through its conda configuration and
    checks md5 + sha256  ->  host fetches the py-rattler wheel and the pip part's wheels
    (``pip download --require-hashes``)  ->  context: archives, wheels, the installer script, a
    request naming every archive  ->  Dockerfile from ``templates/Dockerfile.conda.j2``  ->
    build with ``--network none`` and no secret

In the image, py-rattler installs the archives into ``/opt/conda-env`` from the build context
(no solver, no channel), the recorded URLs are written back into ``conda-meta``, then the pip
part installs with ``--no-index --require-hashes`` from the host's downloads. Credentials stay on
the host: nothing that reaches the build holds a token, and the build cannot reach a network.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Optional

from .. import __version__, payload, proc
from ..engine import BuildRequest, get_engine, step_titles
from ..errors import LockError, UsageError
from ..lock.condaconfig import read_conda_config
from ..lock.condafetch import check_package, fetch, require_conda, require_url
from ..lock.config import read_index_config
from ..lock.select import capture_target
from ..lock.wheelhouse import build_target, fetch_locked, link_into, place_file
from ..names import canonical_name
from ..store import Store, StoredExperiment
from ..progress import Progress
from . import checked_lock, default_tag
from .images import checked_image_flag, debian_codename_for, python_image
from .render import WORKDIR

PREFIX = "/opt/conda-env"
STAGE = "/tmp/reprobox"
TEMPLATE = "Dockerfile.conda.j2"


@dataclass(frozen=True)
class CondaImage:
    tag: str
    image_id: Optional[str]
    dockerfile: str
    base_image: str
    seconds: float
    steps: int = 0
    cached_steps: int = 0
    dry_run: bool = False


def render_conda_dockerfile(
    *,
    base_image: str,
    experiment_id: str,
    rattler_wheel: str,
    conda_count: int,
    pip_count: int,
    workdir: str,
) -> str:
    """The Dockerfile (pure: same inputs, same text)."""
    import jinja2  # lazy: ~25 ms to import, only a conda build renders this template

    source = files("reprobox.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.from_string(source).render(
        tool_version=__version__,
        experiment_id=experiment_id,
        base_image=base_image,
        rattler_wheel=rattler_wheel,
        conda_count=conda_count,
        pip_count=pip_count,
        prefix=PREFIX,
        workdir=workdir,
    )


def tools_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "tools"


def rattler_wheel(say: Progress) -> Path:
    """The py-rattler wheel of the version reprobox runs with, fetched once by the host's pip."""
    try:
        wanted = version("py-rattler")
    except PackageNotFoundError:
        raise UsageError(
            "building a conda environment's image needs py-rattler, which is not installed",
            "install reprobox with its conda extra: `pip install 'reprobox[conda]'`",
        ) from None
    folder = tools_cache() / f"py-rattler-{wanted}"
    found = sorted(folder.glob("py_rattler-*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    say(f"fetching the py-rattler {wanted} wheel for the image (once)")
    tools_cache().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=tools_cache()))
    try:
        proc.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux2014_x86_64",
                "--python-version",
                "3.10",
                "--dest",
                str(tmp),
                f"py-rattler=={wanted}",
            ],
            timeout=600,
            what=f"downloading py-rattler {wanted}",
            hint="check that the package index answers (`reprobox doctor`)",
        )
        wheels = sorted(tmp.glob("py_rattler-*.whl"))
        if not wheels:
            raise UsageError(f"the index has no Linux wheel of py-rattler {wanted}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return folder / wheels[0].name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def assemble(
    store: Store, stored: StoredExperiment, ctx: Path, say: Progress
) -> tuple[str, int, int]:
    """Fill the build context; returns (rattler wheel name, conda packages, pip packages)."""
    env = stored.environment
    conda_env = require_conda(env, stored.id)
    for pkg in conda_env.packages:  # untrusted record: checked before anything is fetched
        check_package(pkg)
        require_url(pkg)
    (ctx / "tools").mkdir(parents=True)
    wheel = rattler_wheel(say)
    place_file(wheel, ctx / "tools" / wheel.name)
    shutil.copyfile(payload.script("rattler_install"), ctx / "tools" / "rattler_install.py")

    config = read_conda_config()
    pkgs_dir = ctx / "conda" / "pkgs"
    pkgs_dir.mkdir(parents=True)
    say(f"fetching {len(conda_env.packages)} conda packages on the host (md5 and sha256 checked)")
    request = []
    for pkg in conda_env.packages:
        path = fetch(pkg, config)
        name = f"{pkg.sha256 or pkg.md5}-{pkg.file_name}"
        place_file(path, pkgs_dir / name)
        request.append(
            {
                "path": f"{STAGE}/conda/pkgs/{name}",
                "url": pkg.url,
                "channel": pkg.channel,
                "md5": pkg.md5,
                "sha256": pkg.sha256,
            }
        )
    (ctx / "conda" / "request.json").write_text(
        json.dumps(
            {
                "prefix": PREFIX,
                "cache": f"{STAGE}/rattler-cache",
                "packages": request,
                "requested_specs": list(conda_env.requested_specs),
            },
            indent=1,
        )
    )

    pins = [p for p in env.packages if p.source.kind == "index"]
    others = [p for p in env.packages if p.source.kind != "index"]
    if others:
        names = ", ".join(f"{p.name} {p.version} ({p.source.kind})" for p in others)
        raise UsageError(
            f"the conda environment's image cannot install pip packages from version control "
            f"or folders yet: {names}",
            "rebuild it on this host with `--backend conda`",
        )
    if pins:
        # The lock of a capture is untrusted: it is checked line by line against
        # environment.json, and the files come from the host's wheelhouse (the host's own
        # indexes, by name, version and hash), never through pip reading the capture's file.
        checked = checked_lock(stored)
        if checked is None:
            raise LockError(
                f"experiment {stored.id} has pip packages but no requirements.lock",
                f"write it with `reprobox lock {stored.id}`",
            )
        say(f"fetching the {len(checked)} pip packages into the host's wheelhouse (hashes checked)")
        tags = {canonical_name(p.name): p.wheel_tags for p in env.packages}
        fetched = fetch_locked(
            checked,
            build_target(capture_target(env)),
            read_index_config(),
            installed_tags=tags,
            progress=say,
        )
        sdists = [a.describe() for a in fetched.artifacts if not a.is_wheel]
        if sdists:
            raise UsageError(
                "the conda environment's image installs pip packages from wheels only; these "
                f"have only a source distribution: {', '.join(sdists)}",
                "rebuild it on this host with `--backend conda`",
            )
        (ctx / "pip" / "wheels").mkdir(parents=True)
        link_into(fetched.artifacts, ctx / "pip" / "wheels")
        lines = [p.requirement for p in checked]
        (ctx / "pip" / "requirements.lock").write_text(
            "# requirements.lock, checked and written by reprobox build\n"
            + "".join(line + "\n" for line in lines)
        )
    return wheel.name, len(conda_env.packages), len(pins)


def build_conda_image(
    store: Store,
    stored: StoredExperiment,
    *,
    tag: str,
    base_image: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> CondaImage:
    """Build the image of a conda capture (see the module doc)."""
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    exp, env = stored.experiment, stored.environment  # validated once, by the store
    if base_image:
        base = checked_image_flag(base_image, "--base-image")
    else:
        codename, _why = debian_codename_for(env)
        base = python_image(env.interpreter.version, codename)
    engine = get_engine()
    if not engine.available():
        engine.info()
    engine.ensure_image(
        base, f"build it without a registry: `reprobox base --python {env.interpreter.version}`"
    )
    ctx = Path(tempfile.mkdtemp(prefix=f"reprobox-conda-{exp.id}-"))
    try:
        wheel, conda_count, pip_count = assemble(store, stored, ctx, say)
        dockerfile = render_conda_dockerfile(
            base_image=base,
            experiment_id=exp.id,
            rattler_wheel=wheel,
            conda_count=conda_count,
            pip_count=pip_count,
            workdir=WORKDIR,
        )
        (ctx / "Dockerfile").write_text(dockerfile)
        say(f"building {tag} from {base} with no network")
        built = engine.build(
            BuildRequest(
                context=ctx,
                dockerfile=ctx / "Dockerfile",
                tag=tag,
                labels={
                    "reprobox.experiment": exp.id,
                    "reprobox.env-digest": env.digest,
                    "reprobox.version": __version__,
                },
                network="none",
                buildkit=engine.buildkit() is not None,
                step_titles=step_titles(dockerfile),
            ),
            say,
        )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return CondaImage(
        tag,
        built.image_id,
        dockerfile,
        base,
        time.monotonic() - t0,
        built.steps,
        built.cached_steps,
    )


def build_conda_experiment(
    store: Store,
    stored: StoredExperiment,
    *,
    tag: Optional[str] = None,
    base_image: Optional[str] = None,
    progress: Optional[Progress] = None,
    dry_run: bool = False,
) -> CondaImage:
    """``reprobox build`` for a conda capture: the image, its tag recorded like any build's."""
    tag = checked_image_flag(tag, "--tag") if tag else default_tag(store.root, stored.id)
    if dry_run:
        env = stored.environment
        checked_lock(stored)  # a lock the build would refuse is refused by its dry run too
        base = (
            checked_image_flag(base_image, "--base-image")
            if base_image
            else python_image(env.interpreter.version, debian_codename_for(env)[0])
        )
        try:
            rattler = f"py_rattler-{version('py-rattler')}-<wheel fetched at build time>.whl"
        except PackageNotFoundError:
            rattler = "<py-rattler wheel>"
        dockerfile = render_conda_dockerfile(
            base_image=base,
            experiment_id=stored.id,
            rattler_wheel=rattler,
            conda_count=len(env.conda.packages) if env.conda else 0,
            pip_count=sum(1 for p in env.packages if p.source.kind == "index"),
            workdir=WORKDIR,
        )
        return CondaImage(tag, None, dockerfile, base, 0.0, dry_run=True)
    built = build_conda_image(store, stored, tag=tag, base_image=base_image, progress=progress)
    if stored.image != tag:
        store.set_image(stored, tag)
    return built
