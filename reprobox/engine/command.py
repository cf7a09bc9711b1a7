"""What the two command-line paths share: ``docker buildx build`` / ``docker build`` with
BuildKit and ``podman build`` take the same request the same way, stream their log the same way
and leave the image id in the same ``--iidfile``."""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, Generator, Mapping, NoReturn, Sequence, Union

from .. import proc
from ..errors import EngineError, ToolMissing
from .interface import BuildRequest, BuildStopped, EngineBuild
from .logs import StepLog


def stream_lines(
    argv: Sequence[str], env: Mapping[str, str]
) -> Generator[Union[str, int], None, None]:
    """A command's output as it happens (through proc.stream), its exit status last."""
    try:
        yield from proc.stream(argv, env=env)
    except ToolMissing as exc:
        raise EngineError(f"{argv[0]} is not installed", proc.INSTALL_HINTS["docker"]) from exc


def build_argv(client: Sequence[str], req: BuildRequest, iidfile: Path) -> list[str]:
    """``CLIENT --iidfile F --tag T --file D [labels secrets args network no-cache] CONTEXT``."""
    argv = [*client, "--iidfile", str(iidfile), "--tag", req.tag, "--file", str(req.dockerfile)]
    for key, value in sorted(req.labels.items()):
        argv += ["--label", f"{key}={value}"]
    for sid, path in sorted(req.secrets.items()):
        argv += ["--secret", f"id={sid},src={path}"]
    for key, value in sorted(req.build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    if req.network:
        argv += ["--network", req.network]
    if req.no_cache:
        argv.append("--no-cache")
    argv.append(str(req.context))
    return argv


def run_build(
    client: Sequence[str],
    env: Mapping[str, str],
    req: BuildRequest,
    log: StepLog,
    failed: Callable[[str], NoReturn],
) -> EngineBuild:
    """Run the build, feeding ``log``; on a failure ``failed(error text)`` raises."""
    iidfile = req.context.parent / f".{req.context.name}.iid"
    with suppress(FileNotFoundError):
        iidfile.unlink()
    start = time.monotonic()
    status = 0
    lines = stream_lines(build_argv(client, req, iidfile), env)
    try:
        for item in lines:
            if req.stop is not None and req.stop.is_set():
                raise BuildStopped(f"the build of {req.tag} was stopped")
            if isinstance(item, int):
                status = item
            else:
                log.feed(item)
    finally:
        lines.close()  # a build left early: its client is terminated, which ends the build
    seconds = time.monotonic() - start
    if status != 0:
        failed(log.error_text())
    try:
        image_id = iidfile.read_text().strip()
    except FileNotFoundError:
        raise EngineError(f"the build of {req.tag} finished without an image id") from None
    finally:
        with suppress(FileNotFoundError):
            iidfile.unlink()
    return EngineBuild(
        image_id, seconds, "\n".join(log.tail), log.steps, log.cached, tuple(log.warnings)
    )
