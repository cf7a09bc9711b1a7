"""What reprobox asks of a container engine, and the values that cross that boundary.

Is it there, does an image exist, build one, run a command in a container, remove, tag, push
an image, import a root file system, describe the engine. Nothing outside :mod:`reprobox.engine`
talks to Docker or Podman directly.
"""

from __future__ import annotations

import abc
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import BaseImageMissing, EngineError, UsageError
from ..progress import Progress


class BuildStopped(EngineError):
    """A build stopped on request (:attr:`BuildRequest.stop`), before it ended."""


@dataclass(frozen=True)
class Mount:
    """A host folder or file bound into a container."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Confinement:
    """How a container is locked down: capabilities, privilege escalation, resource limits."""

    drop_all_capabilities: bool = True
    no_new_privileges: bool = True
    pids_limit: Optional[int] = None
    memory: Optional[str] = None  # e.g. "8g"; swap is capped at the same figure


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path  # inside the context
    tag: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: secret id -> file on the host (BuildKit only)
    secrets: Mapping[str, Path] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    network: Optional[str] = None
    buildkit: bool = True
    #: Ignore the layer cache (BuildKit cache mounts still apply).
    no_cache: bool = False
    #: What each build step does, in step order (shown instead of the raw instruction).
    step_titles: tuple[str, ...] = ()
    #: Set from another thread to stop the build at the next line of its output (the build
    #: then raises :class:`BuildStopped`); builds through a client command only.
    stop: Optional[threading.Event] = field(default=None, compare=False)


@dataclass(frozen=True)
class EngineBuild:
    image_id: str
    seconds: float
    log_tail: str = ""
    steps: int = 0
    cached_steps: int = 0
    #: ``reprobox: warning:`` lines the build's own steps printed (unpinned packages...).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunOutput:
    exit_code: int
    output: str


@dataclass(frozen=True)
class BuildKitClient:
    """A CLI that builds with BuildKit's Dockerfile features, and how to call it."""

    #: e.g. ("/usr/bin/docker", "build") or (docker, "buildx", "build", "--load")
    argv: tuple[str, ...]
    env: Mapping[str, str]
    description: str


