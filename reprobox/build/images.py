"""Which base image an experiment's image starts from, and where that choice came from.

CPU captures start from the official ``python:X.Y.Z-slim-<codename>`` with the exact patch release.
The codename is the capture host's when it runs Debian; a Debian derivative (Ubuntu) maps to the
Debian release it is built from; anything else gets the newest Debian that publishes that Python
release. GPU captures start from NVIDIA's CUDA runtime image matching the recorded CUDA / cuDNN, and
the exact Python is installed on top. ``--base-image``, then ``base-image`` in the user's
``~/.config/reprobox/config.toml`` override the automatic choice; the result says which of the
three decided. A ``[tool.reprobox] base-image`` in the checkout's pyproject.toml is ignored with a
warning: the checkout is not trusted.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..model import grammar as validate
from ..base.releases import DEBIAN_RELEASES, check_codename, check_python_release
from ..errors import UsageError, ValidationError
from ..model import Environment

#: Debian derivatives' releases -> the Debian release whose libraries they carry.
DERIVED_FROM_DEBIAN = {
    "bionic": "buster",
    "focal": "bullseye",
    "jammy": "bookworm",
    "noble": "trixie",
    "oracular": "trixie",
    "plucky": "trixie",
}

UBUNTU_CODENAMES = {"18.04": "bionic", "20.04": "focal", "22.04": "jammy", "24.04": "noble"}

# The first patch release of each minor that the official images publish for a codename. Older
# codenames are dropped when a newer one arrives (the registry keeps two). This is a summary of the
# registry's history, used only to pick a codename for non-Debian captures; `reprobox base` builds
# any combination, and --base-image overrides.
_FIRST_PATCH = {
    "buster": {(3, 5): 0, (3, 6): 0, (3, 7): 0, (3, 8): 0, (3, 9): 0, (3, 10): 0, (3, 11): 0},
    "bullseye": {
        (3, 6): 14,
        (3, 7): 11,
        (3, 8): 11,
        (3, 9): 6,
        (3, 10): 0,
        (3, 11): 0,
        (3, 12): 0,
        (3, 13): 0,
    },
    "bookworm": {
        (3, 7): 17,
        (3, 8): 17,
        (3, 9): 17,
        (3, 10): 12,
        (3, 11): 4,
        (3, 12): 0,
        (3, 13): 0,
        (3, 14): 0,
    },
    "trixie": {(3, 9): 23, (3, 10): 18, (3, 11): 13, (3, 12): 11, (3, 13): 6, (3, 14): 0},
}
_NEXT = {"buster": "bookworm", "bullseye": "trixie", "bookworm": None, "trixie": None}

# CUDA X.Y -> (the runtime image's X.Y.Z, Ubuntu release), from NVIDIA's published tags.
_CUDA_IMAGES = {
    "11.7": ("11.7.1", "22.04"),
    "11.8": ("11.8.0", "22.04"),
    "12.0": ("12.0.1", "22.04"),
    "12.1": ("12.1.1", "22.04"),
    "12.2": ("12.2.2", "22.04"),
    "12.3": ("12.3.2", "22.04"),
    "12.4": ("12.4.1", "22.04"),
    "12.5": ("12.5.1", "22.04"),
    "12.6": ("12.6.3", "24.04"),
    "12.8": ("12.8.1", "24.04"),
    "12.9": ("12.9.1", "24.04"),
    "13.0": ("13.0.1", "24.04"),
}


@dataclass(frozen=True)
class Distro:
    """The distribution release of a base image, when its name tells it."""

    id: str  # debian | ubuntu
    codename: str

    def __str__(self) -> str:
        return f"{self.id} {self.codename}"


def _release_tuple(version: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise UsageError(f"{version!r} is not an exact Python release (X.Y.Z)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def has_python_image(version: str, codename: str) -> bool:
    """Whether the official registry publishes ``python:<version>-slim-<codename>``."""
    major, minor, patch = _release_tuple(version)
    first = _FIRST_PATCH.get(codename, {}).get((major, minor))
    if first is None or patch < first:
        return False
    successor = _NEXT.get(codename)
    if successor:
        successor_first = _FIRST_PATCH[successor].get((major, minor))
        if successor_first is not None and patch >= successor_first:
            return False
    return True


def newest_debian_for(version: str) -> str:
    """The newest Debian codename with an official image of this Python release."""
    for name in reversed(list(DEBIAN_RELEASES)):
        if has_python_image(version, name):
            return name
    return "bookworm"


def debian_codename_for(environment: Environment) -> tuple[str, str]:
    """The Debian codename for a CPU base image, and why it was chosen."""
    version = environment.interpreter.version
    os_info = environment.os
    code = os_info.codename
    if os_info.id == "debian" and code in DEBIAN_RELEASES:
        return code, f"the capture host runs Debian {code}"
    if os_info.debian_family and code in DERIVED_FROM_DEBIAN:
        mapped = DERIVED_FROM_DEBIAN[code]
        if has_python_image(version, mapped):
            return mapped, f"the capture host runs {os_info.id} {code}, built from Debian {mapped}"
    newest = newest_debian_for(version)
    host = " ".join(p for p in (os_info.id, code) if p) or os_info.system
    return newest, f"the capture host runs {host}; newest Debian with Python {version}"


def python_image(version: str, codename: str) -> str:
    check_python_release(version)
    check_codename(codename)
    return f"python:{version}-slim-{codename}"


def cuda_image(cuda: str, cudnn: Optional[str]) -> Optional[str]:
    """NVIDIA's runtime image for a CUDA X.Y (and cuDNN major), or None when none is known."""
    m = re.match(r"(\d+)\.(\d+)", cuda or "")
    if not m:
        return None
    key = f"{m.group(1)}.{m.group(2)}"
    if key not in _CUDA_IMAGES:
        return None
    full, ubuntu = _CUDA_IMAGES[key]
    flavour = "runtime"
    if cudnn:
        major = cudnn.split(".")[0]
        if major.isdigit():
            newer_naming = (int(m.group(1)), int(m.group(2))) >= (12, 4)
            tag = "cudnn" if (newer_naming and int(major) >= 9) else f"cudnn{major}"
            flavour = f"{tag}-runtime"
    return f"nvidia/cuda:{full}-{flavour}-ubuntu{ubuntu}"


