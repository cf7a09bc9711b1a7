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
from ..errors import BaseImageMissing, EngineError, ReproboxError, ToolMissing
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

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        """Push ``ref`` (``HOST/NAME:TAG``, already tagged here); the manifest digest pushed."""
        raise EngineError(f"the {self.name} engine cannot push images")


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
    if any(s in low for s in ("connection refused", "no such host", "dial tcp", "timeout",
                              "timed out", "connection reset", "i/o timeout", "eof")):
        return EngineError(
            f"cannot push {ref}: the registry {host} does not answer ({first})",
            f"start the registry (a local one: `scripts/start-registry.sh`) or check the "
            f"--registry host and port; `curl http://{host}/v2/` should answer",
        )
    if any(s in low for s in ("unauthorized", "authentication required", "denied",
                              "no basic auth credentials", "forbidden", "401", "403")):
        return EngineError(
            f"the registry {host} refused the push of {ref} ({first})",
            f"log in with `docker login {host}` (or `podman login {host}`), or push to a "
            "namespace you may write to",
        )
    if "http response to https client" in low or "server gave http response" in low:
        return EngineError(
            f"cannot push {ref}: the registry {host} speaks plain HTTP and is not marked "
            "insecure",
            f'add "{host}" to "insecure-registries" in /etc/docker/daemon.json (podman: a '
            "registries.conf.d entry with insecure = true), or serve it over TLS",
        )
    return EngineError(f"the registry {host} refused the push of {ref} ({first})",
                       "read the registry's answer above; check --registry and your login")


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

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        """Push through the daemon (its credentials: ~/.docker/config.json, credential helpers).

        The SDK does not raise when a push fails: every progress event is checked for
        ``error``; the last one carries the manifest digest (``aux.Digest``).
        """
        import docker.errors

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
                    text = str(event.get("error") or (detail.get("message") if
                                                      isinstance(detail, dict) else detail))
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
        except docker.errors.APIError as exc:
            raise push_error(ref, str(exc.explanation or exc)) from None
        except docker.errors.DockerException as exc:
            raise push_error(ref, str(exc)) from None
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise push_error(ref, "the push ended without a manifest digest")
        return digest

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


# --------------------------------------------------------------------------- Podman

_PODMAN_HINT = ("install Debian's podman (`scripts/setup-podman.sh`: `apt-get install podman` and "
                "the default_ulimits fix containers need where no systemd runs)")
_PODMAN_STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")


