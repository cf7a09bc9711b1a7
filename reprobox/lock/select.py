"""Which files of a release the lock names: the one that was installed, and the ones a Linux
rebuild of the same interpreter could pick.

The installed file is recognised by its tags: the ``Tag:`` lines of the installed ``WHEEL`` file
(``Package.wheel_tags``) are exactly the tag set encoded in the wheel's file name. A wheel whose
tags no index file carries was built on the capture host (from the sdist), so the sdist is what
gets locked. The other files are every wheel of the release for the same interpreter and ABI on a
Linux platform (manylinux, musllinux, linux; any architecture unless a target one is given), pure
wheels, and the sdist: a rebuild on another Linux machine then still finds a hashed file.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags, parse_tag

from ..errors import UsageError
from ..model import Environment
from .dists import DistFile

_LINUX_PLATFORM = re.compile(
    r"^(?:manylinux1|manylinux2010|manylinux2014|manylinux_\d+_\d+|musllinux_\d+_\d+|linux)_"
    r"(?P<arch>[a-z0-9_]+)$"
)
_OS_PREFIXES = {
    "linux": ("manylinux", "musllinux", "linux"),
    "darwin": ("macosx",),
    "win32": ("win",),
}
_IMPL_PREFIX = {
    "cpython": "cp",
    "pypy": "pp",
    "graalpy": "graalpy",
    "ironpython": "ip",
    "jython": "jy",
}

#: Docker platform -> (sys_platform, platform_machine).
DOCKER_PLATFORMS = {
    "linux/amd64": ("linux", "x86_64"),
    "linux/arm64": ("linux", "aarch64"),
    "linux/arm64/v8": ("linux", "aarch64"),
}


@dataclass(frozen=True)
class Target:
    """The interpreter and platform a lock is for."""

    full_version: str  # "3.11.7"
    implementation: str = "cpython"
    abi: Optional[str] = None  # "cp311", "cp313t"
    sys_platform: str = "linux"  # linux | darwin | win32
    machine: Optional[str] = None  # platform_machine: x86_64, aarch64, arm64, AMD64

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.full_version.split(".")[:2]
        return int(major), int(minor)

    def marker(self) -> str:
        """The PEP 508 marker a pylock ``environments`` entry pins."""
        parts = [
            f"python_full_version == '{self.full_version}'",
            f"implementation_name == '{self.implementation}'",
            f"sys_platform == '{self.sys_platform}'",
        ]
        if self.machine:
            parts.append(f"platform_machine == '{self.machine}'")
        return " and ".join(parts)


@functools.lru_cache(maxsize=64)
def interpreter_pairs(target: Target) -> frozenset[tuple[str, str]]:
    """Every (python tag, ABI tag) the target interpreter installs, e.g. (cp311, abi3)."""
    version = target.python_version
    prefix = _IMPL_PREFIX.get(target.implementation, target.implementation[:2])
    interp = f"{prefix}{version[0]}{version[1]}"
    if target.implementation == "cpython":
        tags: list[Tag] = list(cpython_tags(version, abis=[target.abi or interp], platforms=["x"]))
    else:
        tags = list(
            generic_tags(interp, abis=[target.abi] if target.abi else ["none"], platforms=["x"])
        )
    tags += list(compatible_tags(version, interp, platforms=["x"]))
    return frozenset((t.interpreter, t.abi) for t in tags)


def parse_wheel_tags(lines: Iterable[str]) -> frozenset[Tag]:
    """The WHEEL file's ``Tag:`` values as a tag set (compressed forms expanded)."""
    return _parse_wheel_tags(tuple(lines))


@functools.lru_cache(maxsize=4096)
def _parse_wheel_tags(lines: tuple[str, ...]) -> frozenset[Tag]:
    out: set[Tag] = set()
    for line in lines:
        out |= set(parse_tag(line.strip()))
    return frozenset(out)


@functools.lru_cache(maxsize=16384)
def _filename_tags(filename: str) -> frozenset[Tag]:
    """The tag set a wheel's name encodes (the last three ``-`` fields, ``.``-compressed).

    Split by hand: a lock looks at thousands of file names, and the tags are all it needs from
    them here (name and version were checked by the release filter).
    """
    if not filename.endswith(".whl"):
        return frozenset()
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return frozenset()
    pys, abis, plats = parts[-3:]
    return frozenset(
        Tag(i, a, p) for i in pys.split(".") for a in abis.split(".") for p in plats.split(".")
    )


