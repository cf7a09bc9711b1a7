"""Where a rerun's environment lives: a container image (docker), a cached virtualenv (venv) or
a conda prefix made with py-rattler (conda).

They answer one interface (:mod:`.interface`); :func:`choose_backend` turns ``--backend`` into a
backend and the reason it was chosen, which the run report prints ("docker: the Docker daemon
answered").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..engine import get_engine
from ..errors import EngineError, ReproboxError, UsageError
from .conda import CondaBackend
from .docker import DockerBackend
from .interface import (
    DEFAULT_PIDS_LIMIT,
    RUN_DIR,
    Backend,
    ContainerLimits,
    Execution,
    GpuPlan,
    Prepared,
    container_uid_gid,
    host_uid_gid,
    make_run_dir,
    outward_symlinks,
    refuse_outward_symlinks,
    write_new_file,
)
from .venv import VenvBackend

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Environment

BACKENDS = ("auto", "docker", "venv", "conda")


def _engine_label(engine: object) -> str:
    """The engine a run's report names: the container backend runs on Docker or on Podman."""
    name = getattr(engine, "name", "")
    return {"docker": "the Docker daemon", "podman": "podman"}.get(name, "the container engine")


def choose_backend(
    name: str,
    engine: Any = None,
    limits: Optional[ContainerLimits] = None,
    environment: Optional["Environment"] = None,
) -> tuple[Backend, str]:
    """The backend for ``--backend NAME`` and the reason, as the report will print it.

    ``auto`` picks docker when a container engine answers, else venv; for a conda environment
    (``environment`` given, with conda packages) it picks conda. ``engine`` is the container
    engine to use (default: :func:`reprobox.engine.get_engine`), given by tests and callers that
    already hold one. ``limits``: the container's pids/memory limits and GPU request.
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}", f"use one of: {', '.join(BACKENDS)}")
    conda_env = environment is not None and environment.conda is not None
    if name == "conda":
        return CondaBackend(), "--backend conda"
    if conda_env and name == "venv":
        raise UsageError(
            "this experiment was captured in a conda environment, which --backend venv "
            "cannot recreate (its conda packages are not pip packages)",
            "use `--backend conda` (py-rattler installs the recorded packages on this host) "
            "or `--backend docker` (the same, in an image)",
        )
    if name == "venv":
        return VenvBackend(), "--backend venv"

    if engine is None:
        try:
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
                    return DockerBackend(engine, limits), "--backend docker"
                return DockerBackend(engine, limits), f"auto: {_engine_label(engine)} answered"
            why = "the container engine does not answer"
        except ReproboxError as exc:
            if name == "docker":
                raise
            why = exc.message
    if name == "auto" and conda_env:
        return CondaBackend(), (
            f"auto: no container engine ({why}), so the conda environment is recreated on this host"
        )
    if name == "docker":
        raise EngineError(
            "the Docker daemon does not answer, so --backend docker cannot run",
            "start it (`sudo systemctl start docker`, or `dockerd &`) and check `docker info`, "
            "or rerun with `--backend venv`",
        )

    return VenvBackend(), f"auto: no container engine ({why}), so a virtualenv"


__all__ = [
    "BACKENDS",
    "ContainerLimits",
    "DEFAULT_PIDS_LIMIT",
    "RUN_DIR",
    "Backend",
    "Execution",
    "GpuPlan",
    "Prepared",
    "choose_backend",
    "container_uid_gid",
    "host_uid_gid",
    "make_run_dir",
    "outward_symlinks",
    "refuse_outward_symlinks",
    "write_new_file",
]
