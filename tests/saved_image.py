"""Read an image the way ``docker save`` writes it, in both layouts, for the canary tests.

Docker before 25 writes the legacy layout: ``manifest.json``, ``<id>.json`` configs and one
``<id>/layer.tar`` per layer. Docker 25 and later write the OCI layout: ``index.json``,
``oci-layout`` and every manifest, config and layer as ``blobs/sha256/<digest>`` (the legacy
names, where kept, are links to those blobs). A test that looks for a secret in an image reads
every file of the archive and every file inside every layer, whichever layout it got, and fails
if it found no layer at all, so a layout it does not know cannot make it pass by reading nothing.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)


def docker_save(tag: str, folder: Path, docker: str = DOCKER) -> Path:
    """``docker save`` of ``tag`` into a new archive in ``folder``."""
    archive = folder / f"saved-{uuid.uuid4().hex[:12]}.tar"
    subprocess.run([docker, "save", "-o", str(archive), tag], check=True, capture_output=True)
    return archive


def _layer(name: str, data: bytes) -> tarfile.TarFile | None:
    """The layer tar a member holds (plain or compressed), or None for a config or manifest."""
    if not (name.endswith("layer.tar") or name.startswith("blobs/")):
        return None
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError:
        return None  # a JSON blob: config, manifest or index


def saved_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Every regular file of a saved image: ``(member, bytes)`` for each file of the archive, and
    ``(member:path, bytes)`` for each file inside each layer. Raises AssertionError when the
    archive holds no layer (a layout this reader does not know)."""
    layers = 0
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue  # links to blobs, folders
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            yield member.name, data
            layer = _layer(member.name, data)
            if layer is None:
                continue
            layers += 1
            with layer:
                for entry in layer.getmembers():
                    if entry.isfile():
                        body = layer.extractfile(entry).read()  # type: ignore[union-attr]
                        yield f"{member.name}:{entry.name}", body
    assert layers, f"{archive} holds no layer in either the layer.tar or the blobs/sha256 layout"


def image_files(tag: str, folder: Path, docker: str = DOCKER) -> Iterator[tuple[str, bytes]]:
    """:func:`saved_files` of ``docker save`` of ``tag`` (the archive is removed after)."""
    archive = docker_save(tag, folder, docker)
    try:
        yield from saved_files(archive)
    finally:
        archive.unlink()


def where_in_image(tag: str, needle: bytes, folder: Path, docker: str = DOCKER) -> list[str]:
    """The files of the saved image (and of its layers) that contain ``needle``."""
    return [name for name, data in image_files(tag, folder, docker) if needle in data]
