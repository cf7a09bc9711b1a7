"""reprobox: capture the exact environment of an ML run, rebuild it anywhere, prove it reproduces.

The CLI is a thin layer over these functions; a training script can record itself::

    import reprobox
    exp = reprobox.capture(name="baseline", metrics={"accuracy": acc})
    print(exp.id, exp.path, exp.environment_digest)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "capture", "lock", "build", "run", "verify", "diff"]


def __getattr__(name: str) -> Any:
    if name in ("capture", "lock", "build", "run", "verify", "diff"):
        # lazy: ~60 ms; `import reprobox` stays cheap in a training script and for every submodule
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reprobox' has no attribute {name!r}")