class Engine(abc.ABC):
    """What reprobox needs from a container engine."""

    name = "engine"

    @abc.abstractmethod
    def available(self) -> bool: ...

    @abc.abstractmethod
    def info(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def buildkit(self) -> Optional[BuildKitClient]: ...

    @abc.abstractmethod
    def image_exists(self, tag: str) -> bool: ...

    @abc.abstractmethod
    def image_id(self, tag: str) -> Optional[str]: ...

    @abc.abstractmethod
    def image_labels(self, tag: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def pull(self, ref: str) -> bool: ...

    def ensure_image(self, ref: str, hint: str) -> None:
        """The image is here, or is pulled; else :class:`BaseImageMissing` carrying ``hint``."""
        if self.image_exists(ref) or self.pull(ref):
            return
        raise self._base_missing(ref, hint)

    def _base_missing(self, ref: str, hint: str) -> BaseImageMissing:
        return BaseImageMissing(f"the base image {ref} is not here and cannot be pulled", hint)

    @abc.abstractmethod
    def build(self, request: BuildRequest, progress: Optional[Progress] = None) -> EngineBuild: ...

    @abc.abstractmethod
    def run_container(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        workdir: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        network: Optional[str] = None,
        gpus: Union[bool, str] = False,
        stream: Optional[Progress] = None,
        confine: Optional[Confinement] = None,
    ) -> RunOutput: ...

    @abc.abstractmethod
    def remove_image(self, tag: str) -> None: ...

    @abc.abstractmethod
    def import_rootfs(self, tarball: Path, tag: str) -> str: ...

    @abc.abstractmethod
    def tag_image(self, image: str, tag: str) -> None: ...

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        """Push ``ref`` (``HOST/NAME:TAG``, already tagged here); the manifest digest pushed."""
        raise EngineError(f"the {self.name} engine cannot push images")


class OutputCollector:
    """A container's output as it arrives: kept whole, and handed on line by line."""

    def __init__(self, stream: Optional[Progress]) -> None:
        self.stream = stream
        self._chunks: list[str] = []
        self._pending = ""

    def text(self, text: str) -> None:
        """A chunk of output, cut anywhere."""
        self._chunks.append(text)
        if self.stream:
            *lines, self._pending = (self._pending + text).split("\n")
            for line in lines:
                self.stream(line)

    def line(self, line: str) -> None:
        """One whole line, without its newline."""
        self.text(line + "\n")

    def finish(self) -> str:
        if self.stream and self._pending:
            self.stream(self._pending)
            self._pending = ""
        return "".join(self._chunks)


#: A GPU device as ``--gpus`` names it: an index, or an NVIDIA GPU or MIG UUID.
_GPU_ID = re.compile(r"[0-9]{1,3}|(?:GPU|MIG)-[A-Za-z0-9-]{1,80}", re.ASCII)
_GPU_HINT = (
    "use `--gpus all`, a count (`--gpus 2`), device ids (`--gpus 0,1`), or one device "
    "(`--gpus device=0`)"
)


@dataclass(frozen=True)
class GpuRequest:
    """``--gpus all`` / ``--gpus 2`` (a count) / ``--gpus 0,1`` or ``--gpus device=0`` (device
    ids), parsed once, the same for every engine; anything else is refused."""

    all: bool = False
    count: Optional[int] = None
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, gpus: Union[bool, str]) -> GpuRequest:
        if gpus is True or gpus == "all":
            return cls(all=True)
        text = str(gpus)
        if re.fullmatch(r"[1-9][0-9]{0,2}", text, re.ASCII):
            return cls(count=int(text))
        listed = text[len("device=") :] if text.startswith("device=") else text
        ids = tuple(listed.split(","))
        if text == listed and len(ids) < 2:  # "0", "-1", "00": neither a count nor a list
            raise UsageError(f"--gpus {text[:80]!r} is not a GPU request", _GPU_HINT)
        if len(ids) > 64 or not all(_GPU_ID.fullmatch(i) for i in ids):
            raise UsageError(f"--gpus {text[:80]!r} is not a GPU request", _GPU_HINT)
        if len(set(ids)) != len(ids):
            raise UsageError(f"--gpus {text[:80]!r} names a device twice", _GPU_HINT)
        return cls(ids=ids)


def registry_of(ref: str) -> str:
    """The registry host of a reference (``HOST[:PORT]``), or docker.io."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def is_loopback_registry(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the registries Docker talks plain HTTP to by default."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:]+)\](?::\d+)?", host)
    if m:
        name = m.group(1)
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name == "localhost" or name == "::1" or bool(re.fullmatch(r"127(\.\d{1,3}){3}", name))


def push_error(ref: str, text: str) -> EngineError:
    """One line naming the registry and the fix, from whatever the engine said."""
    host = registry_of(ref)
    low = text.lower()
    first = " ".join(text.strip().splitlines()[-1:])[:300] if text.strip() else "no detail"
    if any(
        s in low
        for s in (
            "connection refused",
            "no such host",
            "dial tcp",
            "timeout",
            "timed out",
            "connection reset",
            "i/o timeout",
            "eof",
        )
    ):
        return EngineError(
            f"cannot push {ref}: the registry {host} does not answer ({first})",
            f"start the registry (a local one: `scripts/start-registry.sh`) or check the "
            f"--registry host and port; `curl http://{host}/v2/` should answer",
        )
    if any(
        s in low
        for s in (
            "unauthorized",
            "authentication required",
            "denied",
            "no basic auth credentials",
            "forbidden",
            "401",
            "403",
        )
    ):
        return EngineError(
            f"the registry {host} refused the push of {ref} ({first})",
            f"log in with `docker login {host}` (or `podman login {host}`), or push to a "
            "namespace you may write to",
        )
    if "http response to https client" in low or "server gave http response" in low:
        return EngineError(
            f"cannot push {ref}: the registry {host} speaks plain HTTP and is not marked insecure",
            f'add "{host}" to "insecure-registries" in /etc/docker/daemon.json (podman: a '
            "registries.conf.d entry with insecure = true), or serve it over TLS",
        )
    return EngineError(
        f"the registry {host} refused the push of {ref} ({first})",
        "read the registry's answer above; check --registry and your login",
    )
