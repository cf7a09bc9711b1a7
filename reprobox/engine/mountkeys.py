"""Cache keys for builders that do not look at what a ``RUN`` step bind-mounts.

BuildKit keys a ``RUN --mount=type=bind,source=...`` step by the content of what it mounts from
the context. Podman's builder (buildah 1.28, Debian 12's) keys it by the instruction's text and
the build arguments in scope only: two experiments whose install steps read the same text (every
lock step does: the lock and the wheels are mounted, not written into the Dockerfile) would share
the first one's layer, and the second image would hold the first one's packages.

So every ``RUN`` of reprobox's Dockerfile that bind-mounts from the context is preceded by
``ARG REPROBOX_INPUTS_<step>`` (see templates/Dockerfile.j2), and a builder of that kind is given,
for each, a digest of what its step mounts (:func:`input_args`): a step is reused exactly when
the files it reads are the same. BuildKit gets no value: the argument stays unset there, and its
own keys are unchanged. A bind-mounting step with no such argument cannot be keyed: the caller
builds without the layer cache then.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

#: The build argument that keys the next ``RUN`` step by what it mounts.
ARG_PREFIX = "REPROBOX_INPUTS_"

_MOUNT = re.compile(r"--mount=(\S+)")
#: Files up to this size are hashed; larger ones (the uv binary, wheels: hard links into the
#: host's hash-checked wheelhouse) are keyed by their identity and size instead.
_HASHED_MAX = 1 << 20


@dataclass(frozen=True)
class InputKeys:
    #: ``REPROBOX_INPUTS_<step>`` -> digest of what that step mounts
    args: dict[str, str]
    #: ``RUN`` steps that bind-mount from the context with no such argument before them
    unkeyed: int


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments and blanks left out."""
    out: list[str] = []
    current: list[str] = []
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(stripped)
        out.append(" ".join(current))
        current = []
    if current:
        out.append(" ".join(current))
    return out


def context_sources(run: str) -> list[str]:
    """The context paths a ``RUN`` instruction bind-mounts (``type=bind``, not ``from=``)."""
    sources: list[str] = []
    for spec in _MOUNT.findall(run):
        fields = dict(part.split("=", 1) if "=" in part else (part, "") for part in spec.split(","))
        if fields.get("type", "bind") != "bind" or "from" in fields:
            continue
        sources.append(fields.get("source") or fields.get("src") or ".")
    return sources


def _entry(h: "hashlib._Hash", root: str, rel: str) -> None:
    path = os.path.join(root, rel)
    try:
        st = os.lstat(path)
    except OSError:
        h.update(b"missing\0" + rel.encode("utf-8", "surrogateescape") + b"\0")
        return
    name = rel.encode("utf-8", "surrogateescape")
    if stat.S_ISLNK(st.st_mode):
        h.update(b"link\0" + name + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
    elif stat.S_ISDIR(st.st_mode):
        h.update(b"dir\0" + name + b"\0")
        try:
            children = sorted(os.listdir(path))
        except OSError:
            children = []
        for child in children:
            _entry(h, root, os.path.join(rel, child))
    elif stat.S_ISREG(st.st_mode):
        mode = b"x" if st.st_mode & 0o111 else b"-"
        h.update(b"file\0" + name + b"\0" + mode)
        if st.st_size <= _HASHED_MAX:
            try:
                with open(path, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
                return
            except OSError:
                pass
        h.update(f"{st.st_size} {st.st_dev} {st.st_ino} {st.st_mtime_ns}".encode())
    else:
        h.update(b"other\0" + name + b"\0")


def digest(context: Path, sources: list[str]) -> str:
    """sha256 of the named context paths: names, modes, the bytes of small files and the
    identity of large ones. A path that leaves the context is keyed by its name only (the
    builder refuses to mount it)."""
    root = os.path.realpath(context)
    h = hashlib.sha256()
    for src in sources:
        rel = os.path.normpath(src.lstrip("/")) if src not in ("", ".", "/") else "."
        full = os.path.realpath(os.path.join(root, rel))
        h.update(b"source\0" + rel.encode("utf-8", "surrogateescape") + b"\0")
        if full != root and not full.startswith(root + os.sep):
            h.update(b"outside\0")
            continue
        _entry(h, root, rel)
    return h.hexdigest()


def input_args(context: Path, dockerfile: str) -> InputKeys:
    """The value of each ``REPROBOX_INPUTS_*`` argument of ``dockerfile`` (built in
    ``context``), and how many bind-mounting steps have none."""
    args: dict[str, str] = {}
    unkeyed = 0
    pending: list[str] = []
    for ins in instructions(dockerfile):
        word, _, rest = ins.partition(" ")
        word = word.upper()
        if word == "FROM":
            pending = []
        elif word == "ARG":
            name = rest.strip().split("=", 1)[0]
            if name.startswith(ARG_PREFIX):
                pending.append(name)
        elif word == "RUN":
            sources = context_sources(rest)
            if sources:
                value = digest(context, sources)
                keyed = [name for name in pending if args.setdefault(name, value) == value]
                if not keyed:  # no argument, or one another step already keys otherwise
                    unkeyed += 1
            pending = []
    return InputKeys(args, unkeyed)
