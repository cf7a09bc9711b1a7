"""What a capture gives back: one type for ``reprobox capture``, ``reprobox.capture`` and
:func:`reprobox.pipeline.capture_experiment` alike (kept apart from the pipeline so that the
library's replay path, inside ``reprobox run``, stays cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ReproboxError
from .model import RunUsage
from .store import StoredExperiment


@dataclass(frozen=True)
class Captured:
    """What a capture gives back (``reprobox.capture`` and ``reprobox capture`` alike): the
    stored experiment and what happened on the way.

    Inside ``reprobox run`` (``replay``) nothing is captured: ``path`` and ``stored`` are None.
    """

    id: str
    name: str
    path: Optional[Path]
    environment_digest: str
    warnings: tuple[str, ...] = ()
    locked: bool = False
    replay: bool = False  # True when called inside `reprobox run` (nothing was captured)
    stored: Optional[StoredExperiment] = None
    created_new: bool = True
    timings: Mapping[str, float] = field(default_factory=dict)
    run: Optional[RunUsage] = None

    @classmethod
    def of(cls, stored: StoredExperiment, *, warnings: tuple[str, ...] = (),
           locked: bool = False, created_new: bool = True,
           timings: Optional[Mapping[str, float]] = None,
           run: Optional[RunUsage] = None) -> "Captured":
        exp = stored.experiment
        return cls(id=exp.id, name=exp.name, path=stored.path,
                   environment_digest=exp.environment_digest, warnings=warnings, locked=locked,
                   stored=stored, created_new=created_new, timings=dict(timings or {}), run=run)

    @property
    def record(self) -> StoredExperiment:
        """The stored experiment (a capture that was not a replay always has one)."""
        if self.stored is None:
            raise ReproboxError(f"experiment {self.id or '?'} was not captured here (a replay "
                                "inside `reprobox run` records nothing)")
        return self.stored

    def to_dict(self) -> dict[str, Any]:
        stored = self.record
        exp = stored.experiment
        return {
            "id": exp.id,
            "name": exp.name,
            "path": str(stored.path),
            "environment_digest": exp.environment_digest,
            "locked": self.locked,
            "new": self.created_new,
            "warnings": list(self.warnings),
            "packages": len(stored.environment.packages),
            "system_packages": len(stored.environment.system_packages),
            "interpreter": stored.environment.interpreter.executable,
            **({"exit_status": self.run.exit_status} if self.run is not None else {}),
            **({"conda_packages": len(stored.environment.conda.packages)}
               if stored.environment.conda is not None else {}),
        }
