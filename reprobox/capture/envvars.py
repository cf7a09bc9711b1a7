"""The environment variables that change a run's numbers, recorded so that a rerun can replay them.

Only an allowlist is ever read: thread counts (reductions are summed in a different order with a
different number of threads), hash seeds, determinism switches of cuBLAS / cuDNN / TensorFlow /
oneDNN / MKL, precision switches (TF32, x64, matmul precision), and the locale and time zone
(number formatting, sorting, date parsing). Everything else, and above all anything whose name
looks like a secret, is never read into a record, even when a pattern below would match it.

Device selection (``CUDA_VISIBLE_DEVICES`` and friends) is *host-specific*: GPU indexes mean
nothing on another machine, and replaying ``CUDA_VISIBLE_DEVICES=3`` on a one-GPU host would hide
the only GPU. :func:`host_specific_env` reports them for display; they are never replayed.

A capture is untrusted input when it arrives in a pull request, so :func:`check_replayable`
re-validates a recorded mapping before a rerun: a name outside the allowlist (``LD_PRELOAD``,
``PYTHONPATH``...) or a value with a newline is refused, not silently passed to a shell.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from ..errors import ValidationError
from ..redact import is_secret_name

log = logging.getLogger("reprobox.capture.envvars")

#: Longest value recorded; XLA_FLAGS lines are the longest legitimate ones seen in practice.
MAX_VALUE_LENGTH = 4096

#: Exact names replayed on a rerun.
REPLAYED_NAMES = frozenset(
    {
        # thread counts of the BLAS / OpenMP / numexpr / numba / TensorFlow pools
        "OMP_NUM_THREADS",
        "OMP_DYNAMIC",
        "OMP_THREAD_LIMIT",
        "MKL_NUM_THREADS",
        "MKL_DYNAMIC",
        "MKL_THREADING_LAYER",
        "OPENBLAS_NUM_THREADS",
        "GOTO_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "BLIS_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "RAYON_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        # hashing and text
        "PYTHONHASHSEED",
        "PYTHONUTF8",
        # CUDA / cuBLAS / cuDNN determinism and precision
        "CUBLAS_WORKSPACE_CONFIG",
        "CUDA_LAUNCH_BLOCKING",
        "NVIDIA_TF32_OVERRIDE",
        "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
        "TORCH_CUDNN_V8_API_DISABLED",
        "TORCH_BLAS_PREFER_CUBLASLT",
        # TensorFlow
        "TF_DETERMINISTIC_OPS",
        "TF_CUDNN_DETERMINISTIC",
        "TF_CUDNN_USE_AUTOTUNE",
        "TF_ENABLE_ONEDNN_OPTS",
        "TF_XLA_FLAGS",
        # Intel MKL / OpenMP runtime / OpenBLAS / oneDNN code paths
        "MKL_CBWR",
        "MKL_ENABLE_INSTRUCTIONS",
        "MKL_DEBUG_CPU_TYPE",
        "KMP_DETERMINISTIC_REDUCTION",
        "OPENBLAS_CORETYPE",
        "ONEDNN_MAX_CPU_ISA",
        "DNNL_MAX_CPU_ISA",
        "ONEDNN_DEFAULT_FPMATH_MODE",
        "NPY_DISABLE_CPU_FEATURES",
        # PyTorch allocator and fallbacks (allocation order changes some nondeterministic kernels)
        "PYTORCH_CUDA_ALLOC_CONF",
        "PYTORCH_HIP_ALLOC_CONF",
        "PYTORCH_NO_CUDA_MEMORY_CACHING",
        "PYTORCH_ENABLE_MPS_FALLBACK",
        # JAX / XLA precision
        "JAX_ENABLE_X64",
        "JAX_DEFAULT_MATMUL_PRECISION",
        "JAX_DEFAULT_PRNG_IMPL",
        "JAX_THREEFRY_PARTITIONABLE",
        "XLA_FLAGS",
        # locale and time
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_NUMERIC",
        "LC_CTYPE",
        "LC_COLLATE",
        "LC_TIME",
        "TZ",
    }
)

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

_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Printable text plus tab: no newline, carriage return, NUL or other control characters, which
# could break the line-oriented places a value ends up in (Dockerfile ENV, env files, shells).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _value_problem(value: str) -> str | None:
    if len(value) > MAX_VALUE_LENGTH:
        return f"longer than {MAX_VALUE_LENGTH} characters"
    if _BAD_VALUE.search(value):
        return "contains a newline, NUL or another control character"
    return None


def is_replayable_name(name: str) -> bool:
    """True for a name on the allowlist that does not look like a secret."""
    return name in REPLAYED_NAMES and not is_secret_name(name)


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
        problem = _value_problem(value)
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
        and _value_problem(environ[name]) is None
    }


def check_replayable(env: Mapping[str, object], field: str = "env") -> dict[str, str]:
    """Validate a recorded mapping before a rerun replays it; refuse anything off the allowlist.

    The record may come from an untrusted pull request: ``LD_PRELOAD`` or ``PYTHONPATH`` smuggled
    into ``experiment.json`` must not reach the rerun, so any unknown name is an error, not a skip.
    """
    out: dict[str, str] = {}
    for name, value in env.items():
        where = f"{field}.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValidationError(field, name, "not an environment variable name")
        if is_secret_name(name):
            raise ValidationError(where, "<hidden>", "its name looks like a secret, never replayed")
        if name not in REPLAYED_NAMES:
            raise ValidationError(
                where,
                value,
                "not one of the variables reprobox replays (thread counts, seeds, "
                "determinism and precision switches, locale)",
            )
        if not isinstance(value, str):
            raise ValidationError(where, value, "not a string")
        problem = _value_problem(value)
        if problem:
            raise ValidationError(where, value, problem)
        out[name] = value
    return dict(sorted(out.items()))
