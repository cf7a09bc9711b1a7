"""The published image of an experiment: its ``images.json`` publication record, written by
``reprobox push`` and read (every field checked, its own seal verified) by
:func:`reprobox.registry.load_publication`. The newest pushed image is used, by digest."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import UsageError


def published_image(stored: Any) -> Optional[str]:
    """``HOST[:PORT]/NAMESPACE/NAME@sha256:...`` of the newest push, or None."""
    from .. import validate
    from ..registry import load_publication

    record = load_publication(stored)
    if record is None or not record.images:
        return None
    return validate.image_tag(record.images[-1].reference, "published image")


def require_published(stored: Any) -> str:
    ref = published_image(stored)
    if ref is None:
        raise UsageError(
            f"experiment {stored.id} ({stored.experiment.name}) has no published image: a "
            "Kubernetes Job pulls its image by digest",
            f"run `reprobox push {stored.id}` (and commit the images.json it writes)")
    return ref