def is_gpu_capture(environment: Environment) -> bool:
    """A capture that ran with a CUDA build of its framework on a machine with GPUs."""
    hw = environment.hardware
    return bool(hw.cuda_runtime) and bool(hw.gpus)


def base_distro(image: str) -> Optional[Distro]:
    """The distribution release an image is built on, read from its conventional tag."""
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    tag = tag.split("@")[0]
    repo = name.split("/")[-1]
    if repo == "python":
        for code in DEBIAN_RELEASES:
            if tag.endswith("-" + code):
                return Distro("debian", code)
    if repo == "cuda":
        m = re.search(r"-ubuntu(\d+\.\d+)$", tag)
        if m and m.group(1) in UBUNTU_CODENAMES:
            return Distro("ubuntu", UBUNTU_CODENAMES[m.group(1)])
    return None


def checked_image_flag(value: str, flag: str) -> str:
    """An image reference given on the command line, or a usage error (exit status 2)."""
    try:
        return validate.image_tag(value, flag)
    except ValidationError:
        raise UsageError(
            f"{flag} {value!r} is not a valid image reference",
            "write it as name[:tag] in lower case, such as `python:3.11.7-slim-bookworm` or "
            "`registry.example/team/image:v1`",
        ) from None


#: The user's own configuration file (in the home folder, never in a checkout).
USER_CONFIG = Path("~/.config/reprobox/config.toml")


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/reprobox/config.toml``, default ``~/.config/reprobox/config.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if base:
        return Path(base) / "reprobox" / "config.toml"
    return USER_CONFIG.expanduser()


def _load_toml(path: Path, what: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib  # lazy: only where a configuration file exists
    else:  # pragma: no cover - exercised on older interpreters only
        import tomli as tomllib  # lazy: as above
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", f"fix the TOML syntax of {what}") from None
    except RecursionError:
        raise UsageError(f"cannot read {path}: it nests too deeply", f"fix {what}") from None
    return data if isinstance(data, dict) else {}


def _configured_base(path: Path) -> Optional[str]:
    """``base-image`` of the user's configuration file (table ``[build]`` or the top level)."""
    if not path.is_file():
        return None
    data = _load_toml(path, str(path))
    build = data.get("build")
    section: dict = build if isinstance(build, dict) else data
    value = section.get("base-image", section.get("base_image"))
    if value is None:
        return None
    try:
        return validate.image_tag(value, "base-image")
    except ValidationError:
        raise UsageError(
            f"base-image = {value!r} in {path} is not a valid image reference",
            "write it as name[:tag], such as `python:3.11.7-slim-bookworm`",
        ) from None


def pyproject_base_warning(repo_root: Optional[Path]) -> Optional[str]:
    """A warning when the checkout's pyproject.toml names a base image, which is ignored.

    The checkout is not trusted (a pull request writes it): the base image of a build comes only
    from the command line, the user's configuration file, or the recorded Python and OS.
    """
    if repo_root is None:
        return None
    path = Path(repo_root) / "pyproject.toml"
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not re.search(r"(?m)^\s*\[\s*tool\s*\.\s*reprobox\s*\]", text) or not re.search(
        r"(?m)^\s*[\"']?base[-_]image", text
    ):
        return None
    return (
        f"[tool.reprobox] base-image in {path.name} is ignored: a base image is never taken "
        "from the checkout; pass --base-image, or set `base-image` under [build] in "
        f"{user_config_path()} on this machine"
    )


def select_base_image(
    environment: Environment,
    *,
    override: Optional[str] = None,
    config_file: Optional[Path] = None,
) -> tuple[str, str]:
    """The base image and where the choice came from: ``flag``, ``config`` or ``auto``.

    Only the host decides: the ``--base-image`` flag, then ``base-image`` in the user's
    configuration file (``~/.config/reprobox/config.toml``), then the recorded Python release and
    OS. Nothing in the checkout is read.
    """
    if override:
        return checked_image_flag(override, "--base-image"), "flag"
    configured = _configured_base(config_file or user_config_path())
    if configured:
        return configured, "config"
    return auto_base_image(environment), "auto"


def auto_base_image(environment: Environment) -> str:
    """The base image the recorded Python release and OS (and CUDA) call for."""
    version = check_python_release(environment.interpreter.version)
    if is_gpu_capture(environment):
        hw = environment.hardware
        image = cuda_image(hw.cuda_runtime or "", hw.cudnn)
        if image:
            return image
    code, _why = debian_codename_for(environment)
    return python_image(version, code)


def explain_base_choice(environment: Environment, image: str, source: str) -> str:
    """One line for the build log: which base and why."""
    if source == "flag":
        return f"base image {image} (from --base-image)"
    if source == "config":
        return f"base image {image} (from {user_config_path()})"
    if image.startswith("nvidia/cuda:"):
        hw = environment.hardware
        return (
            f"base image {image} (GPU capture: CUDA {hw.cuda_runtime}"
            f"{', cuDNN ' + hw.cudnn if hw.cudnn else ''})"
        )
    _code, why = debian_codename_for(environment)
    return f"base image {image} ({why})"
