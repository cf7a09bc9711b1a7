"""``reprobox base``: a ``python:X.Y.Z-slim-<codename>`` image made without any registry.

Air-gapped sites and offline CI cannot pull the official Python images, yet every build starts
from one. This builds a stand-in laid out the same way, from what the machine already has:

1. a Debian root file system made by ``debootstrap --variant=minbase`` from the host's own APT
   mirror, with the packages that own the shared libraries the interpreter links to
   (:mod:`.rootfs`);
2. the exact interpreter copied from this machine's own installation (pyenv,
   python-build-standalone or uv-managed builds, which are relocatable) into ``/usr/local``
   (:mod:`.interpreter`); then ``ldconfig``, the ``python3``/``python`` links and pip from the
   interpreter's own ``ensurepip`` (no network) (:mod:`.image`).

When the only interpreter of that version is the distribution's own (Debian's ``python3.X``
package, which is not relocatable: it is spread over /usr and patched), the base installs the same
package in the root file system instead, pinned to this machine's revision while Debian's archive
still has it; that is possible only for this machine's own Debian release. The result is tagged
``python:X.Y.Z-slim-<codename>`` so that ``reprobox build`` finds it, and
``reprobox/python:X.Y.Z-slim-<codename>`` as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .image import base_tags, build_base, render_base_dockerfile
    from .interpreter import HostInterpreter, describe_interpreter, find_interpreter
    from .releases import DEBIAN_RELEASES, check_codename, check_python_release
    from .rootfs import host_release

#: Each name and the module that defines it, imported on first use: the Dockerfile renderer
#: needs the release tables (:mod:`.releases`) and none of the image building, which imports
#: the container engines.
_WHERE = {
    "base_tags": ".image",
    "build_base": ".image",
    "render_base_dockerfile": ".image",
    "HostInterpreter": ".interpreter",
    "describe_interpreter": ".interpreter",
    "find_interpreter": ".interpreter",
    "DEBIAN_RELEASES": ".releases",
    "check_codename": ".releases",
    "check_python_release": ".releases",
    "host_release": ".rootfs",
}


__getattr__ = exports(__name__, _WHERE)


__all__ = [
    "DEBIAN_RELEASES",
    "HostInterpreter",
    "base_tags",
    "build_base",
    "check_codename",
    "check_python_release",
    "describe_interpreter",
    "find_interpreter",
    "host_release",
    "render_base_dockerfile",
]
