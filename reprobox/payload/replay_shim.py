# ruff: noqa: UP004, UP031, BLE001 - runs in any Python >= 3.6 and must never fail on an odd value
"""A stand-in ``reprobox`` module for reruns whose environment cannot hold the real one.

A training script that records itself calls ``reprobox.capture(metrics={...})``. On a rerun, the
real ``reprobox.capture`` sees ``REPROBOX_RUN_METRICS`` and only reports the values to that file.
But when the capture's own reprobox came from a folder outside the repository (a development
install), the rebuilt environment cannot contain it, and the script would die on ``import
reprobox`` before reporting anything. ``reprobox run`` then copies *this file* into the checkout
as ``reprobox/__init__.py`` on ``PYTHONPATH``: it does exactly the replay half of
``reprobox.capture`` and nothing else, so the inline metrics are still re-observed, and the run
report says that the stand-in was used.

Standard library only, Python >= 3.6: it runs in whatever interpreter the experiment uses.
"""

import json
import os
import tempfile

__version__ = "0+replay"
REPLAY = True


class Captured(object):
    """What the real ``capture`` returns on a replay: the id of the experiment being rerun."""

    def __init__(self, id, name):
        self.id = id
        self.name = name
        self.path = None
        self.environment_digest = ""
        self.warnings = ()
        self.locked = False
        self.replay = True
        self.stored = None

    def __repr__(self):
        return "Captured(id=%r, name=%r, replay=True)" % (self.id, self.name)


def _flatten(data, prefix=""):
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, "%s.%s" % (prefix, key) if prefix else str(key)))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            out.update(_flatten(value, "%s.%d" % (prefix, i) if prefix else str(i)))
    elif data is None or isinstance(data, (bool, int, float, str)):
        out[prefix or "value"] = data
    else:
        try:  # numpy scalars and the like
            out[prefix or "value"] = data.item()
        except Exception:
            out[prefix or "value"] = str(data)
    return out


def capture(name=None, metrics=None, **_ignored):
    """Report ``metrics`` to the rerun (``REPROBOX_RUN_METRICS``); record nothing."""
    path = os.environ.get("REPROBOX_RUN_METRICS")
    if not path:
        raise RuntimeError(
            "this is reprobox's replay stand-in, usable only inside `reprobox run`; "
            "install reprobox to capture experiments"
        )
    text = json.dumps(_flatten(dict(metrics or {})), sort_keys=True, indent=2) + "\n"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fd, tmp = tempfile.mkstemp(prefix=".metrics.", dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return Captured(os.environ.get("REPROBOX_EXPERIMENT", ""), name or "")
