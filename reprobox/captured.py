"""What a capture gives back: one type for ``reprobox capture``, ``reprobox.capture`` and
:func:`reprobox.pipeline.capture_experiment` alike (kept apart from the pipeline so that the
library's replay path, inside ``reprobox run``, stays cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

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
    #: False when an identical capture was already stored (same content, same id).
    new: bool = True
    timings: Mapping[str, float] = field(default_factory=dict)
    #: What the command did (``record``, or ``capture --exit-status``).
    run: Optional[RunUsage] = None
    #: The image tag, when built right away (``build=True``).
    image: Optional[str] = None

    @classmethod
    def of(
        cls,
        stored: StoredExperiment,
        *,
        warnings: tuple[str, ...] = (),
        locked: bool = False,
        new: bool = True,
        timings: Optional[Mapping[str, float]] = None,
        run: Optional[RunUsage] = None,
    ) -> "Captured":
        exp = stored.experiment
        return cls(
            id=exp.id,
            name=exp.name,
            path=stored.path,
            environment_digest=exp.environment_digest,
            warnings=warnings,
            locked=locked,
            stored=stored,
            new=new,
            timings=dict(timings or {}),
            run=run,
        )

    @property
    def record(self) -> StoredExperiment:
        """The stored experiment (a capture that was not a replay always has one)."""
        if self.stored is None:
            raise ReproboxError(
                f"experiment {self.id or '?'} was not captured here (a replay "
                "inside `reprobox run` records nothing)"
            )
        return self.stored
