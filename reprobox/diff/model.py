"""What an environment comparison finds: frozen result types, no computation.

:class:`EnvDiff` is what :func:`reprobox.diff.diff_environments` returns and what the renderers
print; ``reprobox verify`` reads the same :class:`Change` and :class:`PackageDiff` values to word
its differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Change:
    """One field that differs; ``None`` on a side means absent there."""

    key: str
    a: Any = None
    b: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class PackageChange:
    """A package present on one side or both; versions and source descriptions per side."""

    name: str
    a: str | None = None
    b: str | None = None
    a_source: str | None = None
    b_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "a": self.a, "b": self.b}
        if self.a_source is not None or self.b_source is not None:
            out["a_source"] = self.a_source
            out["b_source"] = self.b_source
        return out


#: The kinds of package change, in display order.
PACKAGE_GROUPS = ("added", "removed", "upgraded", "downgraded", "source_changed")


@dataclass(frozen=True)
class PackageDiff:
    """Packages by kind of change. A package whose version *and* source changed is in both lists."""

    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    upgraded: tuple[PackageChange, ...] = ()
    downgraded: tuple[PackageChange, ...] = ()
    source_changed: tuple[PackageChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, g) for g in PACKAGE_GROUPS)

    def counts(self) -> dict[str, int]:
        return {g: len(getattr(self, g)) for g in PACKAGE_GROUPS}

    def names(self) -> set[str]:
        return {c.name for g in PACKAGE_GROUPS for c in getattr(self, g)}

    def to_dict(self) -> dict[str, Any]:
        return {g: [c.to_dict() for c in getattr(self, g)] for g in PACKAGE_GROUPS}


@dataclass(frozen=True)
class NumericsWarning:
    """A change known to move numerical results. ``kind``: blas, cuda, gpu, cpu, libm, library."""

    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class FileChange:
    """An installed file whose state after install differs between the sides.

    ``a`` and ``b`` say how the file stands against its distribution's RECORD on each side:
    ``as installed``, ``missing``, ``modified after install (sha256 ...)``...
    """

    package: str
    path: str
    a: str
    b: str

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "path": self.path, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class EnvDiff:
    """Everything that differs between environment A and environment B."""

    label_a: str
    label_b: str
    digest_a: str
    digest_b: str
    interpreter: tuple[Change, ...] = ()
    packages: PackageDiff = field(default_factory=PackageDiff)
    system_packages: PackageDiff = field(default_factory=PackageDiff)
    os: tuple[Change, ...] = ()
    hardware: tuple[Change, ...] = ()
    cpu_flags_added: tuple[str, ...] = ()
    cpu_flags_removed: tuple[str, ...] = ()
    env: tuple[Change, ...] = ()
    git: tuple[Change, ...] = ()
    numerics_warnings: tuple[NumericsWarning, ...] = ()
    #: What could not be compared (e.g. env vars and git when B is the current environment).
    notes: tuple[str, ...] = ()
    #: conda packages; versions read ``1.26.4 py311h64a7726_0 (conda-forge)``.
    conda_packages: PackageDiff = field(default_factory=PackageDiff)
    #: Installed files changed after install (part of the digest), where the sides differ.
    installed_files: tuple[FileChange, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing differs in any group (hardware, env vars and git included)."""
        return not (
            self.interpreter
            or not self.packages.empty
            or not self.system_packages.empty
            or self.os
            or self.hardware
            or self.cpu_flags_added
            or self.cpu_flags_removed
            or self.env
            or self.git
            or not self.conda_packages.empty
            or self.installed_files
        )

    @property
    def same_digest(self) -> bool:
        """True when what defines the environment (interpreter + packages) is identical."""
        return self.digest_a == self.digest_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"label": self.label_a, "digest": self.digest_a},
            "b": {"label": self.label_b, "digest": self.digest_b},
            "empty": self.empty,
            "same_digest": self.same_digest,
            "interpreter": [c.to_dict() for c in self.interpreter],
            "packages": self.packages.to_dict(),
            "system_packages": self.system_packages.to_dict(),
            "os": [c.to_dict() for c in self.os],
            "hardware": {
                "changes": [c.to_dict() for c in self.hardware],
                "cpu_flags_added": list(self.cpu_flags_added),
                "cpu_flags_removed": list(self.cpu_flags_removed),
            },
            "env": [c.to_dict() for c in self.env],
            "git": [c.to_dict() for c in self.git],
            "numerics_warnings": [w.to_dict() for w in self.numerics_warnings],
            "notes": list(self.notes),
            **(
                {"conda_packages": self.conda_packages.to_dict()}
                if not self.conda_packages.empty
                else {}
            ),
            **(
                {"installed_files": [c.to_dict() for c in self.installed_files]}
                if self.installed_files
                else {}
            ),
        }


__all__ = [
    "PACKAGE_GROUPS",
    "Change",
    "EnvDiff",
    "FileChange",
    "NumericsWarning",
    "PackageChange",
    "PackageDiff",
]
