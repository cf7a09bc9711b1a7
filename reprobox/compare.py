"""Pure comparison of a rerun's results with the recorded ones: metrics and declared outputs.

Nothing here touches the disk or runs anything: :mod:`reprobox.run` gathers what the rerun
produced and hands it over as plain values, so every rule below is testable on its own.

Rules, chosen so that "reproduced" means what a careful reviewer would mean by it:

* Metrics are exact by default. With a tolerance, a number matches when
  ``|observed - recorded| <= atol + rtol * |recorded|`` (numpy's ``isclose`` with the *recorded*
  value as the reference, so the check does not change with the order of the arguments).
* ``3`` and ``3.0`` are the same number; ``True`` is not ``1`` (a flag is not a count).
* NaN matches NaN (a run that reproduces a NaN reproduced), infinities match only themselves.
* Strings, booleans and nulls match only exactly, whatever the tolerance.
* A recorded metric that the rerun did not produce is a difference; a metric the rerun produced
  but the capture did not record is listed, not counted as a difference.
* Outputs match by sha256 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .errors import UsageError
from .model import INLINE_METRICS, OutputFile

# Status of one metric or output after comparison.
SAME = "same"  # identical value / bytes
CLOSE = "close"  # different value within the tolerance
DIFFERS = "differs"  # different value beyond the tolerance, or different bytes
MISSING = "missing"  # recorded, not produced by the rerun
NEW = "new"  # produced by the rerun, not recorded (informational)

_OK = (SAME, CLOSE, NEW)


@dataclass(frozen=True)
class Tolerance:
    """How far a rerun's number may be from the recorded one and still count as reproduced."""

    rtol: float = 0.0
    atol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UsageError(f"--{name} must be a number, got {value!r}")
            if math.isnan(value) or math.isinf(value) or value < 0:
                raise UsageError(
                    f"--{name} must be a finite number >= 0, got {value!r}",
                    f"pass e.g. `--{name} 1e-6`, or leave it out for an exact comparison",
                )

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0

    def describe(self) -> str:
        if self.exact:
            return "exact"
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


@dataclass(frozen=True)
class MetricCheck:
    """One recorded (or newly produced) metric value and how the rerun's value compares."""

    file: str  # repo-relative metrics file, or model.INLINE_METRICS
    key: str  # flattened key ("val.accuracy")
    recorded: Any
    observed: Any
    status: str
    #: Why the value is missing (file not produced, unreadable...), when status is MISSING.
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status in _OK

    @property
    def where(self) -> str:
        # A key the rerun wrote is a stranger's text: one line, nothing a terminal obeys.
        from .termsafe import field

        if self.file == INLINE_METRICS:
            return f"{field(self.key)} (given to reprobox.capture)"
        return f"{field(self.key)} in {field(self.file)}"

    def describe(self) -> str:
        """The sentence naming this difference in a report."""
        if self.status == MISSING:
            why = f": {self.reason}" if self.reason else ""
            return (f"metric {self.where} was not produced by the rerun "
                    f"(recorded {self.recorded!r}){why}")
        if self.status == DIFFERS:
            delta = _delta(self.recorded, self.observed)
            return (
                f"metric {self.where}: recorded {self.recorded!r}, rerun gave {self.observed!r}"
                + (f" (difference {delta})" if delta else "")
            )
        if self.status == CLOSE:
            return (
                f"metric {self.where}: recorded {self.recorded!r}, rerun gave {self.observed!r}, "
                "within the tolerance"
            )
        if self.status == NEW:
            return f"metric {self.where} = {self.observed!r} was not recorded by the capture"
        return f"metric {self.where} = {self.observed!r}, as recorded"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "file": self.file,
            "key": self.key,
            "recorded": _json_number(self.recorded),
            "observed": _json_number(self.observed),
            "status": self.status,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class OutputCheck:
    """One declared output: its recorded hash against the rerun's.

    ``algorithm`` is ``sha256`` for declared outputs; DVC outputs carry DVC's own hash (``md5``).
    """

    path: str
    recorded_sha256: str
    observed_sha256: Optional[str]
    status: str
    recorded_size: Optional[int] = None
    observed_size: Optional[int] = None
    algorithm: str = "sha256"

    @property
    def ok(self) -> bool:
        return self.status == SAME

    def describe(self) -> str:
        if self.status == MISSING:
            return f"output {self.path} was not produced by the rerun"
        if self.status == DIFFERS:
            sizes = ""
            if self.recorded_size is not None and self.observed_size is not None:
                sizes = f", {self.recorded_size} -> {self.observed_size} bytes"
            return (
                f"output {self.path} differs: {self.algorithm} {self.recorded_sha256[:12]} "
                f"recorded, {(self.observed_sha256 or '')[:12]} now{sizes}"
            )
        return f"output {self.path}: same {self.algorithm} {self.recorded_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "recorded_sha256": self.recorded_sha256,
            "observed_sha256": self.observed_sha256,
            "recorded_size": self.recorded_size,
            "observed_size": self.observed_size,
            "status": self.status,
            "algorithm": self.algorithm,
        }


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON: written as strings so the report stays valid JSON."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return value


