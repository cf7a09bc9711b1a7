"""Podman through its CLI: daemonless (rootless for a user, or as root next to Docker).

Builds with ``podman build`` (``RUN --mount=type=cache`` and ``--secret id=...,src=...`` work as
with BuildKit), runs with the same confinement as Docker (``--cap-drop ALL``,
``no-new-privileges``, pids and memory limits, the caller's user mapping), pushes and pulls with
the credentials of ``podman login`` / the docker configuration it reads itself. Plain HTTP is
allowed, like Docker does by default, only for registries on 127.0.0.0/8, ::1 and localhost
(``--tls-verify=false``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional, Sequence, Union

from .. import proc
from ..errors import BaseImageMissing, EngineError, ReproboxError, ToolMissing
from ..redact import redact_text
from ..termsafe import stream_line
from . import mountkeys
from .command import run_build, stream_lines
from .interface import (
    BuildKitClient,
    BuildRequest,
    Confinement,
    Engine,
    EngineBuild,
    GpuRequest,
    Mount,
    OutputCollector,
    Progress,
    RunOutput,
    is_loopback_registry,
    push_error,
    registry_of,
)
from .logs import PodmanLog, build_hint

_PODMAN_HINT = (
    "install Debian's podman (`scripts/setup-podman.sh`: `apt-get install podman` and "
    "the default_ulimits fix containers need where no systemd runs)"
)


def keyed_request(request: BuildRequest, progress: Optional[Progress] = None) -> BuildRequest:
    """``request`` with a build argument per ``RUN`` step that bind-mounts from the context,
    its value a digest of what the step mounts: podman reuses a step's layer by the step's text
    and arguments alone (:mod:`reprobox.engine.mountkeys`). A Dockerfile with such a step that
    has no argument is built without the layer cache, which is slower and never wrong."""
    try:
        text = request.dockerfile.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return request  # the build itself says what is wrong with the Dockerfile
    keys = mountkeys.input_args(request.context, text)
    out = request
    if keys.args:
        out = replace(out, build_args={**request.build_args, **keys.args})
    if keys.unkeyed and not request.no_cache:
        if progress is not None:
            progress(
                f"{keys.unkeyed} step(s) of this Dockerfile mount files podman's layer cache "
                "does not look at: building without the cache"
            )
        out = replace(out, no_cache=True)
    return out


class PodmanEngine(Engine):
    """Podman through its CLI (see the module's docstring)."""

    name = "podman"

    def __init__(self, binary: Optional[str] = None) -> None:
        self.binary = binary or os.environ.get("REPROBOX_PODMAN") or "podman"
        self._info: Optional[dict[str, Any]] = None

    def _run(
        self, *args: str, check: bool = True, timeout: float = 600, what: Optional[str] = None
    ) -> Any:
        try:
            return proc.run([self.binary, *args], check=check, timeout=timeout, what=what)
        except ToolMissing as exc:
            raise EngineError("podman is not installed", _PODMAN_HINT) from exc

    def available(self) -> bool:
        try:
            self.info()
        except ReproboxError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        if self._info is None:
            out = self._run("info", "--format", "json", check=False, timeout=60)
            if out.returncode != 0:
                tail = " ".join((out.stderr or "").strip().splitlines()[-1:])[:200]
                raise EngineError(
                    f"podman does not work here ({tail or 'no detail'})", _PODMAN_HINT
                )
            try:
                data = json.loads(out.stdout)
            except ValueError:
                data = {}
            host = data.get("host") or {}
            version = data.get("version") or {}
            self._info = {
                "engine": "podman",
                "server_version": version.get("Version"),
                "api_version": version.get("APIVersion"),
                "os": (host.get("distribution") or {}).get("distribution"),
                "arch": host.get("arch"),
                "storage_driver": (data.get("store") or {}).get("graphDriverName"),
                "buildkit_client": f"{self.binary} build (cache and secret mounts)",
                "buildkit": True,
                "rootless": bool((host.get("security") or {}).get("rootless")),
                "nvidia_runtime": False,  # GPUs go through CDI (nvidia.com/gpu=...)
                "default_runtime": (host.get("ociRuntime") or {}).get("name"),
            }
        return self._info

    def buildkit(self) -> Optional[BuildKitClient]:
        # podman build understands the same Dockerfile features reprobox renders for BuildKit.
        return BuildKitClient((self.binary, "build"), {}, f"{self.binary} build")

    # ------------------------------------------------------------------ images

    def image_exists(self, tag: str) -> bool:
        return self._run("image", "exists", tag, check=False, timeout=60).returncode == 0

    def _inspect(self, tag: str) -> Optional[dict[str, Any]]:
        out = self._run("image", "inspect", "--format", "json", tag, check=False, timeout=60)
        if out.returncode != 0:
            return None
        try:
            data = json.loads(out.stdout)
        except ValueError:
            return None
        return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None

    def image_labels(self, tag: str) -> dict[str, str]:
        data = self._inspect(tag)
        if data is None:
            return {}
        labels = data.get("Labels") or (data.get("Config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def image_id(self, tag: str) -> Optional[str]:
        data = self._inspect(tag)
        return str(data.get("Id")) if data else None

    @staticmethod
    def _tls(ref: str) -> list[str]:
        return ["--tls-verify=false"] if is_loopback_registry(registry_of(ref)) else []

    def pull(self, ref: str) -> bool:
        out = self._run("pull", "--quiet", *self._tls(ref), ref, check=False, timeout=1800)
        return out.returncode == 0

    def _base_missing(self, ref: str, hint: str) -> BaseImageMissing:
        return BaseImageMissing(
            f"the base image {ref} is not in podman's storage and cannot be pulled",
            hint + f"; an image Docker has: `docker save {ref} | podman load`",
        )

    def remove_image(self, tag: str) -> None:
        out = self._run("rmi", "--force", tag, check=False, timeout=120)
        if out.returncode != 0 and self.image_exists(tag):
            raise EngineError(
                f"cannot remove image {tag}: {(out.stderr or '').strip()[:200]}",
                "stop the containers that use it (`podman ps -a`)",
            )

    def tag_image(self, image: str, tag: str) -> None:
        out = self._run("tag", image, tag, check=False, timeout=60)
        if out.returncode != 0:
            raise EngineError(f"cannot tag {image} as {tag}: {(out.stderr or '').strip()[:200]}")

    def import_rootfs(self, tarball: Path, tag: str) -> str:
        out = self._run("import", "--quiet", str(tarball), tag, check=False, timeout=1800)
        if out.returncode != 0:
            raise EngineError(
                f"importing {tarball} as {tag} failed: {(out.stderr or '').strip()[:300]}"
            )
        return self.image_id(tag) or out.stdout.strip()

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        say = progress or (lambda _m: None)
        with tempfile.TemporaryDirectory(prefix="reprobox-push-") as tmp:
            digestfile = os.path.join(tmp, "digest")
            argv = [self.binary, "push", *self._tls(ref), "--digestfile", digestfile, ref]
            tail: deque[str] = deque(maxlen=20)
            status = 0
            for item in stream_lines(argv, {}):
                if isinstance(item, int):
                    status = item
                else:
                    line = stream_line(redact_text(item))
                    tail.append(line)
                    if line.startswith(("Copying blob", "Copying config", "Writing manifest")):
                        say("    " + line[:120])
            if status != 0:
                raise push_error(ref, "\n".join(tail))
            try:
                digest = Path(digestfile).read_text().strip()
            except OSError:
                digest = ""
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise push_error(ref, "the push ended without a manifest digest")
        return digest

    # ------------------------------------------------------------------ build

    def build(self, request: BuildRequest, progress: Optional[Progress] = None) -> EngineBuild:
        return run_build(
            (self.binary, "build"),
            {},
            keyed_request(request, progress),
            PodmanLog(progress, request.step_titles),
            lambda text: self._build_failed(request, text),
        )

    @staticmethod
    def _build_failed(req: BuildRequest, text: str) -> NoReturn:
        low = text.lower()
        if "initializing source" in low or "short-name" in low or "manifest unknown" in low:
            raise BaseImageMissing(
                f"building {req.tag} with podman failed: its base image is not in podman's "
                f"storage:\n{text}",
                "load it from Docker (`docker save IMAGE | podman load`), or build it with "
                "`reprobox --engine podman base --python X.Y.Z`",
            )
        raise EngineError(f"building {req.tag} with podman failed at {text}", build_hint(text))

    # ------------------------------------------------------------------ run

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
    ) -> RunOutput:
        cmd = [self.binary, "run", "--rm", "--pull=never"]
        for m in mounts:
            if "," in str(m.source) or "," in m.target:
                raise EngineError(f"internal: a mount path holds a comma: {m.source}")
            spec = f"type=bind,source={m.source},destination={m.target}"
            cmd += ["--mount", spec + (",ro=true" if m.read_only else "")]
        if workdir:
            cmd += ["--workdir", workdir]
        if user:
            cmd += ["--user", user]
        if network:
            cmd += ["--network", network]
        if gpus:
            for gid in _gpu_devices(gpus):
                cmd += ["--device", f"nvidia.com/gpu={gid}"]
        if confine is not None:
            if confine.drop_all_capabilities:
                cmd += ["--cap-drop", "ALL"]
            if confine.no_new_privileges:
                cmd += ["--security-opt", "no-new-privileges"]
            if confine.pids_limit:
                cmd += ["--pids-limit", str(confine.pids_limit)]
            if confine.memory:
                cmd += ["--memory", confine.memory, "--memory-swap", confine.memory]
        out = OutputCollector(stream)
        status = 1
        with tempfile.TemporaryDirectory(prefix="reprobox-podman-env-") as tmp:
            # Values go through a file (not the process list); one variable per line.
            envfile = os.path.join(tmp, "env")
            with open(envfile, "w", encoding="utf-8") as fh:
                for key, value in (env or {}).items():
                    if "\n" in value or "\n" in key or "=" in key:
                        raise EngineError(
                            f"internal: environment variable {key!r} cannot be "
                            "passed to podman (a newline or '=')"
                        )
                    fh.write(f"{key}={value}\n")
            os.chmod(envfile, 0o600)
            cmd += ["--env-file", envfile, image, *argv]
            for item in stream_lines(cmd, {}):
                if isinstance(item, int):
                    status = item
                else:
                    out.line(item)
        output = out.finish()
        if status in (125, 126, 127) and _podman_start_failed(output):
            raise EngineError(
                f"cannot start a podman container from {image}: "
                f"{output.strip().splitlines()[-1][:300]}",
                "build it with `reprobox --engine podman build <exp>`"
                if "image not known" in output
                else _PODMAN_HINT,
            )
        return RunOutput(status, output)


def _gpu_devices(gpus: Union[bool, str]) -> list[str]:
    """CDI device ids: ``all``, the first N (``--gpus N``), or the ids given."""
    want = GpuRequest.parse(gpus)
    if want.all:
        return ["all"]
    if want.count:
        return [str(i) for i in range(want.count)]
    return list(want.ids)


def _podman_start_failed(output: str) -> bool:
    """Status 125-127 with podman's own ``Error:`` line: the container never ran the command."""
    lines = output.strip().splitlines()
    return bool(lines) and lines[-1].startswith("Error: ")
