"""The docker backend: the experiment's image, the checkout mounted, never as root.

What a rerun's container gets, and nothing more:

* the checkout, read-write, at ``/workspace`` (the image's ``WORKDIR``, where the image's
  editable installs of the repository's own packages point), with its ``.git`` and ``.dvc``
  read-only (what host git and DVC read after the command), and no other host path but one: a
  repository of the recorded commit alone (:func:`reprobox.workspace.git.make_run_repository`),
  read-only at ``/reprobox/git``, which the container's ``/workspace/.git`` names, so that code
  reading git (``git rev-parse HEAD``, GitPython, dvclive) sees the recorded commit; git there
  is told to trust that repository's owner (``safe.directory``), nothing else of git's
  configuration is set;
* an unprivileged user. The uid mapping: a user runs the container as their own ``uid:gid``
  (files the command writes belong to them); **root is mapped to 65534:65534**
  (``nobody:nogroup``), and for the length of each container the checkout is handed to that
  uid (``lchown``, links never followed) and taken back by root when it exits;
* no capabilities (``--cap-drop ALL``), ``--security-opt no-new-privileges`` (a setuid binary
  in the image gains nothing), a pids limit (``--pids-limit``, default 4096) and, with
  ``--memory``, a memory limit (swap capped at the same figure);
* ``HOME=/tmp`` (the container's own, writable by anyone), the recorded replayable variables and
  reprobox's two replay variables; not the host's environment, home folder, SSH agent, Docker
  socket or credentials;
* the engine's default network (a bridge with outbound access: a training script that downloads
  a pretrained model still works), or ``--network none`` for a hermetic run;
* GPUs only with ``--gpus all|N|ids`` on the command line, never because the capture lists
  GPUs: without it a GPU capture reruns on the CPU and the report says so.

When a container exits, the checkout is searched for symbolic links leading out of it (the
command may have made one towards ``/etc/shadow`` or ``~/.ssh``): the run is refused (exit 2,
naming the link) before the host reads, hashes or copies anything of the checkout.

A DVC pipeline is orchestrated by the host's DVC (which pulled the data and knows the stage
graph), with ``SHELL`` pointing at a small launcher (:mod:`reprobox.backends.stage_shell`) so that
every stage command runs in a container of the image with the same rules.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..build import build_experiment, default_tag
from ..build.condaimage import PREFIX, build_conda_image
from ..build.render import SUBSTITUTIONS_FILE
from ..build.render import WORKDIR as CONTAINER_CHECKOUT  # the image's WORKDIR: the code's folder
from ..engine import Confinement, Mount
from ..errors import ReproboxError, UsageError
from ..registry import ensure_pulled, load_publication
from ..store import image_mismatch
from ..termsafe import stream_line
from .interface import (
    Backend,
    ContainerLimits,
    Execution,
    GpuPlan,
    Prepared,
    Progress,
    container_uid_gid,
    refuse_outward_symlinks,
)
from .venv import cpu_only_note

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Environment
    from ..store import Store, StoredExperiment

CONTAINER_HOME = "/tmp"
CONTAINER_GIT_DIR = "/reprobox/git"


def container_env(env: Mapping[str, str]) -> dict[str, str]:
    """Exactly the variables a rerun's container gets (the image's own ENV lines stay)."""
    out = {"HOME": CONTAINER_HOME}
    out.update(env)
    return out


def to_container_path(checkout: Path, path: Path) -> str:
    """``checkout/a/b`` -> ``/workspace/a/b``; refuses a path outside the checkout."""
    base = Path(checkout).resolve()
    target = Path(path)
    target = target.resolve() if target.exists() else Path(os.path.abspath(target))
    try:
        rel = target.relative_to(base)
    except ValueError:
        raise ReproboxError(
            f"internal: {path} is outside the checkout {checkout} and is not in the container"
        ) from None
    return CONTAINER_CHECKOUT if str(rel) == "." else f"{CONTAINER_CHECKOUT}/{rel.as_posix()}"


def _to_stderr(line: str) -> None:
    sys.stderr.write((stream_line(line) if sys.stderr.isatty() else line) + "\n")
    sys.stderr.flush()


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, engine: Any, limits: Optional[ContainerLimits] = None) -> None:
        self.engine = engine
        self.limits = limits or ContainerLimits()

    # ---------------------------------------------------------------- prepare

    def prepare(
        self,
        store: "Store",
        stored: "StoredExperiment",
        checkout: Path,
        *,
        network: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> Prepared:
        say = progress or (lambda _m: None)
        env = stored.environment
        # A tampered or foreign publication record is refused (exit 2) before anything runs.
        record = load_publication(stored)
        candidates = [t for t in (stored.image, default_tag(store.root, stored.id)) if t]
        for tag in dict.fromkeys(candidates):
            if self._usable(tag, stored, say):
                say(f"using the image {tag}")
                prefix: Optional[str] = None
                if env.conda is not None:
                    prefix = PREFIX
                return Prepared(
                    self.name,
                    tag,
                    f"image {tag} (already built)",
                    True,
                    "python",
                    conda_prefix=prefix,
                )
        pulled = self._pull_published(store, stored, record, say)
        if pulled is not None:
            return pulled
        if env.conda is not None:
            return self._prepare_conda(store, stored, say)
        say("no image of this experiment here: building it from its Dockerfile and lock")
        t0 = time.monotonic()
        result = build_experiment(store, stored, progress=say, record=False)
        how = f"built in {time.monotonic() - t0:.1f} s"
        steps, cached = getattr(result, "steps", 0), getattr(result, "cached_steps", 0)
        if steps:
            how += f", {cached} of {steps} steps from the build cache"
        return Prepared(self.name, result.tag, f"image {result.tag} ({how})", False, "python")

    def _pull_published(
        self, store: "Store", stored: "StoredExperiment", record: Any, say: Progress
    ) -> Optional[Prepared]:
        """The image ``reprobox push`` published (images.json), pulled by digest, its labels
        checked; None (and the reason said) when there is none or it cannot be used.

        A tampered or foreign images.json is refused (exit 2) by ``load_publication``.
        """
        if record is None or not record.images:
            return None
        result = ensure_pulled(self.engine, stored, record, say)
        if result.tag is None:
            say(f"not using the published image: {result.reason}; building instead")
            return None
        try:  # the pulled image is untagged: name it like a local build, for the next run
            self.engine.tag_image(result.tag, default_tag(store.root, stored.id))
        except ReproboxError as exc:
            say(f"note: could not tag the pulled image: {exc.message}")
        say(f"using the published image {result.tag}")
        prefix: Optional[str] = None
        if stored.environment.conda is not None:
            prefix = PREFIX
        return Prepared(
            self.name,
            result.tag,
            f"image {result.tag} (pulled by digest, labels checked)",
            True,
            "python",
            conda_prefix=prefix,
        )

    def _prepare_conda(self, store: "Store", stored: "StoredExperiment", say: Progress) -> Prepared:
        """A conda capture's image: its recorded packages installed exactly, offline."""
        say("no image of this experiment here: building it from its conda packages")
        built = build_conda_image(
            store, stored, tag=default_tag(store.root, stored.id), progress=say
        )
        return Prepared(
            self.name,
            built.tag,
            f"image {built.tag} (conda environment at {PREFIX}, built in {built.seconds:.1f} s)",
            False,
            "python",
            conda_prefix=PREFIX,
        )

    def _usable(self, tag: str, stored: "StoredExperiment", say: Progress) -> bool:
        """The image is here and its labels say it was built for this very capture."""
        try:
            if not self.engine.image_exists(tag):
                return False
            labels = self.engine.image_labels(tag)
        except ReproboxError:
            return False
        why = image_mismatch(labels, stored)
        if why is not None:
            say(f"not using the local image {tag}: {why}")
        return why is None

    # ---------------------------------------------------------------- run

    def execute(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        checkout: Path,
        cwd: str = ".",
        env: Mapping[str, str],
        capture: bool = False,
        network: Optional[str] = None,
        gpus: bool = False,
    ) -> Execution:
        workdir = to_container_path(checkout, Path(checkout) / cwd)
        uid, gid = container_uid_gid()
        lent = os.getuid() == 0
        if lent:
            hand_over(checkout, uid, gid)
        try:
            out = self.engine.run_container(
                prepared.handle,
                list(argv),
                mounts=checkout_mounts(checkout),
                workdir=workdir,
                env={**container_env(env), **git_env(checkout)},
                user=f"{uid}:{gid}",
                network=network,
                gpus=(self.limits.gpus or False) if gpus else False,
                stream=None if capture else _to_stderr,
                confine=Confinement(pids_limit=self.limits.pids_limit, memory=self.limits.memory),
            )
        finally:
            if lent:
                hand_over(checkout, 0, 0)
        refuse_outward_symlinks(checkout, "after the command ran in the container")
        return Execution(out.exit_code, out.output if capture else "", "")

    def path_in_env(self, checkout: Path, path: Path) -> str:
        return to_container_path(checkout, path)

    def dvc_host_env(
        self,
        prepared: Prepared,
        *,
        checkout: Path,
        env: Mapping[str, str],
        scratch: Path,
        network: Optional[str] = None,
        gpus: bool = False,
    ) -> dict[str, str]:
        """``SHELL`` -> a launcher that runs each DVC stage command in a container of the image."""
        config = {
            "image": prepared.handle,
            "checkout": str(Path(checkout).resolve()),
            "env": dict(env),
            "network": network,
            "gpus": gpus,
            "limits": self.limits.to_dict(),
        }
        cfg_path = scratch / "stage-shell.json"
        cfg_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        package_parent = Path(__file__).resolve().parents[2]
        launcher = scratch / "stage-shell"
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from reprobox.backends.stage_shell import main; sys.exit(main(sys.argv[1:]))"
        )
        launcher.write_text(
            "#!/bin/sh\n"
            "# Written by reprobox run: DVC calls this as its SHELL for every stage command.\n"
            f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "
            f'{shlex.quote(str(package_parent))} {shlex.quote(str(cfg_path))} "$@"\n'
        )
        launcher.chmod(0o755)
        host = dvc_repro_env(scratch)
        host["SHELL"] = str(launcher)
        return host

    def gpu_plan(self, environment: "Environment") -> GpuPlan:
        """GPUs only when ``--gpus`` asked for them; the capture's GPUs alone never do."""
        if self.limits.gpus is None:
            if not environment.hardware.gpus:
                return GpuPlan(False)
            return GpuPlan(
                False,
                cpu_only_note(environment) + "; the rerun ran on the CPU "
                "because --gpus was not given (`--gpus all` hands the container the "
                "GPUs)",
            )
        try:
            nvidia = bool(self.engine.info().get("nvidia_runtime"))
        except ReproboxError:
            nvidia = False
        if not nvidia:
            raise UsageError(
                f"--gpus {self.limits.gpus} was given, but this Docker has no NVIDIA runtime",
                "install nvidia-container-toolkit, or rerun without --gpus (on the CPU)",
            )
        return GpuPlan(True)


