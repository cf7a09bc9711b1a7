"""The container engine behind one small interface, and its Docker implementation.

Everything reprobox asks of an engine is here: is it there, does an image exist, build one, run a
command in a container, remove an image, import a root file system, describe the engine. The
rest of the tool never imports the Docker SDK.

Two builders: BuildKit (cache mounts for the installers' caches, build secrets for the index
configuration) when a BuildKit-capable *client* exists, else the daemon's classic builder through
the SDK. The first ``docker`` on PATH is not trusted to have BuildKit: a Docker >= 23 client
without the buildx plugin refuses it, while an older client (Debian's docker.io 20.10) has it
built in. :func:`find_buildkit_client` tries every ``docker`` it can find.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .. import proc
from ..errors import BaseImageMissing, EngineError, ToolMissing
from ..redact import redact_text
from ..termsafe import clean, stream_line

log = logging.getLogger("reprobox.engine")

Progress = Callable[[str], None]

_DAEMON_HINT = (
    "start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &` where there is "
    "no systemd) and check that DOCKER_HOST, if set, points at it"
)


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
    """A docker CLI that can build with BuildKit, and how to call it."""

    argv: tuple[str, ...]  # e.g. ("/usr/bin/docker", "build") or (docker, "buildx", "build", "--load")
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
    def image_labels(self, tag: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def pull(self, ref: str) -> bool: ...

    @abc.abstractmethod
    def ensure_image(self, ref: str, hint: str) -> None:
        """The image is local or pulled; else BaseImageMissing carrying ``hint``."""

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
        confine: Optional["Confinement"] = None,
    ) -> RunOutput: ...

    @abc.abstractmethod
    def remove_image(self, tag: str) -> None: ...

    @abc.abstractmethod
    def import_rootfs(self, tarball: Path, tag: str) -> str: ...

    @abc.abstractmethod
    def tag_image(self, image: str, tag: str) -> None: ...


# --------------------------------------------------------------------------- BuildKit clients


def _docker_candidates() -> list[str]:
    """Every docker executable on PATH, then the usual places, without duplicates."""
    seen: dict[str, str] = {}
    dirs = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin", "/snap/bin"]
    for folder in dirs:
        path = os.path.join(folder or ".", "docker")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _client_version(docker: str) -> Optional[tuple[int, ...]]:
    try:
        out = proc.run([docker, "version", "--format", "{{.Client.Version}}"], check=False,
                       timeout=20).stdout
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
            continue
        if buildx.returncode == 0:
            version = (buildx.stdout or "").strip().split("\n")[0]
            return BuildKitClient((docker, "buildx", "build", "--load"), {},
                                  f"{docker} buildx ({version})")
        version = _client_version(docker)
        # Clients from 18.09 to 22.x carry BuildKit themselves (DOCKER_BUILDKIT=1); from 23 on,
        # `docker build` is the buildx plugin, so without the plugin there is no BuildKit.
        if version and (18, 9) <= version < (23, 0):
            return BuildKitClient((docker, "build"), {"DOCKER_BUILDKIT": "1"},
                                  f"{docker} {version[0]}.{version[1]} (built-in BuildKit)")
    return None


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
        log.warning("ignoring the Docker client configuration in %s: %s (registry logins from it "
                    "are not used)", where, type(exc).__name__)
        import tempfile

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


# --------------------------------------------------------------------------- streaming a process


def _stream_lines(argv: Sequence[str], env: Mapping[str, str]) -> Iterator[Union[str, int]]:
    """A build's log as it happens (through proc.stream), its exit status last."""
    try:
        yield from proc.stream(argv, env=env)
    except ToolMissing as exc:
        raise EngineError(f"{argv[0]} is not installed", proc.INSTALL_HINTS["docker"]) from exc


_STEP = re.compile(r"^#(\d+) \[(?:[\w.-]+ )?(\d+/\d+)\] (.*)$")
_DONE = re.compile(r"^#(\d+) (DONE [0-9.]+s|CACHED|ERROR.*)$")
_OUT = re.compile(r"^#(\d+) [0-9.]+ (.*)$")
#: Output lines worth showing while a step runs: what the installers say they did, and warnings.
_NOTABLE = re.compile(
    r"(reprobox: warning:|^warning|Installed \d+ package|Uninstalled \d+ package|"
    r"Successfully installed|\d+ newly installed|^E: |error)",
    re.IGNORECASE,
)
_WARNING = re.compile(r"reprobox: warning: (.*)")


