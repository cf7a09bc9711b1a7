"""The ``SHELL`` the host's DVC uses during ``reprobox run --backend docker``.

DVC runs each stage as ``$SHELL -c "<cmd>"`` in the stage's folder. Pointed at this launcher, that
becomes: the same command, in a container of the experiment's image, in the same folder of the
mounted checkout, as the invoking user, with the rerun's variables (and DVC's own ``DVC_STAGE``
and ``DVC_ROOT``, the latter translated to the container's path). The exit status is the
container's, so DVC stops at a failing stage exactly as it would locally. The container is locked
down the same way as the rerun's own (unprivileged uid, no capabilities, no-new-privileges,
pids/memory limits, GPUs only with ``--gpus``); and when a stage leaves a symbolic link that
leads out of the checkout, the stage fails (status 125) before DVC hashes or caches its outputs.

Invoked as ``stage_shell CONFIG -c CMD`` (CONFIG: the JSON written by
:meth:`DockerBackend.dvc_host_env`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .. import engine
from ..errors import ReproboxError
from .interface import ContainerLimits, Prepared
from .docker import DockerBackend, to_container_path


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if len(args) < 3 or args[1] != "-c":
        sys.stderr.write("reprobox stage shell: expected CONFIG -c COMMAND\n")
        return 2
    config = json.loads(Path(args[0]).read_text())
    command = args[2]

    checkout = Path(config["checkout"])
    cwd = Path.cwd().resolve()
    try:
        rel = cwd.relative_to(checkout)
    except ValueError:
        sys.stderr.write(f"reprobox stage shell: the stage folder {cwd} is outside the checkout\n")
        return 2
    env = dict(config.get("env") or {})
    if os.environ.get("DVC_STAGE"):
        env["DVC_STAGE"] = os.environ["DVC_STAGE"]
    if os.environ.get("DVC_ROOT"):
        try:
            env["DVC_ROOT"] = to_container_path(checkout, Path(os.environ["DVC_ROOT"]))
        except ReproboxError:
            pass
    try:
        limits = ContainerLimits.from_dict(config.get("limits") or {})
    except ReproboxError as exc:
        sys.stderr.write(f"reprobox: {exc}\n")
        return 2
    backend = DockerBackend(engine.get_engine(), limits)
    prepared = Prepared("docker", config["image"], "", True, "python")
    try:
        done = backend.execute(
            prepared,
            ["/bin/sh", "-c", command],
            checkout=checkout,
            cwd=rel.as_posix() or ".",
            env=env,
            network=config.get("network"),
            gpus=bool(config.get("gpus")),
        )
    except ReproboxError as exc:
        sys.stderr.write(f"reprobox: {exc}\n")
        return 125
    return done.returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
