"""Finding a docker client that builds with BuildKit.

The first ``docker`` on PATH is not trusted to have BuildKit: a Docker >= 23 client without the
buildx plugin refuses it, while an older client (Debian's docker.io 20.10) has it built in.
:func:`find_buildkit_client` tries every ``docker`` it can find.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from .. import proc
from ..errors import UsageError
from .interface import BuildKitClient


def _docker_candidates() -> list[str]:
    """Every docker executable on PATH, then the usual places, without duplicates."""
    seen: dict[str, str] = {}
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    dirs += ["/usr/bin", "/usr/local/bin", "/snap/bin"]
    for folder in dirs:
        path = os.path.join(folder or ".", "docker")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _client_version(docker: str) -> Optional[tuple[int, ...]]:
    try:
        out = proc.run(
            [docker, "version", "--format", "{{.Client.Version}}"], check=False, timeout=20
        ).stdout
    except Exception:  # noqa: BLE001 - a broken candidate is just not a candidate
        return None
    m = re.search(r"(\d+)\.(\d+)", out or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_buildkit_client() -> Optional[BuildKitClient]:
    """A docker client that builds with BuildKit: ``docker buildx``, or one with it built in.

    ``REPROBOX_DOCKER`` names a client to use; ``DOCKER_BUILDKIT=0`` asks for the classic builder.
    """
    if os.environ.get("DOCKER_BUILDKIT") == "0":
        return None
    forced = os.environ.get("REPROBOX_DOCKER")
    candidates = [forced] if forced else _docker_candidates()
    for docker in candidates:
        try:
            buildx = proc.run([docker, "buildx", "version"], check=False, timeout=20)
        except Exception:  # noqa: BLE001
            if forced:  # the user named it: say so, rather than build another way
                raise UsageError(
                    f"REPROBOX_DOCKER={forced[:200]!r} cannot be run",
                    "point it at a docker client (e.g. /usr/bin/docker), or unset it",
                ) from None
            continue
        if buildx.returncode == 0:
            version = (buildx.stdout or "").strip().split("\n")[0]
            return BuildKitClient(
                (docker, "buildx", "build", "--load"), {}, f"{docker} buildx ({version})"
            )
        version = _client_version(docker)
        # Clients from 18.09 to 22.x carry BuildKit themselves (DOCKER_BUILDKIT=1); from 23 on,
        # `docker build` is the buildx plugin, so without the plugin there is no BuildKit.
        if version and (18, 9) <= version < (23, 0):
            return BuildKitClient(
                (docker, "build"),
                {"DOCKER_BUILDKIT": "1"},
                f"{docker} {version[0]}.{version[1]} (built-in BuildKit)",
            )
    return None