# --------------------------------------------------------------------------- substitutions

#: A line of the image's substitutions file: ``name recorded installed`` (``-``: none).
_SUBSTITUTION = re.compile(
    r"([a-z0-9][a-z0-9+.-]{0,127}) ([A-Za-z0-9.+~:-]{1,256}) "
    r"([A-Za-z0-9.+~:-]{1,256})",
    re.ASCII,
)
#: More lines than this is not a file reprobox wrote.
MAX_SUBSTITUTIONS = 10_000


@dataclass(frozen=True)
class Substitution:
    """A system package the image could not have at its recorded version."""

    name: str
    recorded: Optional[str]  # None: the capture recorded no exact version
    installed: Optional[str]  # None: not installed at all

    def describe(self) -> str:
        want = f"{self.name}={self.recorded}" if self.recorded else self.name
        if self.installed is None:
            return f"system package {want}: not available in the archive, not installed"
        return f"system package {want}: no longer in the archive, {self.installed} installed"

    def to_dict(self) -> dict[str, Optional[str]]:
        return {"name": self.name, "recorded": self.recorded, "installed": self.installed}


def parse_substitutions(text: str) -> tuple[Substitution, ...]:
    """The image's substitutions file, line by line; a line of another shape is skipped."""
    out: list[Substitution] = []
    for line in text.splitlines()[:MAX_SUBSTITUTIONS]:
        m = _SUBSTITUTION.fullmatch(line.strip())
        if not m:
            continue
        name, want, got = m.groups()
        out.append(Substitution(name, None if want == "-" else want, None if got == "-" else got))
    return tuple(sorted(set(out), key=lambda s: s.name))