class BuildLog:
    """Condenses BuildKit's plain progress output into one line per step, plus notable lines."""

    def __init__(self, progress: Optional[Progress], step_titles: Sequence[str] = ()) -> None:
        self.progress = progress or (lambda _line: None)
        self.step_titles = list(step_titles)
        self.titles: dict[str, str] = {}
        self.step_output: dict[str, deque[str]] = {}
        self.tail: deque[str] = deque(maxlen=60)
        self.failed: Optional[str] = None
        self.warnings: list[str] = []
        self.steps = 0
        self.cached = 0

    def feed(self, line: str) -> None:
        line = stream_line(redact_text(line))
        self.tail.append(line)
        m = _STEP.match(line)
        if m:
            num, pos, text = m.groups()
            index, total = (int(x) for x in pos.split("/"))
            if len(self.step_titles) == total:
                title = self.step_titles[index - 1]
            else:
                title = re.sub(r"\s+", " ", re.sub(r"--mount=\S+\s*", "", text)).strip()
            # "[build 3/9]": the image's own steps, numbered apart from reprobox's phases
            self.titles[num] = f"[build {pos}] {title[:90]}{'...' if len(title) > 90 else ''}"
            self.step_output[num] = deque(maxlen=25)
            return
        m = _DONE.match(line)
        if m and m.group(1) in self.titles:
            num, status = m.groups()
            self.steps += 1
            if status == "CACHED":
                self.cached += 1
                self.progress(f"{self.titles[num]}  (cached)")
            elif status.startswith("DONE"):
                self.progress(f"{self.titles[num]}  ({status[5:]})")
            else:
                self.failed = num
                self.progress(f"{self.titles[num]}  FAILED")
            return
        m = _OUT.match(line)
        if m and m.group(1) in self.step_output:
            text = m.group(2)
            self.step_output[m.group(1)].append(text)
            warning = _WARNING.search(text)
            if warning and warning.group(1) not in self.warnings:
                self.warnings.append(warning.group(1))
            if _NOTABLE.search(text):
                self.progress("    " + text.strip()[:160])

    def error_text(self) -> str:
        if self.failed and self.failed in self.step_output:
            lines = list(self.step_output[self.failed])
            return f"step {self.titles[self.failed]}:\n" + "\n".join(lines[-20:])
        return "\n".join(list(self.tail)[-25:])


def _build_hint(text: str) -> str:
    low = text.lower()
    if "hash" in low and ("mismatch" in low or "do not match" in low or "doesn't match" in low):
        return ("the index served files whose hashes differ from the lock: re-lock with "
                "`reprobox lock <exp>` if the index legitimately changed")
    if any(s in low for s in ("temporary failure in name resolution", "could not resolve",
                              "name or service not known", "failed to connect", "connection refused",
                              "network is unreachable", "dns error", "timed out")):
        return ("the build could not reach the package index or the OS mirror: check the proxy "
                "settings, or try `--network host`")
    if "certificate" in low or "ssl" in low:
        return ("TLS verification failed inside the build: set pip's `cert` (or PIP_CERT) to the CA "
                "bundle your network needs; reprobox passes it to the build as a secret")
    return "read the build output above; `reprobox build --dry-run` shows the Dockerfile"


def step_titles(dockerfile: str) -> tuple[str, ...]:
    """A short title per build step (FROM, RUN, COPY, ADD, WORKDIR).

    A RUN step is named by the first sentence of the comment block of its section; the other
    steps by their instruction.
    """
    titles: list[str] = []
    block: list[str] = []
    section: Optional[str] = None
    continued = False
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if continued:
            continued = stripped.endswith("\\")
            continue
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        if block:
            text = " ".join(block)
            section = re.split(r"(?<=[A-Za-z0-9)])[.:] ", text + " ", maxsplit=1)[0].strip()
            block = []
        if not stripped:
            continue
        word = stripped.split(None, 1)[0].upper()
        continued = stripped.endswith("\\")
        if word in ("FROM", "RUN", "COPY", "ADD", "WORKDIR"):
            short = re.sub(r"\s+", " ", re.sub(r"--mount=\S+\s*", "", stripped))
            titles.append(section if section and word == "RUN" else short[:80])
    return tuple(titles)


