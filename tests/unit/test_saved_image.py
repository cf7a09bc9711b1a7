"""The saved-image reader of the canary tests reads both layouts ``docker save`` writes.

The Docker here may write only one of them, so each is built by hand, as each Docker writes it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from ..saved_image import saved_files, where_in_image

NEEDLE = b"canary-3f1d"


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


LAYER = _tar({"etc/app.conf": b"token=" + NEEDLE + b"\n", "usr/bin/tool": b"\x7fELF"})


def _legacy(folder: Path) -> Path:
    """Docker 20-24: <id>/layer.tar, <id>.json, manifest.json."""
    archive = folder / "legacy.tar"
    archive.write_bytes(
        _tar(
            {
                "manifest.json": json.dumps(
                    [{"Config": "abc.json", "Layers": ["abc/layer.tar"]}]
                ).encode(),
                "abc.json": b'{"config": {}}',
                "abc/VERSION": b"1.0",
                "abc/layer.tar": LAYER,
            }
        )
    )
    return archive


def _oci(folder: Path, compress: bool = False) -> Path:
    """Docker 25+: index.json, oci-layout, blobs/sha256/<digest>; the legacy names are links."""
    layer = gzip.compress(LAYER) if compress else LAYER
    config = b'{"architecture": "amd64"}'
    d_layer, d_config = hashlib.sha256(layer).hexdigest(), hashlib.sha256(config).hexdigest()
    archive = folder / "oci.tar"
    archive.write_bytes(
        _tar(
            {
                "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                "index.json": b'{"schemaVersion": 2, "manifests": []}',
                f"blobs/sha256/{d_config}": config,
                f"blobs/sha256/{d_layer}": layer,
                "manifest.json": json.dumps(
                    [{"Config": f"blobs/sha256/{d_config}", "Layers": [f"blobs/sha256/{d_layer}"]}]
                ).encode(),
            },
            links={f"{d_layer[:12]}/layer.tar": f"../blobs/sha256/{d_layer}"},
        )
    )
    return archive


@pytest.mark.parametrize(
    "make",
    [_legacy, _oci, lambda f: _oci(f, compress=True)],
    ids=["layer.tar", "oci-blobs", "oci-blobs-gzip"],
)
def test_a_secret_inside_a_layer_is_found_in_either_layout(tmp_path: Path, make) -> None:
    found = {name: data for name, data in saved_files(make(tmp_path))}
    inside = [name for name, data in found.items() if NEEDLE in data and ":" in name]
    assert [name.split(":", 1)[1] for name in inside] == ["etc/app.conf"]
    assert inside[0].endswith("layer.tar:etc/app.conf") or inside[0].startswith("blobs/sha256/")


def test_an_archive_without_a_layer_fails_instead_of_passing(tmp_path: Path) -> None:
    archive = tmp_path / "odd.tar"
    archive.write_bytes(_tar({"manifest.json": b"[]", "something/else": b"x"}))
    with pytest.raises(AssertionError, match="holds no layer"):
        list(saved_files(archive))


def test_where_in_image_reads_what_docker_save_writes(tmp_path: Path, monkeypatch) -> None:
    # The archive `docker save` would write, handed over by a stand-in for the docker program.
    archive = _oci(tmp_path)
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\ncp '{archive}' \"$3\"\n")
    docker.chmod(0o755)
    hits = where_in_image("any:tag", NEEDLE, tmp_path, docker=str(docker))
    # The uncompressed layer blob holds it, and so does the file inside that layer.
    assert len(hits) == 2 and hits[1] == hits[0] + ":etc/app.conf"
