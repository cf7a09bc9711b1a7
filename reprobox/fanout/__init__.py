"""Fan reproductions out and gather them: here (``--on local``), on a Slurm cluster as one job
array (``--on slurm``), or on Kubernetes as one Job per experiment (``--on kubernetes``).

reprobox schedules nothing itself: it renders what the scheduler runs (an sbatch script, Job
manifests), submits it, and reads back one :class:`~reprobox.fanout.summary.Outcome` per
experiment. Every value that reaches a script or a manifest passes its grammar first
(experiment ids, image references, paths) and is shell-quoted where a shell reads it.
"""

from __future__ import annotations

from .summary import FAILED, Outcome, Summary

__all__ = ["FAILED", "Outcome", "Summary"]
