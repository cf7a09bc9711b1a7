"""A package's public names, each imported from its module on first use.

``reprobox lock`` must reach its index lookups and the Dockerfile renderer without loading
what the rest of a package serves (the build's orchestration and engines, the base image
builder): a package lists where each of its names lives and gets them with::

    __getattr__ = exports(__name__, {"build_experiment": ".builder", ...})
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Mapping


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where[name]`` (a module relative to the
    package) is imported when ``name`` is first asked for, and the name then kept in the
    package. Any other name is an AttributeError, so that ``from package import submodule``
    still imports the submodule."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
