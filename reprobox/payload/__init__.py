"""Code that runs inside another interpreter or inside an image, not in reprobox's own.

* :mod:`.probe`: the environment probe, run in the interpreter a capture describes (and by
  ``verify`` in the rebuilt one);
* :mod:`.recorder`: ``sitecustomize`` for ``reprobox record``, in the recorded run;
* :mod:`.prune`: lists the distributions an exact rebuild removes, in the image being built;
* :mod:`.finish_layer`: finishes what one image step installed: its identical files stored once
  (hard links), then its bytecode, test suites left out;
* :mod:`.replay_shim`: the stand-in ``reprobox`` module of a rerun whose environment lacks it;
* :mod:`.rattler_install`: installs fetched conda archives (in a child interpreter, or in the
  conda image, next to the py-rattler it imports).

Everything here imports the standard library only (``rattler_install`` also imports py-rattler,
which is shipped with it): the target may be any Python >= 3.8 with any set of packages, and
reprobox is not installed in it. Host code ships these files through :func:`script` and
:func:`source`, never by a path of its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MODULES = ("finish_layer", "probe", "prune", "rattler_install", "recorder", "replay_shim")


def script(name: str) -> Path:
    """The file of payload module ``name``, for another interpreter to run or a copy to take."""
    if name not in MODULES:
        raise ValueError(f"no payload module {name!r}")
    ref = resources.files(__name__).joinpath(f"{name}.py")
    if not isinstance(ref, Path):  # pragma: no cover - reprobox is installed as files
        raise FileNotFoundError(f"the payload {name}.py is not a file on disk ({ref})")
    return ref


def source(name: str) -> bytes:
    """The text of payload module ``name``, as shipped."""
    return script(name).read_bytes()
