"""The environment variables a record may replay: an allowlist of names, printable values.

A capture is untrusted input when it arrives in a pull request, so :func:`check_replayable`
re-validates a recorded mapping before a rerun: a name outside the allowlist (``LD_PRELOAD``,
``PYTHONPATH``...) or a value with a newline is refused, not silently passed to a shell. The
capture side (:mod:`reprobox.capture.envvars`) records only names this allowlist accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ValidationError
from ..redact import is_secret_name

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

_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Printable text plus tab: no newline, carriage return, NUL or other control characters, which
# could break the line-oriented places a value ends up in (Dockerfile ENV, env files, shells).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def value_problem(value: str) -> str | None:
    if len(value) > MAX_VALUE_LENGTH:
        return f"longer than {MAX_VALUE_LENGTH} characters"
    if _BAD_VALUE.search(value):
        return "contains a newline, NUL or another control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # bytes the environment had, not UTF-8
        return "is not UTF-8 text"
    return None


def is_replayable_name(name: str) -> bool:
    """True for a name on the allowlist that does not look like a secret."""
    return name in REPLAYED_NAMES and not is_secret_name(name)


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
        problem = value_problem(value)
        if problem:
            raise ValidationError(where, value, problem)
        out[name] = value
    return dict(sorted(out.items()))
