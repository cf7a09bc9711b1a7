"""Where a rerun's environment lives: a container image (docker) or a cached virtualenv (venv).

Both backends answer the same small interface, so :mod:`reprobox.run` and :mod:`reprobox.verify`
never ask which one they hold:

* :meth:`Backend.prepare` makes the environment ready (finds or builds the image, finds or
  creates the virtualenv) and says whether it was reused;
* :meth:`Backend.execute` runs an argv in it, in a folder of the checkout, with exactly the
  environment variables given (plus what the backend itself needs: ``PATH``, ``HOME``);
* :meth:`Backend.path_in_env` tells how a file of the checkout is named from inside (the container
  sees the checkout at a fixed folder);
* :meth:`Backend.dvc_host_env` gives the variables under which the *host's* DVC runs a pipeline so
  that every stage command runs inside the environment.

:func:`choose_backend` turns ``--backend`` into a backend and the reason it was chosen, which the
run report prints ("docker: the Docker daemon answered").
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from ..errors import ReproboxError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Environment
    from ..store import Store, StoredExperiment

Progress = Callable[[str], None]

BACKENDS = ("auto", "docker", "venv", "conda")

#: Folder of the checkout (inside the checkout) where reprobox puts what the rerun reports back
#: (inline metrics, the probe and its output). Hidden, removed with the checkout.
RUN_DIR = ".reprobox-run"


@dataclass
class Prepared:
    """A ready environment. ``handle`` is the backend's own (an image tag, a venv folder)."""

    backend: str
    handle: str
    description: str  # one line for the report: "image reprobox/train:abc (built in 41 s)"
    reused: bool
    #: Interpreter as the command sees it ("python" on the image's PATH, or the venv's python).
    python: str
    notes: list[str] = field(default_factory=list)
    #: Packages the environment could not provide (folders outside the repository...).
    unavailable_packages: tuple[str, ...] = ()
    #: Backend-private resources to let go in :meth:`Backend.release` (file locks).
    _resources: list[Any] = field(default_factory=list, repr=False)
    #: Where a conda environment lives inside the environment (a conda image), else None.
    conda_prefix: Optional[str] = None


@dataclass(frozen=True)
class Execution:
    returncode: int
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class GpuPlan:
    """Whether the command gets GPUs, and what the report must say when it does not."""

    use_gpus: bool
    note: Optional[str] = None


class Backend(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def prepare(
        self,
        store: "Store",
        stored: "StoredExperiment",
        checkout: Path,
        *,
        network: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> Prepared:
        """Make the experiment's environment ready for commands run in ``checkout``."""

    @abc.abstractmethod
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
        """Run ``argv`` in the environment with the working directory ``checkout/cwd``.

        With ``capture`` the output is returned; otherwise it streams to this process's stderr
        (never its stdout, which carries the result, e.g. ``--json``).
        """

    @abc.abstractmethod
    def path_in_env(self, checkout: Path, path: Path) -> str:
        """The name of ``path`` (inside ``checkout``) as the command sees it."""

    @abc.abstractmethod
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
        """Variables for the host's ``dvc repro`` so that its stage commands run in the
        environment (``scratch`` is a private folder outside the checkout for helper files)."""

    @abc.abstractmethod
    def gpu_plan(self, environment: "Environment") -> GpuPlan:
        """Whether the rerun can use the GPUs the capture had."""

    def release(self, prepared: Prepared) -> None:
        """Let go of what :meth:`prepare` holds (locks); the environment itself is kept."""
        while prepared._resources:
            res = prepared._resources.pop()
            try:
                res.close()
            except OSError:
                pass


def choose_backend(name: str, engine: Any = None,
                   environment: Optional["Environment"] = None) -> tuple[Backend, str]:
    """The backend for ``--backend NAME`` and the reason, as the report will print it.

    ``auto`` picks docker when a container engine answers, else venv; for a conda environment
    (``environment`` given, with conda packages) it picks conda. ``engine`` is the container
    engine to use (default: :func:`reprobox.build.get_engine`), given by tests and callers that
    already hold one.
    """
    if name not in BACKENDS:
        raise UsageError(
            f"unknown backend {name!r}", f"use one of: {', '.join(BACKENDS)}"
        )
    conda_env = environment is not None and environment.conda is not None
    if name == "conda":
        from .conda import CondaBackend

        return CondaBackend(), "--backend conda"
    if conda_env and name == "venv":
        raise UsageError(
            "this experiment was captured in a conda environment, which --backend venv "
            "cannot recreate (its conda packages are not pip packages)",
            "use `--backend conda` (py-rattler installs the recorded packages on this host) "
            "or `--backend docker` (the same, in an image)",
        )
    if name == "venv":
        from .venv import VenvBackend

        return VenvBackend(), "--backend venv"
    from .docker import DockerBackend

    if engine is None:
        try:
            from ..build.engine import get_engine

            engine = get_engine()
        except ReproboxError as exc:
            if name == "docker":
                raise
            engine, why = None, exc.message
    if engine is not None:
        why = ""
        try:
            if engine.available():
                if name == "docker":
                    return DockerBackend(engine), "--backend docker"
                return DockerBackend(engine), "auto: the container engine answered"
            why = "the container engine does not answer"
        except ReproboxError as exc:
            if name == "docker":
                raise
            why = exc.message
    if name == "auto" and conda_env:
        from .conda import CondaBackend

        return CondaBackend(), (f"auto: no container engine ({why}), so the conda environment "
                                "is recreated on this host")
    if name == "docker":
        from ..errors import EngineError

        raise EngineError(
            "the Docker daemon does not answer, so --backend docker cannot run",
            "start it (`sudo systemctl start docker`, or `dockerd &`) and check `docker info`, "
            "or rerun with `--backend venv`",
        )
    from .venv import VenvBackend

    return VenvBackend(), f"auto: no container engine ({why}), so a virtualenv"


def host_uid_gid() -> str:
    """``uid:gid`` of the invoking user, so files a container writes belong to them."""
    return f"{os.getuid()}:{os.getgid()}"


__all__ = [
    "BACKENDS",
    "RUN_DIR",
    "Backend",
    "Execution",
    "GpuPlan",
    "Prepared",
    "choose_backend",
    "host_uid_gid",
]