_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def _substitutions_cache(engine: Any, image: str) -> Optional[Path]:
    """Where the substitutions read from ``image`` are kept: the user's cache, by image id. An
    image id is the digest of the image's configuration, which names every layer's digest, so
    one id always holds the same file (no id, or an id of another shape: no cache)."""
    try:
        image_id = engine.image_id(image)
    except (ReproboxError, AttributeError):
        return None
    m = _IMAGE_ID.fullmatch(str(image_id or ""))
    if not m:
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reprobox" / "substitutions" / f"{m.group(1)}.txt"


def image_substitutions(engine: Any, image: str) -> tuple[Substitution, ...]:
    """What the image's apt step could not install exactly (written by the build, read back
    from the image: no network, no mount, an unprivileged user). Kept by image id, so that a
    second run of the same image starts no container for it (half a second per run)."""

    cache = _substitutions_cache(engine, image)
    if cache is not None:
        try:
            return parse_substitutions(cache.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            pass
    out = engine.run_container(
        image,
        ["/bin/sh", "-c", f"cat {SUBSTITUTIONS_FILE} 2>/dev/null; exit 0"],
        user="65534:65534",
        network="none",
        confine=Confinement(pids_limit=64),
    )
    text = out.output if out.exit_code == 0 else ""
    if cache is not None and out.exit_code == 0:
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        try:  # a cache that cannot be written only costs the container next time
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:
            tmp.unlink(missing_ok=True)
    return parse_substitutions(text)


#: Parts of the checkout the command never writes: git's pointer to the repository (a rewritten
#: one would hand later git commands a configuration of the command's choosing) and DVC's
#: configuration (which the host's DVC reads between stages).
READ_ONLY_IN_CHECKOUT = (".git", ".dvc")


def run_git_folder(checkout: Path) -> Path:
    """Where ``reprobox run`` keeps the repository of the recorded commit for the container:
    beside the checkout, in the run's scratch folder (never inside the checkout)."""
    base = Path(checkout).resolve()
    return base.parent / f"{base.name}.git-for-run"


def _run_git(checkout: Path) -> Optional[tuple[Path, Path]]:
    folder = run_git_folder(checkout)
    repo, dotgit = folder / "repo", folder / "dotgit"
    if repo.is_dir() and not repo.is_symlink() and dotgit.is_file() and not dotgit.is_symlink():
        return repo, dotgit
    return None


def git_env(checkout: Path) -> dict[str, str]:
    """Git's trust of the mounted repository (owned by the host user, not the container's)."""
    if _run_git(checkout) is None:
        return {}
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": CONTAINER_CHECKOUT,
        "GIT_CONFIG_KEY_1": "safe.directory",
        "GIT_CONFIG_VALUE_1": CONTAINER_GIT_DIR,
    }