def _delta(recorded: Any, observed: Any) -> str:
    if _is_number(recorded) and _is_number(observed):
        try:
            diff = float(observed) - float(recorded)
        except OverflowError:
            return ""
        if math.isnan(diff) or math.isinf(diff):
            return ""
        out = f"{diff:+.6g}"
        if recorded:
            out += f", {diff / abs(float(recorded)):+.3g} relative"
        return out
    return ""


def value_status(recorded: Any, observed: Any, tolerance: Optional[Tolerance] = None) -> str:
    """SAME, CLOSE or DIFFERS for one pair of metric values (see the module's rules)."""
    tolerance = tolerance or Tolerance()
    if _is_number(recorded) and _is_number(observed):
        if isinstance(recorded, int) and isinstance(observed, int):
            # Exact integer arithmetic: float conversion would merge large distinct ints.
            if recorded == observed:
                return SAME
            diff = abs(observed - recorded)
            bound = tolerance.atol + tolerance.rtol * abs(recorded)
            return CLOSE if diff <= bound else DIFFERS
        r, o = float(recorded), float(observed)
        if math.isnan(r) or math.isnan(o):
            return SAME if math.isnan(r) and math.isnan(o) else DIFFERS
        if r == o:
            return SAME
        if math.isinf(r) or math.isinf(o):
            return DIFFERS
        return CLOSE if abs(o - r) <= tolerance.atol + tolerance.rtol * abs(r) else DIFFERS
    if type(recorded) is type(observed) and recorded == observed:
        return SAME
    return DIFFERS


# --------------------------------------------------------------------------- metrics


def compare_metrics(
    recorded: Mapping[str, Mapping[str, Any]],
    observed: Mapping[str, Optional[Mapping[str, Any]]],
    tolerance: Optional[Tolerance] = None,
    *,
    unavailable: Optional[Mapping[str, str]] = None,
) -> tuple[MetricCheck, ...]:
    """Compare every recorded metric with what the rerun produced.

    ``observed`` maps a metrics file to its flattened values, or to ``None`` when the rerun did
    not produce the file; ``unavailable`` gives, per file, the reason it could not be read (shown
    in the report). Files present in ``observed`` but never recorded are ignored: a rerun cannot
    be asked to reproduce what nobody recorded.
    """
    tolerance = tolerance or Tolerance()
    unavailable = unavailable or {}
    checks: list[MetricCheck] = []
    for mfile in sorted(recorded):
        values = observed.get(mfile)
        if values is None:
            reason = unavailable.get(mfile) or (
                "the rerun did not report the values given to reprobox.capture"
                if mfile == INLINE_METRICS
                else f"{mfile} does not exist after the rerun"
            )
            for key in sorted(recorded[mfile]):
                checks.append(
                    MetricCheck(mfile, key, recorded[mfile][key], None, MISSING, reason)
                )
            continue
        for key in sorted(recorded[mfile]):
            want = recorded[mfile][key]
            if key not in values:
                checks.append(
                    MetricCheck(mfile, key, want, None, MISSING, f"{mfile} has no key {key!r}"
                                if mfile != INLINE_METRICS else "the rerun did not report it")
                )
                continue
            got = values[key]
            checks.append(MetricCheck(mfile, key, want, got, value_status(want, got, tolerance)))
        for key in sorted(set(values) - set(recorded[mfile])):
            checks.append(MetricCheck(mfile, key, None, values[key], NEW))
    return tuple(checks)


# --------------------------------------------------------------------------- outputs


def compare_outputs(
    recorded: Sequence[OutputFile],
    observed: Mapping[str, Optional[OutputFile]],
) -> tuple[OutputCheck, ...]:
    """Compare each declared output's sha256 with the rerun's (``None``: not produced)."""
    checks: list[OutputCheck] = []
    for want in sorted(recorded, key=lambda o: o.path):
        got = observed.get(want.path)
        if got is None:
            checks.append(OutputCheck(want.path, want.sha256, None, MISSING, want.size))
            continue
        status = SAME if got.sha256 == want.sha256 else DIFFERS
        checks.append(
            OutputCheck(want.path, want.sha256, got.sha256, status, want.size, got.size)
        )
    return tuple(checks)


def differences(
    metrics: Sequence[MetricCheck], outputs: Sequence[OutputCheck]
) -> tuple[str, ...]:
    """One sentence per difference, metrics first, in a stable order."""
    out = [m.describe() for m in metrics if not m.ok]
    out += [o.describe() for o in outputs if not o.ok]
    return tuple(out)


def compare_exit_status(recorded: Optional[int], observed: int) -> Optional[str]:
    """The difference to name when the rerun's exit status is not the recorded one, else None.

    ``recorded`` is None when the capture did not know the status (plain ``capture`` without
    ``--exit-status``): then only a failing rerun is a difference, and nothing is claimed about
    how the recorded run ended.
    """
    if recorded is None:
        if observed == 0:
            return None
        return (f"the command exited with status {observed} (its output is above); the "
                "recorded run's status is unknown (record with `reprobox record`, or capture "
                "with --exit-status)")
    if observed == recorded:
        return None
    if recorded == 0:
        return (f"the command exited with status {observed} (its output is above); the "
                "recorded run exited with status 0")
    return f"exit status: recorded {recorded}, rerun {observed}"