class PodmanEngine(Engine):
    """Podman through its CLI: daemonless (rootless for a user, or as root next to Docker).

    Builds with ``podman build`` (``RUN --mount=type=cache`` and ``--secret id=...,src=...``
    work as with BuildKit), runs with the same confinement as Docker (``--cap-drop ALL``,
    ``no-new-privileges``, pids and memory limits, the caller's user mapping), pushes and pulls
    with the credentials of ``podman login`` / the docker configuration it reads itself. Plain
    HTTP is allowed, like Docker does by default, only for registries on 127.0.0.0/8, ::1 and
    localhost (``--tls-verify=false``).
    """

    name = "podman"

    def __init__(self, binary: Optional[str] = None) -> None:
        self.binary = binary or os.environ.get("REPROBOX_PODMAN") or "podman"
        self._info: Optional[dict[str, Any]] = None

    def _run(self, *args: str, check: bool = True, timeout: float = 600,
             what: Optional[str] = None) -> Any:
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
                raise EngineError(f"podman does not work here ({tail or 'no detail'})",
                                  _PODMAN_HINT)
            import json

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
        import json

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

    def ensure_image(self, ref: str, hint: str) -> None:
        if self.image_exists(ref) or self.pull(ref):
            return
        raise BaseImageMissing(
            f"the base image {ref} is not in podman's storage and cannot be pulled", hint + "; "
            f"an image Docker has: `docker save {ref} | podman load`")

    def remove_image(self, tag: str) -> None:
        out = self._run("rmi", "--force", tag, check=False, timeout=120)
        if out.returncode != 0 and self.image_exists(tag):
            raise EngineError(f"cannot remove image {tag}: {(out.stderr or '').strip()[:200]}",
                              "stop the containers that use it (`podman ps -a`)")

    def tag_image(self, image: str, tag: str) -> None:
        out = self._run("tag", image, tag, check=False, timeout=60)
        if out.returncode != 0:
            raise EngineError(f"cannot tag {image} as {tag}: {(out.stderr or '').strip()[:200]}")

    def import_rootfs(self, tarball: Path, tag: str) -> str:
        out = self._run("import", "--quiet", str(tarball), tag, check=False, timeout=1800)
        if out.returncode != 0:
            raise EngineError(f"importing {tarball} as {tag} failed: "
                              f"{(out.stderr or '').strip()[:300]}")
        return self.image_id(tag) or out.stdout.strip()

    def push_image(self, ref: str, progress: Optional[Progress] = None) -> str:
        import tempfile

        say = progress or (lambda _m: None)
        with tempfile.TemporaryDirectory(prefix="reprobox-push-") as tmp:
            digestfile = os.path.join(tmp, "digest")
            argv = [self.binary, "push", *self._tls(ref), "--digestfile", digestfile, ref]
            tail: deque[str] = deque(maxlen=20)
            status = 0
            for item in _stream_lines(argv, {}):
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
        req = request
        iidfile = req.context.parent / f".{req.context.name}.iid"
        try:
            iidfile.unlink()
        except FileNotFoundError:
            pass
        argv = [self.binary, "build", "--iidfile", str(iidfile), "--tag", req.tag,
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
        say = progress or (lambda _l: None)
        tail: deque[str] = deque(maxlen=60)
        warns: list[str] = []
        steps = cached = 0
        start = time.monotonic()
        status = 0
        for item in _stream_lines(argv, {}):
            if isinstance(item, int):
                status = item
                continue
            line = stream_line(redact_text(item))
            tail.append(line)
            m = _PODMAN_STEP.match(line)
            if m:
                steps += 1
                index, total, text = int(m.group(1)), int(m.group(2)), m.group(3)
                title = (req.step_titles[index - 1] if len(req.step_titles) == total else
                         re.sub(r"\s+", " ", re.sub(r"--mount=\S+\s*", "", text)).strip())
                say(f"[{index}/{total}] {title[:90]}")
            elif line.startswith("--> Using cache"):
                cached += 1
            else:
                warning = _WARNING.search(line)
                if warning and warning.group(1) not in warns:
                    warns.append(warning.group(1))
                elif _NOTABLE.search(line):
                    say("    " + line.strip()[:160])
        seconds = time.monotonic() - start
        if status != 0:
            text = "\n".join(list(tail)[-25:])
            low = text.lower()
            if "initializing source" in low or "short-name" in low or "manifest unknown" in low:
                raise BaseImageMissing(
                    f"building {req.tag} with podman failed: its base image is not in podman's "
                    f"storage:\n{text}",
                    "load it from Docker (`docker save IMAGE | podman load`), or build it with "
                    "`reprobox --engine podman base --python X.Y.Z`",
                )
            raise EngineError(f"building {req.tag} with podman failed at {text}",
                              _build_hint(text))
        try:
            image_id = iidfile.read_text().strip()
        except FileNotFoundError:
            raise EngineError(f"the build of {req.tag} finished without an image id") from None
        finally:
            try:
                iidfile.unlink()
            except FileNotFoundError:
                pass
        return EngineBuild(image_id, seconds, "\n".join(tail), steps, cached, tuple(warns))

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
        import tempfile

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
            ids = ["all"] if gpus is True or gpus == "all" else str(gpus).split(",")
            if len(ids) == 1 and ids[0].isdigit() and gpus not in ("0",):
                ids = [str(i) for i in range(int(ids[0]))]
            for gid in ids:
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
        with tempfile.TemporaryDirectory(prefix="reprobox-podman-env-") as tmp:
            # Values go through a file (not the process list); one variable per line.
            envfile = os.path.join(tmp, "env")
            with open(envfile, "w", encoding="utf-8") as fh:
                for key, value in (env or {}).items():
                    if "\n" in value or "\n" in key or "=" in key:
                        raise EngineError(f"internal: environment variable {key!r} cannot be "
                                          "passed to podman (a newline or '=')")
                    fh.write(f"{key}={value}\n")
            os.chmod(envfile, 0o600)
            cmd += ["--env-file", envfile, image, *argv]
            chunks: list[str] = []
            status = 1
            for item in _stream_lines(cmd, {}):
                if isinstance(item, int):
                    status = item
                    continue
                chunks.append(item + "\n")
                if stream:
                    stream(item)
        output = "".join(chunks)
        if status in (125, 126, 127) and _podman_start_failed(output):
            raise EngineError(f"cannot start a podman container from {image}: "
                              f"{output.strip().splitlines()[-1][:300]}",
                              "build it with `reprobox --engine podman build <exp>`"
                              if "image not known" in output else _PODMAN_HINT)
        return RunOutput(status, output)


def _podman_start_failed(output: str) -> bool:
    """Status 125-127 with podman's own ``Error:`` line: the container never ran the command."""
    lines = output.strip().splitlines()
    return bool(lines) and lines[-1].startswith("Error: ")


# --------------------------------------------------------------------------- selection

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
        if chosen == "podman":
            _ENGINE = PodmanEngine()
        elif chosen == "docker":
            _ENGINE = DockerEngine()
        else:
            docker_engine = DockerEngine()
            _ENGINE = docker_engine
            if (not os.environ.get("DOCKER_HOST") and not docker_engine.available()
                    and proc.which("podman")):
                podman = PodmanEngine()
                if podman.available():
                    log.info("no Docker daemon answers: using podman")
                    _ENGINE = podman
    return _ENGINE