def checkout_mounts(checkout: Path) -> list[Any]:
    """The checkout read-write at /workspace, with ``.git`` and ``.dvc`` read-only over it, and
    the repository of the recorded commit (when ``reprobox run`` made one) read-only."""
    base = Path(checkout).resolve()
    mounts = [Mount(base, CONTAINER_CHECKOUT)]
    run_git = _run_git(base)
    for name in READ_ONLY_IN_CHECKOUT:
        path = base / name
        if name == ".git" and run_git is not None:
            mounts.append(Mount(run_git[1], f"{CONTAINER_CHECKOUT}/.git", read_only=True))
            mounts.append(Mount(run_git[0], CONTAINER_GIT_DIR, read_only=True))
            continue
        if os.path.lexists(path) and not os.path.islink(path):
            mounts.append(Mount(path, f"{CONTAINER_CHECKOUT}/{name}", read_only=True))
    return mounts


def hand_over(checkout: Path, uid: int, gid: int) -> None:
    """``lchown`` everything under the checkout to ``uid:gid``, never following a link.

    Used when reprobox runs as root: the container's unprivileged user gets the checkout for the
    length of the run, root takes it back before reading anything.
    """
    base = str(Path(checkout).resolve())
    os.lchown(base, uid, gid)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in (*dirnames, *filenames):
            try:
                os.lchown(os.path.join(dirpath, name), uid, gid)
            except FileNotFoundError:
                pass


#: Host variables the host's ``dvc repro`` keeps: what finds programs, the container engine
#: (Docker's daemon, or ``--engine podman``) and the locale. Nothing else: no cloud or index
#: credentials, no SSH agent, no real home.
_REPRO_ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONTEXT",
    "XDG_RUNTIME_DIR",
    "REPROBOX_ENGINE",
    "REPROBOX_PODMAN",
)


def dvc_repro_env(scratch: Path) -> dict[str, str]:
    """The environment of the host's ``dvc repro`` on an untrusted checkout.

    Reproducing a pipeline needs no remote (the data was pulled), so the host's DVC runs with
    ``HOME`` an empty folder of the run's own and none of the user's credentials in reach: no
    ``AWS_*``/``GOOGLE_*``/``AZURE_*``..., no ``SSH_AUTH_SOCK``, no git credential prompt.
    """
    home = Path(scratch) / "dvc-home"
    home.mkdir(exist_ok=True)
    env = {k: os.environ[k] for k in _REPRO_ENV_KEEP if k in os.environ}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_NO_ANALYTICS": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
    )
    return env