def _tags(f: DistFile) -> frozenset[Tag]:
    return _filename_tags(f.filename)


def installed_files(files: Sequence[DistFile], installed: frozenset[Tag]) -> list[DistFile]:
    """The index files that are the wheel that was installed (same tag set; else best overlap)."""
    if not installed:
        return []
    wheels = [f for f in files if f.is_wheel]
    exact = [f for f in wheels if _tags(f) == installed]
    if exact:
        return exact
    best, score = [], 0
    for f in wheels:
        overlap = len(_tags(f) & installed)
        if overlap > score:
            best, score = [f], overlap
        elif overlap == score and overlap:
            best.append(f)
    return best


def platform_family(plat: str) -> Optional[str]:
    for family, prefixes in _OS_PREFIXES.items():
        if plat.startswith(prefixes):
            return family
    return None


def linux_arch(plat: str) -> Optional[str]:
    m = _LINUX_PLATFORM.match(plat)
    return m.group("arch") if m else None


def wheel_fits(
    f: DistFile,
    target: Target,
    *,
    os_family: str = "linux",
    machines: Optional[frozenset[str]] = None,
) -> bool:
    """A wheel for the target's interpreter on ``os_family`` (any arch unless ``machines``)."""
    pairs = interpreter_pairs(target)
    for tag in _tags(f):
        if (tag.interpreter, tag.abi) not in pairs:
            continue
        if tag.platform == "any":
            return True
        if os_family == "linux":
            arch = linux_arch(tag.platform)
            if arch is not None and (machines is None or arch in machines):
                return True
        elif platform_family(tag.platform) == os_family:
            return True
    return False


def rebuild_files(
    files: Sequence[DistFile], target: Target, *, machines: Optional[frozenset[str]] = None
) -> list[DistFile]:
    """Wheels a Linux rebuild of the target interpreter could pick, and the sdists."""
    return [
        f for f in files if f.is_sdist or (f.is_wheel and wheel_fits(f, target, machines=machines))
    ]


def capture_platform_files(files: Sequence[DistFile], target: Target) -> list[DistFile]:
    """Wheels for the capture's own OS (a macOS or Windows capture installs those)."""
    if target.sys_platform == "linux":
        return []
    return [f for f in files if f.is_wheel and wheel_fits(f, target, os_family=target.sys_platform)]


def ordered(files: Iterable[DistFile]) -> list[DistFile]:
    """Unique by file name (first source wins), sorted: lock text must not depend on timing."""
    seen: dict[str, DistFile] = {}
    for f in files:
        seen.setdefault(f.filename, f)
    return [seen[k] for k in sorted(seen)]


# --------------------------------------------------------------------------- targets


def capture_target(env: Environment) -> Target:
    """The interpreter and platform the environment was captured on."""
    interp = env.interpreter
    plat = (interp.platform or "").lower()
    system = (env.os.system or "").lower()
    if system == "darwin" or plat.startswith("macosx"):
        sys_platform = "darwin"
    elif system == "windows" or plat.startswith("win"):
        sys_platform = "win32"
    else:
        sys_platform = "linux"
    machine = env.os.arch or (interp.platform.rsplit("-", 1)[-1] if interp.platform else None)
    return Target(
        full_version=interp.version,
        implementation=interp.implementation.lower(),
        abi=interp.abi,
        sys_platform=sys_platform,
        machine=machine,
    )


def platform_target(env: Environment, platform: str) -> Target:
    """The Linux container platform asked for with ``--platform``."""
    key = platform.strip().lower()
    if key not in DOCKER_PLATFORMS:
        raise UsageError(
            f"unknown platform {platform!r}",
            "use one of: " + ", ".join(k for k in DOCKER_PLATFORMS if k.count("/") == 1),
        )
    sys_platform, machine = DOCKER_PLATFORMS[key]
    base = capture_target(env)
    return Target(base.full_version, base.implementation, base.abi, sys_platform, machine)


def linux_machine(t: Target) -> Optional[str]:
    """Capture machines named the way Linux wheels name them (macOS arm64 is aarch64)."""
    return {"arm64": "aarch64", "amd64": "x86_64"}.get((t.machine or "").lower(), t.machine)
