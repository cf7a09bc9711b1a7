"""Docker through the Docker SDK (the daemon's API), plus a BuildKit CLI client for builds.

Two builders: BuildKit (cache mounts for the installers' caches, build secrets for the index
configuration) when a BuildKit-capable *client* exists (:mod:`.buildkit`), else the daemon's
classic builder through the SDK.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, NoReturn, Optional, Sequence, Union

from ..errors import BaseImageMissing, EngineError
from ..redact import redact_text
from ..termsafe import clean
from .buildkit import find_buildkit_client
from .command import run_build
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
    push_error,
)
from .logs import BuildLog, ClassicLog, build_hint

log = logging.getLogger("reprobox.engine")

_DAEMON_HINT = (
    "start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &` where there is "
    "no systemd) and check that DOCKER_HOST, if set, points at it"
)


def _sdk() -> Any:
    """The Docker SDK (``docker``, ``docker.errors``, ``docker.types``)."""
    try:
        import docker  # lazy: the Docker SDK costs ~60 ms; capture, lock and diff never use it
        import docker.errors  # lazy: as above
        import docker.types  # lazy: as above
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EngineError(
            "the Docker SDK for Python is not installed", "pip install docker"
        ) from exc
    return docker


def _client_from_env(docker: Any) -> Any:
    """``docker.from_env``, surviving an unreadable client config (~/.docker/config.json).

    The SDK parses the registry credentials in that file when it connects and fails on a
    malformed entry; the docker CLI only warns and goes on. reprobox needs no registry login to
    talk to the daemon, so it does the same: warn, and connect without reading that file.
    """
    try:
        return docker.from_env(timeout=300)
    except (ValueError, docker.errors.InvalidConfigFile) as exc:
        where = os.environ.get("DOCKER_CONFIG", "~/.docker")
        log.warning(
            "ignoring the Docker client configuration in %s: %s (registry logins from it "
            "are not used)",
            where,
            type(exc).__name__,
        )
        saved = os.environ.get("DOCKER_CONFIG")
        with tempfile.TemporaryDirectory(prefix="reprobox-docker-config-") as empty:
            # An empty config here, or the SDK falls back to ~/.docker/config.json again.
            with open(os.path.join(empty, "config.json"), "w") as fh:
                fh.write("{}")
            os.environ["DOCKER_CONFIG"] = empty
            try:
                return docker.from_env(timeout=300)
            finally:
                if saved is None:
                    os.environ.pop("DOCKER_CONFIG", None)
                else:
                    os.environ["DOCKER_CONFIG"] = saved


class DockerEngine(Engine):
    """Docker through the Docker SDK (daemon API), plus a BuildKit CLI client for builds."""

    name = "docker"

    def __init__(self) -> None:
        self._client: Any = None
        self._buildkit: Optional[BuildKitClient] = None
        self._buildkit_probed = False

    # ------------------------------------------------------------------ connection

    @property
    def client(self) -> Any:
        if self._client is None:
            docker = _sdk()
            try:
                client = _client_from_env(docker)
                client.ping()
            except Exception as exc:  # noqa: BLE001 - every connection failure means the same
                raise self._unreachable(exc) from None
            self._client = client
        return self._client

    @staticmethod
    def _unreachable(exc: BaseException) -> EngineError:
        text = str(exc)
        if "Permission denied" in text or "PermissionError" in text:
            return EngineError(
                "this user may not talk to the Docker daemon (permission denied on its socket)",
                "add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in "
                "again) or run as root",
            )
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return EngineError(f"the Docker daemon does not answer at {where}", _DAEMON_HINT)

    def available(self) -> bool:
        try:
            _ = self.client
        except EngineError:
            return False
        return True

    def buildkit(self) -> Optional[BuildKitClient]:
        if not self._buildkit_probed:
            self._buildkit = find_buildkit_client()
            self._buildkit_probed = True
        return self._buildkit

    def info(self) -> dict[str, Any]:
        data = self.client.info()
        version = self.client.version()
        bk = self.buildkit()
        return {
            "engine": "docker",
            "server_version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "os": data.get("OperatingSystem"),
            "arch": data.get("Architecture"),
            "storage_driver": data.get("Driver"),
            "buildkit_client": bk.description if bk else None,
            "buildkit": bk is not None,
            "nvidia_runtime": "nvidia" in (data.get("Runtimes") or {}),
            "default_runtime": data.get("DefaultRuntime"),
        }

    # ------------------------------------------------------------------ images

    def _get(self, tag: str) -> Any:
        errors = _sdk().errors
        try:
            return self.client.images.get(tag)
        except errors.ImageNotFound:
            return None
        except errors.APIError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise EngineError(f"cannot inspect image {tag}: {exc.explanation or exc}") from None

    def image_exists(self, tag: str) -> bool:
        return self._get(tag) is not None

    def image_id(self, tag: str) -> Optional[str]:
        image = self._get(tag)
        return image.id if image is not None else None

    def image_labels(self, tag: str) -> dict[str, str]:
        image = self._get(tag)
        if image is None:
            return {}
        return dict(image.attrs.get("Config", {}).get("Labels") or {})

    def image_size(self, tag: str) -> Optional[int]:
        image = self._get(tag)
        return int(image.attrs.get("Size", 0)) if image is not None else None

    def pull(self, ref: str) -> bool:
        try:
            self.client.images.pull(ref)
        except _sdk().errors.DockerException:
            return False
        return True

    def _base_missing(self, ref: str, hint: str) -> BaseImageMissing:
        return BaseImageMissing(
            f"the base image {ref} is not on this machine and cannot be pulled "
            "(no registry answers)",
            hint,
        )

    def remove_image(self, tag: str) -> None:
        errors = _sdk().errors
        try:
            self.client.images.remove(tag, force=True)
        except errors.ImageNotFound:
            pass
        except errors.APIError as exc:
            raise EngineError(
                f"cannot remove image {tag}: {exc.explanation or exc}",
                "stop the containers that use it (`docker ps -a`)",
            ) from None

    def tag_image(self, image: str, tag: str) -> None:
        repo, _, name = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        if not self.client.api.tag(image, repo, name, force=True):
            raise EngineError(f"cannot tag {image} as {tag}")

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        """Push through the daemon (its credentials: ~/.docker/config.json, credential helpers).

        The SDK does not raise when a push fails: every progress event is checked for
        ``error``; the last one carries the manifest digest (``aux.Digest``).
        """
        errors = _sdk().errors
        say = progress or (lambda _m: None)
        repo, _, tag = ref.rpartition(":")
        digest = ""
        shown: set[str] = set()
        try:
            for event in self.client.api.push(repo, tag=tag, stream=True, decode=True):
                if not isinstance(event, dict):
                    continue
                if event.get("error") or event.get("errorDetail"):
                    detail = event.get("errorDetail") or {}
                    text = str(
                        event.get("error")
                        or (detail.get("message") if isinstance(detail, dict) else detail)
                    )
                    raise push_error(ref, redact_text(text))
                status = str(event.get("status") or "")
                if status in ("Pushed", "Layer already exists") or status.startswith("Mounted"):
                    key = f"{event.get('id')}:{status}"
                    if key not in shown:
                        shown.add(key)
                        say(f"    {clean(str(event.get('id')))[:20]}: {clean(status)[:60]}")
                aux = event.get("aux")
                if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
                    digest = aux["Digest"]
        except errors.APIError as exc:
            raise push_error(ref, str(exc.explanation or exc)) from None
        except errors.DockerException as exc:
            raise push_error(ref, str(exc)) from None
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise push_error(ref, "the push ended without a manifest digest")
        return digest

    def import_rootfs(self, tarball: Path, tag: str) -> str:
        repo, _, name = tag.rpartition(":")
        try:
            self.client.api.import_image_from_file(str(tarball), repository=repo, tag=name)
        except _sdk().errors.APIError as exc:
            raise EngineError(
                f"importing {tarball} as {tag} failed: {exc.explanation or exc}"
            ) from None
        image_id = self.image_id(tag)
        if not image_id:
            raise EngineError(f"importing {tarball} as {tag} produced no image")
        return image_id

    # ------------------------------------------------------------------ build

    def build(self, request: BuildRequest, progress: Optional[Progress] = None) -> EngineBuild:
        if not request.buildkit:
            return self._build_classic(request, progress)
        client = self.buildkit()
        if client is None:
            raise EngineError(
                "no BuildKit-capable docker client on this machine",
                "install the buildx plugin (`apt-get install docker-buildx`), or Debian's "
                "docker.io client; reprobox falls back to the classic builder when asked "
                "to render without BuildKit",
            )
        _ = self.client  # the daemon must answer before a long CLI call
        return run_build(
            (*client.argv, "--progress=plain"),
            client.env,
            request,
            BuildLog(progress, request.step_titles),
            lambda text: self._build_failed(request, text),
        )

    def _build_failed(self, req: BuildRequest, text: str) -> NoReturn:
        low = text.lower()
        if (
            "pull access denied" in low
            or "failed to resolve source metadata" in low
            or "no such host" in low
            and "registry" in low
        ):
            raise BaseImageMissing(
                f"building {req.tag} failed: its base image cannot be found or pulled:\n{text}",
                "build the base locally with `reprobox base --python X.Y.Z`, or pass --base-image",
            )
        raise EngineError(f"building {req.tag} failed at {text}", build_hint(text))

    def _build_classic(self, req: BuildRequest, progress: Optional[Progress]) -> EngineBuild:
        if req.secrets:
            raise EngineError(
                "the classic builder cannot pass build secrets (CA bundle, index credentials)",
                "use a BuildKit-capable docker client (the buildx plugin, or Debian's docker.io)",
            )
        errors = _sdk().errors
        start = time.monotonic()
        reader = ClassicLog(progress)
        image_id = ""
        try:
            stream: Iterable[dict] = self.client.api.build(
                path=str(req.context),
                dockerfile=str(req.dockerfile.relative_to(req.context)),
                tag=req.tag,
                labels=dict(req.labels),
                buildargs=dict(req.build_args),
                network_mode=req.network,
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
                nocache=req.no_cache,
            )
            for chunk in stream:
                if "error" in chunk:
                    reader.tail.append(redact_text(str(chunk["error"])))
                    self._build_failed(req, "\n".join(reader.tail))
                for line in str(chunk.get("stream", "")).splitlines():
                    reader.feed(line)
                aux = chunk.get("aux") or {}
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
        except errors.APIError as exc:
            self._build_failed(req, str(exc.explanation or exc))
        if not image_id:
            image_id = self.image_id(req.tag) or ""
        return EngineBuild(
            image_id,
            time.monotonic() - start,
            "\n".join(reader.tail),
            reader.steps,
            reader.cached,
            tuple(reader.warnings),
        )

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
        docker = _sdk()
        kwargs: dict[str, Any] = {
            "command": list(argv),
            "detach": True,
            "mounts": [
                docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                for m in mounts
            ],
            "working_dir": workdir,
            "environment": dict(env or {}),
            "user": user,
        }
        if network:
            kwargs["network_mode"] = network
        if gpus:
            kwargs["device_requests"] = [_gpu_request(docker.types.DeviceRequest, gpus)]
        if confine is not None:
            if confine.drop_all_capabilities:
                kwargs["cap_drop"] = ["ALL"]
            if confine.no_new_privileges:
                kwargs["security_opt"] = ["no-new-privileges"]
            if confine.pids_limit:
                kwargs["pids_limit"] = confine.pids_limit
            if confine.memory:
                kwargs["mem_limit"] = kwargs["memswap_limit"] = confine.memory
        try:
            container = self.client.containers.run(image, **kwargs)
        except docker.errors.ImageNotFound:
            raise EngineError(
                f"image {image} is not on this machine", "build it with `reprobox build <exp>`"
            ) from None
        except docker.errors.APIError as exc:
            msg = str(exc.explanation or exc)
            hint = (
                "install the NVIDIA container toolkit to give containers the GPUs"
                if gpus and "gpu" in msg.lower()
                else None
            )
            raise EngineError(f"cannot start a container from {image}: {msg}", hint) from None
        out = OutputCollector(stream)
        # chunks are cut anywhere, inside a character too
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            streamed = 0
            for data in container.logs(stream=True, follow=True):
                streamed += len(data)
                out.text(decoder.decode(data))
            result = container.wait()
            _read_the_rest(container, streamed, decoder, out)
            output = out.finish()
        finally:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
        return RunOutput(int(result.get("StatusCode", 1)), output)


def _read_the_rest(
    container: Any, streamed: int, decoder: codecs.IncrementalDecoder, out: OutputCollector
) -> None:
    """Hand on what the followed log left out. The daemon decides to follow a log only while
    the container runs: one that exits in between (a ``dpkg-query`` takes milliseconds) can end
    the stream with its output unread. Once the container has exited its whole log is there
    (the log only grows): it is read again as a stream, chunk by chunk (a long run's log is not
    held twice), and what goes past the ``streamed`` bytes is handed on."""
    skip = streamed
    for data in container.logs(stdout=True, stderr=True, stream=True, follow=False):
        if skip >= len(data):
            skip -= len(data)
            continue
        out.text(decoder.decode(data[skip:]))
        skip = 0
    out.text(decoder.decode(b"", final=True))


def _gpu_request(device_request: Any, gpus: Union[bool, str]) -> Any:
    """``--gpus all`` / ``--gpus 2`` / ``--gpus 0,1`` as the daemon's device request."""
    want = GpuRequest.parse(gpus)
    if want.all:
        return device_request(count=-1, capabilities=[["gpu"]])
    if want.count is not None:
        return device_request(count=want.count, capabilities=[["gpu"]])
    return device_request(device_ids=list(want.ids), capabilities=[["gpu"]])
