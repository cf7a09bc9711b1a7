"""The published image of an experiment: its ``images.json`` publication record, written by
``reprobox push`` and read (every field checked, its own seal verified) by
:func:`reprobox.registry.load_publication`. The newest pushed image is used, by digest."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import UsageError
from ..model import grammar as validate
from ..registry import load_publication, trusted_registries


def published_image(stored: Any) -> Optional[str]:
    """``HOST[:PORT]/NAMESPACE/NAME@sha256:...`` of the newest push to a registry this machine
    trusts (:func:`reprobox.registry.trusted_registries`), or None. The record comes with the
    checkout: a registry it names that the host's configuration does not is never used."""
    record = load_publication(stored)
    if record is None or not record.images:
        return None
    trusted = trusted_registries()
    usable = [pub for pub in record.images if pub.registry in trusted]
    if not usable:
        return None
    return validate.image_tag(usable[-1].reference, "published image")


def require_published(stored: Any) -> str:
    ref = published_image(stored)
    if ref is None:
        raise UsageError(
            f"experiment {stored.id} ({stored.experiment.name}) has no image published to a "
            "registry this machine trusts: a Kubernetes Job pulls its image by digest",
            f"run `reprobox push {stored.id}` (and commit the images.json it writes), and list "
            "the registry under [registry] trusted in ~/.config/reprobox/config.toml",
        )
    return ref