# --------------------------------------------------------------------------- Docker


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
            try:
                import docker
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise EngineError("the Docker SDK for Python is not installed",
                                  "pip install docker") from exc
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
        import docker.errors

        try:
            return self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
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
        import docker.errors

        try:
            self.client.images.pull(ref)
        except docker.errors.DockerException:
            return False
        return True

    def ensure_image(self, ref: str, hint: str) -> None:
        """The image is here, or is pulled; else :class:`BaseImageMissing` naming ``hint``."""
        if self.image_exists(ref) or self.pull(ref):
            return
        raise BaseImageMissing(
            f"the base image {ref} is not on this machine and cannot be pulled "
            "(no registry answers)", hint,
        )

    def remove_image(self, tag: str) -> None:
        import docker.errors

        try:
            self.client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot remove image {tag}: {exc.explanation or exc}",
                              "stop the containers that use it (`docker ps -a`)") from None

    def tag_image(self, image: str, tag: str) -> None:
        repo, _, name = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        if not self.client.api.tag(image, repo, name, force=True):
            raise EngineError(f"cannot tag {image} as {tag}")

    def import_rootfs(self, tarball: Path, tag: str) -> str:
        repo, _, name = tag.rpartition(":")
        import docker.errors

        try:
            out = self.client.api.import_image_from_file(str(tarball), repository=repo, tag=name)
        except docker.errors.APIError as exc:
            raise EngineError(f"importing {tarball} as {tag} failed: {exc.explanation or exc}") from None
        del out
        image_id = self.image_id(tag)
        if not image_id:
            raise EngineError(f"importing {tarball} as {tag} produced no image")
        return image_id

    # ------------------------------------------------------------------ build

    def build(self, request: BuildRequest, progress: Optional[Progress] = None) -> EngineBuild:
        if request.buildkit:
            client = self.buildkit()
            if client is None:
                raise EngineError(
                    "no BuildKit-capable docker client on this machine",
                    "install the buildx plugin (`apt-get install docker-buildx`), or Debian's "
                    "docker.io client; reprobox falls back to the classic builder when asked "
                    "to render without BuildKit",
                )
            _ = self.client  # the daemon must answer before a long CLI call
            return self._build_cli(client, request, progress)
        return self._build_classic(request, progress)

    def _build_cli(self, client: BuildKitClient, req: BuildRequest,
                   progress: Optional[Progress]) -> EngineBuild:
        iidfile = req.context.parent / f".{req.context.name}.iid"
        try:
            iidfile.unlink()
        except FileNotFoundError:
            pass
        argv = [*client.argv, "--progress=plain", "--iidfile", str(iidfile), "--tag", req.tag,
                "--file", str(req.dockerfile)]
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
        log = BuildLog(progress, req.step_titles)
        start = time.monotonic()
        status = 0
        for item in _stream_lines(argv, client.env):
            if isinstance(item, int):
                status = item
            else:
                log.feed(item)
        seconds = time.monotonic() - start
        if status != 0:
            text = log.error_text()
            self._raise_build_error(req, text)
        try:
            image_id = iidfile.read_text().strip()
        except FileNotFoundError:
            raise EngineError(f"the build of {req.tag} finished without an image id") from None
        finally:
            try:
                iidfile.unlink()
            except FileNotFoundError:
                pass
        return EngineBuild(image_id, seconds, "\n".join(log.tail), log.steps, log.cached,
                           tuple(log.warnings))

    def _raise_build_error(self, req: BuildRequest, text: str) -> None:
        low = text.lower()
        if ("pull access denied" in low or "failed to resolve source metadata" in low
                or "no such host" in low and "registry" in low):
            raise BaseImageMissing(
                f"building {req.tag} failed: its base image cannot be found or pulled:\n{text}",
                "build the base locally with `reprobox base --python X.Y.Z`, or pass --base-image",
            )
        raise EngineError(f"building {req.tag} failed at {text}", _build_hint(text))

    def _build_classic(self, req: BuildRequest, progress: Optional[Progress]) -> EngineBuild:
        if req.secrets:
            raise EngineError(
                "the classic builder cannot pass build secrets (CA bundle, index credentials)",
                "use a BuildKit-capable docker client (the buildx plugin, or Debian's docker.io)",
            )
        import docker.errors

        report = progress or (lambda _l: None)
        start = time.monotonic()
        tail: deque[str] = deque(maxlen=40)
        image_id = ""
        steps = cached = 0
        warns: list[str] = []
        try:
            stream: Iterable[dict] = self.client.api.build(
                path=str(req.context), dockerfile=str(req.dockerfile.relative_to(req.context)),
                tag=req.tag, labels=dict(req.labels), buildargs=dict(req.build_args),
                network_mode=req.network, rm=True, forcerm=True, decode=True, pull=False,
                nocache=req.no_cache,
            )
            for chunk in stream:
                if "error" in chunk:
                    tail.append(redact_text(str(chunk["error"])))
                    self._raise_build_error(req, "\n".join(tail))
                text = clean(redact_text(chunk.get("stream", "")))
                for line in text.splitlines():
                    tail.append(line)
                    if line.startswith("Step "):
                        steps += 1
                        report(re.sub(r"\s+", " ", line)[:110])
                    elif "Using cache" in line:
                        cached += 1
                    elif _WARNING.search(line):
                        warns.append(_WARNING.search(line).group(1))  # type: ignore[union-attr]
                    elif _NOTABLE.search(line):
                        report("    " + line.strip()[:160])
                aux = chunk.get("aux") or {}
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
        except docker.errors.APIError as exc:
            self._raise_build_error(req, str(exc.explanation or exc))
        if not image_id:
            image_id = self.image_id(req.tag) or ""
        return EngineBuild(image_id, time.monotonic() - start, "\n".join(tail), steps, cached,
                           tuple(dict.fromkeys(warns)))

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
        confine: Optional["Confinement"] = None,
    ) -> RunOutput:
        import docker.errors
        from docker.types import DeviceRequest
        from docker.types import Mount as DockerMount

        kwargs: dict[str, Any] = {
            "command": list(argv),
            "detach": True,
            "mounts": [DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only)
                       for m in mounts],
            "working_dir": workdir,
            "environment": dict(env or {}),
            "user": user,
        }
        if network:
            kwargs["network_mode"] = network
        if gpus:
            kwargs["device_requests"] = [_gpu_request(DeviceRequest, gpus)]
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
            raise EngineError(f"image {image} is not on this machine",
                              "build it with `reprobox build <exp>`") from None
        except docker.errors.APIError as exc:
            msg = str(exc.explanation or exc)
            hint = ("install the NVIDIA container toolkit to give containers the GPUs"
                    if gpus and "gpu" in msg.lower() else None)
            raise EngineError(f"cannot start a container from {image}: {msg}", hint) from None
        chunks: list[str] = []
        try:
            pending = ""
            for data in container.logs(stream=True, follow=True):
                text = data.decode("utf-8", errors="replace")
                chunks.append(text)
                if stream:
                    pending += text
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        stream(line)
            if stream and pending:
                stream(pending)
            result = container.wait()
        finally:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
        return RunOutput(int(result.get("StatusCode", 1)), "".join(chunks))


def _gpu_request(device_request: Any, gpus: Union[bool, str]) -> Any:
    """``--gpus all`` / ``--gpus 2`` / ``--gpus 0,1`` as the engine's device request."""
    if gpus is True or gpus == "all":
        return device_request(count=-1, capabilities=[["gpu"]])
    text = str(gpus)
    if text.isdigit():
        return device_request(count=int(text), capabilities=[["gpu"]])
    return device_request(device_ids=text.split(","), capabilities=[["gpu"]])


_ENGINE: Optional[Engine] = None


def get_engine() -> Engine:
    """The container engine (Docker). Connecting is lazy: this never fails by itself."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = DockerEngine()
    return _ENGINE
