"""The environment variables that change a run's numbers, recorded so that a rerun can replay them.

Only an allowlist is ever read: thread counts (reductions are summed in a different order with a
different number of threads), hash seeds, determinism switches of cuBLAS / cuDNN / TensorFlow /
oneDNN / MKL, precision switches (TF32, x64, matmul precision), and the locale and time zone
(number formatting, sorting, date parsing). Everything else, and above all anything whose name
looks like a secret, is never read into a record, even when a pattern below would match it.

Device selection (``CUDA_VISIBLE_DEVICES`` and friends) is *host-specific*: GPU indexes mean
nothing on another machine, and replaying ``CUDA_VISIBLE_DEVICES=3`` on a one-GPU host would hide
the only GPU. :func:`host_specific_env` reports them for display; they are never replayed.

The allowlist itself is a grammar of the record (:mod:`reprobox.model.envvars`): a rerun checks a
recorded mapping against it again, since a capture from a pull request is untrusted input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..model.envvars import is_replayable_name, value_problem
from ..redact import is_secret_name

log = logging.getLogger("reprobox.capture.envvars")

#: Recorded for display, never replayed: they name devices of the capture host.
HOST_SPECIFIC_NAMES = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "JAX_PLATFORMS",
        "TPU_VISIBLE_CHIPS",
    }
)


def replayable_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted variables of ``environ`` with valid values, sorted by name.

    An allowlisted variable with an unusable value (a newline, or absurdly long) is left out with
    a log message rather than failing a capture that comes after hours of training.
    """
    out: dict[str, str] = {}
    for name in sorted(environ):
        if not is_replayable_name(name):
            continue
        value = environ[name]
        if not isinstance(value, str):
            continue
        problem = value_problem(value)
        if problem:
            log.warning("not recording %s: its value %s", name, problem)
            continue
        out[name] = value
    return out


def host_specific_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Device-selection variables of the capture host, for display only (never replayed)."""
    return {
        name: environ[name]
        for name in sorted(environ)
        if name in HOST_SPECIFIC_NAMES
        and not is_secret_name(name)
        and isinstance(environ[name], str)
        and value_problem(environ[name]) is None
    }
