"""The backends' one interface, and what they share about the checkout a rerun works in.

What every backend answers (docker, venv and conda alike), so :mod:`reprobox.run` and
:mod:`reprobox.verify` never ask which one they hold:

* :meth:`Backend.prepare` makes the environment ready (finds or builds the image, finds or
  creates the virtualenv) and says whether it was reused;
* :meth:`Backend.execute` runs an argv in it, in a folder of the checkout, with exactly the
  environment variables given (plus what the backend itself needs: ``PATH``, ``HOME``);
* :meth:`Backend.path_in_env` tells how a file of the checkout is named from inside (the container
  sees the checkout at a fixed folder);
* :meth:`Backend.dvc_host_env` gives the variables under which the *host's* DVC runs a pipeline so
  that every stage command runs inside the environment.

The checkout a rerun works in is untrusted (a stranger may have committed it): everything reprobox
writes there goes through :func:`make_run_dir` (refused when the checkout already has a
``.reprobox-run``, a committed symbolic link included), and :func:`outward_symlinks` finds the
symbolic links, committed or created by the command, that lead out of the checkout, so that
nothing on the host reads, hashes or writes through them.
"""

from __future__ import annotations

import abc
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..engine.interface import GpuRequest
from ..errors import UsageError
from ..progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Environment
    from ..store import Store, StoredExperiment

#: Folder of the checkout (inside the checkout) where reprobox puts what the rerun reports back
#: (inline metrics, the probe and its output). Hidden, removed with the checkout.
RUN_DIR = ".reprobox-run"


@dataclass
class Prepared:
    """A ready environment. ``handle`` is the backend's own (an image tag, a venv folder)."""

    backend: str
    handle: str
    description: str  # one line for the report: "image reprobox/train:abc (built in 41 s)"
    reused: bool
    #: Interpreter as the command sees it ("python" on the image's PATH, or the venv's python).
    python: str
    notes: list[str] = field(default_factory=list)
    #: Packages the environment could not provide (folders outside the repository...).
    unavailable_packages: tuple[str, ...] = ()
    #: Backend-private resources to let go in :meth:`Backend.release` (file locks).
    _resources: list[Any] = field(default_factory=list, repr=False)
    #: Where a conda environment lives inside the environment (a conda image), else None.
    conda_prefix: Optional[str] = None


@dataclass(frozen=True)
class Execution:
    returncode: int
    stdout: str = ""
    stderr: str = ""


#: Default cap on the processes and threads of a rerun's container (``--pids-limit``).
DEFAULT_PIDS_LIMIT = 4096


@dataclass(frozen=True)
class ContainerLimits:
    """What the command line allows a rerun's container beyond the locked-down default.

    ``gpus``: None (no GPU, whatever the capture had), ``"all"``, a count (``"2"``) or device
    ids (``"0,1"`` / GPU UUIDs), as given to ``--gpus``. ``memory``: a Docker memory size
    (``"8g"``), None for no limit.
    """

    pids_limit: int = DEFAULT_PIDS_LIMIT
    memory: Optional[str] = None
    gpus: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.pids_limit, int) or not 16 <= self.pids_limit <= 4_194_304:
            raise UsageError(
                f"--pids-limit {self.pids_limit!r} is out of range",
                "give a number of processes between 16 and 4194304",
            )
        if self.memory is not None and not re.fullmatch(
            r"[1-9][0-9]{0,12}[bkmgBKMG]?", self.memory
        ):
            raise UsageError(
                f"--memory {self.memory!r} is not a memory size", "give a size such as 512m or 8g"
            )
        if self.gpus is not None:
            GpuRequest.parse(self.gpus)  # refuses what no engine would read alike

    def to_dict(self) -> dict[str, Any]:
        return {"pids_limit": self.pids_limit, "memory": self.memory, "gpus": self.gpus}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ContainerLimits":
        return cls(
            int(raw.get("pids_limit", DEFAULT_PIDS_LIMIT)), raw.get("memory"), raw.get("gpus")
        )


@dataclass(frozen=True)
class GpuPlan:
    """Whether the command gets GPUs, and what the report must say when it does not."""

    use_gpus: bool
    note: Optional[str] = None


