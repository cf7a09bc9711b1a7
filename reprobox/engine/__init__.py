"""The container engine behind one small interface: Docker or Podman.

:mod:`.interface` says what reprobox asks of an engine; :mod:`.docker` and :mod:`.podman` answer
it, sharing the command-line build path (:mod:`.command`) and the log readers (:mod:`.logs`);
:mod:`.buildkit` finds a docker client that builds with BuildKit. This module chooses the engine
(``--engine``, ``REPROBOX_ENGINE``, else whichever answers). The rest of the tool never talks to
Docker or Podman itself.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from .. import proc
from ..errors import EngineError, UsageError
from .buildkit import find_buildkit_client
from .docker import DockerEngine
from .interface import (
    BuildKitClient,
    BuildRequest,
    BuildStopped,
    Confinement,
    Engine,
    EngineBuild,
    Mount,
    Progress,
    RunOutput,
    is_loopback_registry,
    push_error,
    registry_of,
)
from .logs import BuildLog, step_titles
from .podman import PodmanEngine

__all__ = [
    "ENGINES",
    "BuildKitClient",
    "BuildLog",
    "BuildRequest",
    "BuildStopped",
    "Confinement",
    "DockerEngine",
    "Engine",
    "EngineBuild",
    "Mount",
    "PodmanEngine",
    "Progress",
    "RunOutput",
    "find_buildkit_client",
    "get_engine",
    "is_loopback_registry",
    "push_error",
    "registry_of",
    "select_engine",
    "step_titles",
]

log = logging.getLogger("reprobox.engine")

ENGINES = ("docker", "podman")
_ENGINE: Optional[Engine] = None


def select_engine(name: Optional[str]) -> None:
    """Use the named engine from now on (``--engine``); ``None``/``auto``: detect.

    The choice is also put in ``REPROBOX_ENGINE`` so helpers reprobox starts (the DVC stage
    launcher) use the same engine.
    """
    global _ENGINE
    if name in (None, "", "auto"):
        os.environ.pop("REPROBOX_ENGINE", None)
    elif name in ENGINES:
        os.environ["REPROBOX_ENGINE"] = name
    else:
        raise EngineError(f"unknown container engine {name!r}", "use docker or podman")
    _ENGINE = None


def get_engine() -> Engine:
    """The container engine: ``--engine`` / ``REPROBOX_ENGINE``, else Docker when its daemon
    answers, else Podman when it works here, else Docker (whose error names the fix).
    ``DOCKER_HOST`` set names a daemon: then it is Docker, answering or not (a daemon the user
    pointed at that is down is an error to report, not a reason to switch engines).
    Connecting is lazy: this never fails by itself."""
    global _ENGINE
    if _ENGINE is None:
        chosen = os.environ.get("REPROBOX_ENGINE", "")
        if chosen not in ("", "auto", "docker", "podman"):
            raise UsageError(
                f"REPROBOX_ENGINE={chosen[:80]!r} is not an engine",
                "set it to docker or podman (or auto), or unset it",
            )
        if chosen == "podman":
            _ENGINE = PodmanEngine()
        elif chosen == "docker":
            _ENGINE = DockerEngine()
        else:
            docker_engine = DockerEngine()
            _ENGINE = docker_engine
            if (
                not os.environ.get("DOCKER_HOST")
                and not docker_engine.available()
                and proc.which("podman")
            ):
                podman = PodmanEngine()
                if podman.available():
                    log.info("no Docker daemon answers: using podman")
                    _ENGINE = podman
    return _ENGINE
