"""The docker backend: the experiment's image, the checkout mounted, the invoking user's uid/gid.

What a rerun's container gets, and nothing more:

* the checkout, read-write, at ``/workspace`` (the image's ``WORKDIR``, where the image's
  editable installs of the repository's own packages point): files the command writes land in the
  checkout and belong to the user who typed ``reprobox run`` (``--user uid:gid``);
* ``HOME=/tmp`` (the container's own, writable by anyone), the recorded replayable variables and
  reprobox's two replay variables; not the host's environment, home folder, SSH agent, Docker
  socket or credentials;
* the engine's default network (a bridge with outbound access: a training script that downloads
  a pretrained model still works), or ``--network none`` for a hermetic run;
* the GPUs, when the capture had NVIDIA GPUs and the engine has the NVIDIA runtime.

A DVC pipeline is orchestrated by the host's DVC (which pulled the data and knows the stage
graph), with ``SHELL`` pointing at a small launcher (:mod:`reprobox.backends.stage_shell`) so that
every stage command runs in a container of the image with the same rules.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..errors import ReproboxError
from . import Backend, Execution, GpuPlan, Prepared, Progress, host_uid_gid

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Environment
    from ..store import Store, StoredExperiment

try:  # the image's WORKDIR, where the build puts (and points editable installs at) the code
    from ..build.render import WORKDIR as CONTAINER_CHECKOUT
except ImportError:  # pragma: no cover - build is part of the same package
    CONTAINER_CHECKOUT = "/workspace"

CONTAINER_HOME = "/tmp"


def container_env(env: Mapping[str, str]) -> dict[str, str]:
    """Exactly the variables a rerun's container gets (the image's own ENV lines stay)."""
    out = {"HOME": CONTAINER_HOME}
    out.update(env)
    return out


def to_container_path(checkout: Path, path: Path) -> str:
    """``checkout/a/b`` -> ``/workspace/a/b``; refuses a path outside the checkout."""
    base = Path(checkout).resolve()
    target = Path(path)
    target = target.resolve() if target.exists() else Path(os.path.abspath(target))
    try:
        rel = target.relative_to(base)
    except ValueError:
        raise ReproboxError(
            f"internal: {path} is outside the checkout {checkout} and is not in the container"
        ) from None
    return CONTAINER_CHECKOUT if str(rel) == "." else f"{CONTAINER_CHECKOUT}/{rel.as_posix()}"


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, engine: Any) -> None:
        self.engine = engine

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
        from ..build import build_experiment, default_tag

        candidates = [t for t in (stored.experiment.image, default_tag(store.root, stored.id)) if t]
        for tag in dict.fromkeys(candidates):
            if self._usable(tag, env.digest):
                say(f"using the image {tag}")
                prefix: Optional[str] = None
                if env.conda is not None:
                    from ..build.condaimage import PREFIX

                    prefix = PREFIX
                return Prepared(self.name, tag, f"image {tag} (already built)", True, "python",
                                conda_prefix=prefix)
        if env.conda is not None:
            return self._prepare_conda(store, stored, say)
        say("no image of this experiment here: building it from its Dockerfile and lock")
        t0 = time.monotonic()
        result = build_experiment(store, stored, progress=say, record=False)
        how = f"built in {time.monotonic() - t0:.1f} s"
        steps, cached = getattr(result, "steps", 0), getattr(result, "cached_steps", 0)
        if steps:
            how += f", {cached} of {steps} steps from the build cache"
        return Prepared(self.name, result.tag, f"image {result.tag} ({how})", False, "python")

    def _prepare_conda(self, store: "Store", stored: "StoredExperiment",
                       say: Progress) -> Prepared:
        """A conda capture's image: its recorded packages installed exactly, offline."""
        from ..build import default_tag
        from ..build.condaimage import PREFIX, build_conda_image

        say("no image of this experiment here: building it from its conda packages")
        built = build_conda_image(store, stored, tag=default_tag(store.root, stored.id),
                                  progress=say)
        return Prepared(self.name, built.tag, f"image {built.tag} (conda environment at "
                        f"{PREFIX}, built in {built.seconds:.1f} s)", False, "python",
                        conda_prefix=PREFIX)

    def _usable(self, tag: str, digest: str) -> bool:
        """The recorded image is here and was built for this environment."""
        try:
            if not self.engine.image_exists(tag):
                return False
            labels = self.engine.image_labels(tag)
        except ReproboxError:
            return False
        recorded = labels.get("reprobox.env-digest")
        return recorded is None or recorded == digest

    # ---------------------------------------------------------------- run

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
        from ..build.engine import Mount

        workdir = to_container_path(checkout, Path(checkout) / cwd)
        out = self.engine.run_container(
            prepared.handle,
            list(argv),
            mounts=[Mount(Path(checkout).resolve(), CONTAINER_CHECKOUT)],
            workdir=workdir,
            env=container_env(env),
            user=host_uid_gid(),
            network=network,
            gpus=gpus,
            stream=None if capture else _to_stderr,
        )
        return Execution(out.exit_code, out.output if capture else "", "")

    def path_in_env(self, checkout: Path, path: Path) -> str:
        return to_container_path(checkout, path)

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
        """``SHELL`` -> a launcher that runs each DVC stage command in a container of the image."""
        config = {
            "image": prepared.handle,
            "checkout": str(Path(checkout).resolve()),
            "env": dict(env),
            "network": network,
            "gpus": gpus,
        }
        cfg_path = scratch / "stage-shell.json"
        cfg_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        package_parent = Path(__file__).resolve().parents[2]
        launcher = scratch / "stage-shell"
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from reprobox.backends.stage_shell import main; sys.exit(main(sys.argv[1:]))"
        )
        launcher.write_text(
            "#!/bin/sh\n"
            "# Written by reprobox run: DVC calls this as its SHELL for every stage command.\n"
            f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "
            f"{shlex.quote(str(package_parent))} {shlex.quote(str(cfg_path))} \"$@\"\n"
        )
        launcher.chmod(0o755)
        host = dict(os.environ)
        host["SHELL"] = str(launcher)
        return host

    def gpu_plan(self, environment: "Environment") -> GpuPlan:
        from .venv import cpu_only_note

        if not environment.hardware.gpus:
            return GpuPlan(False)
        try:
            nvidia = bool(self.engine.info().get("nvidia_runtime"))
        except ReproboxError:
            nvidia = False
        if nvidia:
            return GpuPlan(True)
        return GpuPlan(False, cpu_only_note(environment) + "; this Docker has no NVIDIA runtime "
                       "(install nvidia-container-toolkit to give containers the GPUs)")