class Backend(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def prepare(
        self,
        store: "Store",
        stored: "StoredExperiment",
        checkout: Path,
        *,
        network: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> Prepared:
        """Make the experiment's environment ready for commands run in ``checkout``."""

    @abc.abstractmethod
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
        """Run ``argv`` in the environment with the working directory ``checkout/cwd``.

        With ``capture`` the output is returned; otherwise it streams to this process's stderr
        (never its stdout, which carries the result, e.g. ``--json``).
        """

    @abc.abstractmethod
    def path_in_env(self, checkout: Path, path: Path) -> str:
        """The name of ``path`` (inside ``checkout``) as the command sees it."""

    @abc.abstractmethod
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
        """Variables for the host's ``dvc repro`` so that its stage commands run in the
        environment (``scratch`` is a private folder outside the checkout for helper files)."""

    @abc.abstractmethod
    def gpu_plan(self, environment: "Environment") -> GpuPlan:
        """Whether the rerun can use the GPUs the capture had."""

    def release(self, prepared: Prepared) -> None:
        """Let go of what :meth:`prepare` holds (locks); the environment itself is kept."""
        while prepared._resources:
            res = prepared._resources.pop()
            try:
                res.close()
            except OSError:
                pass


def host_uid_gid() -> str:
    """``uid:gid`` of the invoking user, so files a container writes belong to them."""
    return f"{os.getuid()}:{os.getgid()}"


#: The uid:gid a rerun's container gets when reprobox runs as root (``nobody:nogroup``).
UNPRIVILEGED_UID = 65534
UNPRIVILEGED_GID = 65534


def container_uid_gid(uid: Optional[int] = None, gid: Optional[int] = None) -> tuple[int, int]:
    """The uid and gid a rerun's container runs as: never root.

    A user runs the container as themselves (files the command writes belong to them); root is
    mapped to 65534:65534 (``nobody:nogroup``), and the checkout is lent to that uid for the
    length of each container (see :meth:`reprobox.backends.docker.DockerBackend.execute`).
    """
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if uid == 0:
        return UNPRIVILEGED_UID, UNPRIVILEGED_GID
    return uid, (UNPRIVILEGED_GID if gid == 0 else gid)


#: (device, inode) of the run folders this process made: only those are reused.
_RUN_DIRS_MADE: set[tuple[int, int]] = set()


def make_run_dir(checkout: Path) -> Path:
    """``checkout/.reprobox-run``, created by reprobox; refused when the checkout brought one.

    A committed ``.reprobox-run`` could be a symbolic link (what reprobox writes would land
    outside the repository) or hold pre-filled results (inline metrics that pass for the
    rerun's), so it is never reused. A second call for the folder this process made returns it.
    """
    path = Path(checkout) / RUN_DIR
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) in _RUN_DIRS_MADE:
            return path
        raise UsageError(
            f"refusing the checkout: it already has {RUN_DIR}"
            + (" (a symbolic link)" if stat.S_ISLNK(st.st_mode) else "")
            + f" at {path}, reprobox's own folder for what a rerun reports back",
            f"remove {RUN_DIR} from the repository (`git rm -r {RUN_DIR}`) and commit; the "
            "capture may come from an untrusted source",
        )
    os.mkdir(path, 0o755)
    st = os.lstat(path)
    _RUN_DIRS_MADE.add((st.st_dev, st.st_ino))
    return path


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (a new file in a folder reprobox made) without following a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def outward_symlinks(checkout: Path, limit: int = 20) -> list[tuple[str, str]]:
    """Symbolic links under ``checkout`` whose target resolves outside it: ``(path, target)``.

    Walks without following links (the walk itself never leaves the checkout). A link that
    points at a path inside the checkout is fine; one that resolves elsewhere, or dangles
    towards somewhere else, is listed (up to ``limit``).
    """
    base = Path(checkout).resolve()
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in (*dirnames, *filenames):
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                continue
            try:
                target = Path(full).resolve(strict=False)
            except (OSError, RuntimeError):
                target = None
            if target is None or (target != base and base not in target.parents):
                rel = os.path.relpath(full, base)
                found.append((rel, os.readlink(full) if target is not None else "(a link loop)"))
                if len(found) >= limit:
                    return found
    return found


def refuse_outward_symlinks(checkout: Path, when: str) -> None:
    """Exit 2 naming the first symbolic links that lead out of the checkout."""
    found = outward_symlinks(checkout)
    if not found:
        return
    shown = ", ".join(f"{p} -> {t}" for p, t in found[:5])
    raise UsageError(
        f"refusing the checkout {when}: symbolic link(s) point outside it: {shown}; reprobox "
        "never reads, hashes or writes through them",
        "links in a repository must stay inside it; the capture or its command may come from an "
        "untrusted source",
    )
