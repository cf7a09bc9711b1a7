"""The published image of an experiment (``images.json``, written by ``reprobox push``), read
without trusting it: the reference must pass the image grammar and carry a sha256 digest."""

from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import UsageError

RECORD = "images.json"


def _candidates(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        items = data.get("images", [data])
        return [i for i in (items if isinstance(items, list) else [items])
                if isinstance(i, dict)]
    if isinstance(data, list):
        return [i for i in data if isinstance(i, dict)]
    return []


def published_image(stored: Any) -> Optional[str]:
    """``REPOSITORY@sha256:...`` from the experiment's publication record, or None."""
    from .. import validate

    if RECORD not in stored.experiment.files:
        return None
    try:
        raw = stored.file(RECORD).read_text(encoding="utf-8")
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{RECORD} of {stored.id} is unreadable: {exc}",
                         f"publish it again with `reprobox push {stored.id}`") from None
    for item in _candidates(data):
        ref = item.get("reference") or item.get("ref") or item.get("repository")
        digest = item.get("digest") or item.get("manifest_digest")
        if not isinstance(ref, str) or not isinstance(digest, str):
            continue
        digest = validate.digest(digest, f"{RECORD} digest")
        name = ref.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:  # drop a tag: the digest pins the image
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return validate.image_tag(f"{name}@{digest}", f"{RECORD} reference")
    return None


def require_published(stored: Any) -> str:
    ref = published_image(stored)
    if ref is None:
        raise UsageError(
            f"experiment {stored.id} ({stored.experiment.name}) has no published image: a "
            "Kubernetes Job pulls its image by digest",
            f"run `reprobox push {stored.id}` (and commit the images.json it writes)")
    return ref
