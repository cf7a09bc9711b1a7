"""One outcome per experiment, the table printed at the end and the JSON summary.

An outcome is ``reproduced``, ``differs`` (a metric, an output or the exit status differs; the
differing metric names are listed) or ``failed`` (no verdict: the image did not build, no engine
on the node, the job was cancelled...; ``reason`` is one line saying which).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..store import write_atomic

REPRODUCED = "reproduced"
DIFFERS = "differs"
FAILED = "failed"

SUMMARY_SCHEMA = "reprobox.fanout/1"
_MAX_REASON = 300


def one_line(text: str, limit: int = _MAX_REASON) -> str:
    """The first meaningful line of an error text, shortened."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("error:"):
            line = ln[len("error:") :].strip()
            if line.endswith(":"):  # the reason is further down: its cause, else the next line
                rest = [x for x in lines[i + 1 :] if not x.startswith("fix:")]
                cause = [x for x in rest if x.startswith("cause:")]
                if cause or rest:
                    pick = (cause or rest)[0]
                    line += " " + (pick[len("cause:") :].strip() if cause else pick)
            break
    else:
        line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class Outcome:
    experiment: str
    name: str
    status: str  # reproduced | differs | failed
    seconds: float = 0.0
    differing: tuple[str, ...] = ()  # metric names (file:key) that differ
    differences: tuple[str, ...] = ()
    reason: str = ""  # one line for `failed`
    where: str = ""  # local / slurm job 12_3 / kubernetes job name
    report: Optional[dict[str, Any]] = None  # the run's own JSON report, when there is one
    notes: tuple[str, ...] = ()  # e.g. why the published image was not used

    @classmethod
    def from_report(
        cls, report: Mapping[str, Any], *, seconds: float, where: str, name: str = ""
    ) -> "Outcome":
        """From the JSON of ``reprobox run --json``."""
        metrics = report.get("metrics", [])
        differing = tuple(
            f"{m.get('file')}:{m.get('key')}"
            for m in (metrics if isinstance(metrics, list) else [])
            if isinstance(m, dict) and m.get("status") not in ("same", "close", "new")
        )
        listed = report.get("differences", [])
        if isinstance(listed, list):
            diffs = tuple(str(d) for d in listed)
        else:  # not the shape `reprobox run --json` writes: never read as "no differences"
            diffs = (f"the report's differences are not a list: {str(listed)[:200]}",)
        status = REPRODUCED if report.get("reproduced") and not diffs else DIFFERS
        return cls(
            experiment=str(report.get("experiment", "")),
            name=str(report.get("name", name)),
            status=status,
            seconds=seconds,
            differing=differing,
            differences=diffs,
            where=where,
            report=dict(report),
        )

    @classmethod
    def failure(
        cls, experiment: str, name: str, reason: str, *, seconds: float = 0.0, where: str = ""
    ) -> "Outcome":
        return cls(
            experiment=experiment,
            name=name,
            status=FAILED,
            seconds=seconds,
            reason=one_line(reason) or "failed with no message",
            where=where,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "differing_metrics": list(self.differing),
            "differences": list(self.differences),
            "where": self.where,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.notes:
            out["notes"] = list(self.notes)
        if self.report is not None:
            out["report"] = self.report
        return out

    def line(self) -> str:
        """``<id>  <name>  <STATUS>  <time>  <what differs | why it failed>``."""
        head = (
            f"{self.experiment:<12}  {self.name[:24]:<24}  {self.status.upper():<10}  "
            f"{self.seconds:7.1f}s"
        )
        if self.status == DIFFERS:
            what = (
                ", ".join(self.differing)
                if self.differing
                else (self.differences[0] if self.differences else "")
            )
            return f"{head}  {what}"
        if self.status == FAILED:
            return f"{head}  {self.reason}"
        return head + (f"  ({'; '.join(self.notes)})" if self.notes else "")


@dataclass
class Summary:
    on: str
    outcomes: list[Outcome] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0
    path: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)  # job id, results folder...

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.status == REPRODUCED for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        return {
            s: sum(1 for o in self.outcomes if o.status == s) for s in (REPRODUCED, DIFFERS, FAILED)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SUMMARY_SCHEMA,
            "on": self.on,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "counts": self.counts(),
            "details": self.details,
            "path": self.path,
            "experiments": [o.to_dict() for o in self.outcomes],
        }

    def save(self, folder: Path) -> Path:
        """Write the JSON summary under ``folder`` (``.reprobox/local/fanout``)."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"{stamp}-{self.on}.json"
        self.path = str(path)
        write_atomic(path, json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n")
        return path


_PULL_NOTE = re.compile(r"not using the published image: (.*); building instead")


def run_notes(stderr: str) -> tuple[str, ...]:
    """What a run said on the way that the summary must show: the published image it could not
    use (registry down, labels that name another capture), so it built the image itself."""
    notes = []
    for line in stderr.splitlines():
        m = _PULL_NOTE.search(line)
        if m:
            notes.append(one_line("published image not used, built instead: " + m.group(1)))
    return tuple(dict.fromkeys(notes))


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
