"""The one environment comparison: what changed between two environments, and which changes
move numbers.

* :mod:`~reprobox.diff.model`: the frozen result types (:class:`EnvDiff` and its parts).
* :mod:`~reprobox.diff.compute`: the comparison and the field lists it compares; used by
  ``reprobox diff`` and ``reprobox pr`` (capture against capture) and by ``reprobox verify``
  (capture against the rebuilt environment), so both compare the same fields in the same words.
* :mod:`~reprobox.diff.versions`: PEP 440 and dpkg version order.
* :mod:`~reprobox.diff.numerics`: which changes are known to move floating-point results (the
  BLAS/LAPACK provider, CUDA/cuDNN and the GPU, the CPU instruction set, glibc's libm, the
  numerical libraries).
* :mod:`~reprobox.diff.render`: terminal text, GitHub markdown and JSON, every capture value
  escaped.

Changes are grouped the way a reviewer reads them: interpreter, Python packages (added, removed,
upgraded, downgraded, source changed), conda packages, system packages, OS, hardware, replayable
environment variables, git, installed files changed after install.
"""

from __future__ import annotations

from .compute import (
    channel_display,
    conda_label,
    describe_source,
    diff_environments,
    label_for,
)
from .model import Change, EnvDiff, FileChange, NumericsWarning, PackageChange, PackageDiff
from .numerics import NUMERIC_LIBRARIES, blas_providers
from .render import (
    md_code,
    md_escape,
    render_json,
    render_markdown,
    render_text,
    render_warnings_markdown,
    visible,
)
from .versions import compare_system_versions, compare_versions

__all__ = [
    "NUMERIC_LIBRARIES",
    "Change",
    "EnvDiff",
    "FileChange",
    "NumericsWarning",
    "PackageChange",
    "PackageDiff",
    "blas_providers",
    "channel_display",
    "compare_system_versions",
    "compare_versions",
    "conda_label",
    "describe_source",
    "diff_environments",
    "label_for",
    "md_code",
    "md_escape",
    "render_json",
    "render_markdown",
    "render_text",
    "render_warnings_markdown",
    "visible",
]
