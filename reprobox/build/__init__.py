"""build: the container image of an experiment, exact and offline-capable.

    select_base_image (images.py)  ->  plan_image + render (render.py, templates/Dockerfile.j2)
    ->  checked_lock (lock/checks.py: every line of the lock against environment.json)
    ->  fetch_artifacts (lock/wheelhouse.py: the host fetches and hash-checks every file)
    ->  assemble_context (context.py: code at the commit, lock, wheels, tools)
    ->  engine.build (engine.py: BuildKit, else classic): the steps that install Python
        packages see no secret and no index, and run with the network off (``RUN
        --network=none``, or a second build with the network off after the system part,
        which is then an image of its own, built while the host fetches and assembles)
    ->  store.set_image (local state)

The base image comes from the host only (flag, user configuration, or the recorded Python and
OS), never from the checkout. ``reprobox base`` (base.py) makes the
``python:X.Y.Z-slim-<codename>`` base without a registry. Rendering is pure; everything with side
effects is in :func:`build_experiment`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .builder import (
        BuildResult,
        Fetched,
        build_experiment,
        checked_lock,
        default_tag,
        fetch_wheelhouse,
        read_at_commit,
        read_sealed,
        unverified_notes,
    )
    from .images import select_base_image
    from .render import WORKDIR, RenderOptions, render_dockerfile

#: Each name and the module that defines it, imported on first use: ``reprobox lock`` renders
#: the Dockerfile (:mod:`.render`) and needs none of the build's orchestration, its engines or
#: its context (~20 ms of imports it would otherwise load beside its index lookups).
_WHERE = {
    "BuildResult": ".builder",
    "Fetched": ".builder",
    "build_experiment": ".builder",
    "checked_lock": ".builder",
    "default_tag": ".builder",
    "fetch_wheelhouse": ".builder",
    "read_at_commit": ".builder",
    "read_sealed": ".builder",
    "unverified_notes": ".builder",
    "select_base_image": ".images",
    "WORKDIR": ".render",
    "RenderOptions": ".render",
    "render_dockerfile": ".render",
}


__getattr__ = exports(__name__, _WHERE)


__all__ = [
    "WORKDIR",
    "BuildResult",
    "Fetched",
    "RenderOptions",
    "build_experiment",
    "checked_lock",
    "default_tag",
    "fetch_wheelhouse",
    "read_at_commit",
    "read_sealed",
    "render_dockerfile",
    "select_base_image",
    "unverified_notes",
]
