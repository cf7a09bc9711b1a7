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
* Outputs match by their hash (sha256 for declared outputs, DVC's md5 for DVC outputs). When the
  bytes differ, a folder's difference is named file by file (from the two manifests), and a CSV or
  JSON output is compared by its parsed values with the tolerance (a number within it is CLOSE;
  a different shape, text or key is a difference): bounded like a metrics file.
* ``--ignore-output PATH`` leaves an output (or everything under a folder) out of the verdict:
  it is listed as ignored, never as a difference.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from .errors import UsageError
from .model import INLINE_METRICS, OutputFile, json_too_deep
from .termsafe import field

# Status of one metric or output after comparison.
SAME = "same"  # identical value / bytes
CLOSE = "close"  # different value within the tolerance
DIFFERS = "differs"  # different value beyond the tolerance, or different bytes
MISSING = "missing"  # recorded, not produced by the rerun
NEW = "new"  # produced by the rerun, not recorded (informational)
IGNORED = "ignored"  # left out of the verdict by --ignore-output

_OK = (SAME, CLOSE, NEW, IGNORED)


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
        if self.file == INLINE_METRICS:
            return f"{field(self.key)} (given to reprobox.capture)"
        return f"{field(self.key)} in {field(self.file)}"

    def describe(self) -> str:
        """The sentence naming this difference in a report."""
        if self.status == MISSING:
            why = f": {self.reason}" if self.reason else ""
            return (
                f"metric {self.where} was not produced by the rerun "
                f"(recorded {self.recorded!r}){why}"
            )
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
class FileDiff:
    """One file inside an output folder whose content is not what was recorded."""

    path: str  # relative to the folder
    status: str  # DIFFERS | MISSING | NEW | CLOSE | IGNORED
    detail: str = ""

    def describe(self) -> str:
        name = field(self.path)
        if self.status == MISSING:
            return f"{name} missing"
        if self.status == NEW:
            return f"{name} new"
        if self.status == IGNORED:
            return f"{name} ignored"
        return f"{name} {'within the tolerance' if self.status == CLOSE else 'differs'}" + (
            f" ({self.detail})" if self.detail else ""
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"path": self.path, "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        return out


#: How many differing files of one folder a sentence names (the JSON report has them all).
NAMED_FILES = 10


def _hash_key(algorithm: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", algorithm.lower()).strip("_") or "hash"


@dataclass(frozen=True)
class OutputCheck:
    """One declared output: its recorded hash against the rerun's.

    ``algorithm`` is ``sha256`` for declared outputs; DVC outputs carry DVC's own hash (``md5``).
    ``files`` names the files of a folder that differ; ``detail`` says where a CSV/JSON output's
    values differ (or that they are within the tolerance: status CLOSE).
    """

    path: str
    recorded_hash: str
    observed_hash: Optional[str]
    status: str
    recorded_size: Optional[int] = None
    observed_size: Optional[int] = None
    algorithm: str = "sha256"
    files: tuple[FileDiff, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (SAME, CLOSE, IGNORED)

    def describe(self) -> str:
        if self.status == MISSING:
            return f"output {self.path} was not produced by the rerun"
        if self.status == IGNORED:
            return f"output {self.path}: ignored (--ignore-output)"
        if self.status == CLOSE:
            return f"output {self.path}: different bytes, values within the tolerance" + (
                f" ({self.detail})" if self.detail else ""
            )
        if self.status == DIFFERS:
            sizes = ""
            if self.recorded_size is not None and self.observed_size is not None:
                sizes = f", {self.recorded_size} -> {self.observed_size} bytes"
            text = (
                f"output {self.path} differs: {self.algorithm} {self.recorded_hash[:12]} "
                f"recorded, {(self.observed_hash or '')[:12]} now{sizes}"
            )
            bad = [f for f in self.files if f.status not in (SAME, CLOSE, IGNORED)]
            if bad:
                named = "; ".join(f.describe() for f in bad[:NAMED_FILES])
                more = f"; and {len(bad) - NAMED_FILES} more" if len(bad) > NAMED_FILES else ""
                text += f"; {len(bad)} file(s) inside: {named}{more}"
            if self.detail:
                text += f"; {self.detail}"
            return text
        return f"output {self.path}: same {self.algorithm} {self.recorded_hash[:12]}"

    def to_dict(self) -> dict[str, Any]:
        key = _hash_key(self.algorithm)
        out: dict[str, Any] = {
            "path": self.path,
            "algorithm": self.algorithm,
            f"recorded_{key}": self.recorded_hash,
            f"observed_{key}": self.observed_hash,
            "recorded_size": self.recorded_size,
            "observed_size": self.observed_size,
            "status": self.status,
        }
        if self.files:
            out["files"] = [f.to_dict() for f in self.files]
        if self.detail:
            out["detail"] = self.detail
        return out


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
                checks.append(MetricCheck(mfile, key, recorded[mfile][key], None, MISSING, reason))
            continue
        for key in sorted(recorded[mfile]):
            want = recorded[mfile][key]
            if key not in values:
                checks.append(
                    MetricCheck(
                        mfile,
                        key,
                        want,
                        None,
                        MISSING,
                        f"{mfile} has no key {key!r}"
                        if mfile != INLINE_METRICS
                        else "the rerun did not report it",
                    )
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
        checks.append(OutputCheck(want.path, want.sha256, got.sha256, status, want.size, got.size))
    return tuple(checks)


def differences(metrics: Sequence[MetricCheck], outputs: Sequence[OutputCheck]) -> tuple[str, ...]:
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
        return (
            f"the command exited with status {observed} (its output is above); the "
            "recorded run's status is unknown (record with `reprobox record`, or capture "
            "with --exit-status)"
        )
    if observed == recorded:
        return None
    if recorded == 0:
        return (
            f"the command exited with status {observed} (its output is above); the "
            "recorded run exited with status 0"
        )
    return f"exit status: recorded {recorded}, rerun {observed}"


# --------------------------------------------------------------------------- ignoring outputs


def is_ignored(path: str, ignore: Sequence[str]) -> bool:
    """``path`` is one of ``ignore`` or lies under one of them (a folder)."""
    path = path.strip("/")
    return any(path == i or path.startswith(i.rstrip("/") + "/") for i in ignore if i.strip("/"))


def apply_ignores(checks: Sequence[OutputCheck], ignore: Sequence[str]) -> tuple[OutputCheck, ...]:
    """Outputs (and files of output folders) under ``--ignore-output`` paths marked IGNORED."""
    if not ignore:
        return tuple(checks)
    out = []
    for check in checks:
        if is_ignored(check.path, ignore):
            out.append(replace(check, status=IGNORED))
            continue
        if check.files:
            files = tuple(
                replace(f, status=IGNORED) if is_ignored(f"{check.path}/{f.path}", ignore) else f
                for f in check.files
            )
            check = settle(replace(check, files=files))
        out.append(check)
    return tuple(out)


def settle(check: OutputCheck) -> OutputCheck:
    """A differing folder whose every differing file is within the tolerance (or ignored) is
    CLOSE (IGNORED when all were ignored)."""
    if (
        check.status == DIFFERS
        and check.files
        and not check.detail
        and all(f.status in (SAME, CLOSE, IGNORED) for f in check.files)
    ):
        return replace(
            check, status=CLOSE if any(f.status == CLOSE for f in check.files) else IGNORED
        )
    return check


# --------------------------------------------------------------------------- folders


def compare_manifests(
    recorded: Mapping[str, str], observed: Mapping[str, str]
) -> tuple[FileDiff, ...]:
    """The files of a folder whose hash differs, that are missing, or that are new."""
    out = []
    for name in sorted(set(recorded) | set(observed)):
        if name not in observed:
            out.append(FileDiff(name, MISSING))
        elif name not in recorded:
            out.append(FileDiff(name, NEW))
        elif recorded[name] != observed[name]:
            out.append(FileDiff(name, DIFFERS))
    return tuple(out)


# --------------------------------------------------------------------------- CSV and JSON values

#: A data file bigger than this is compared by its bytes only (the metrics files' limit).
MAX_DATA_BYTES = 10 * 1024 * 1024
#: Past this many values the parsed comparison stops (bytes differ: a difference).
MAX_DATA_VALUES = 1_000_000
MAX_DATA_DEPTH = 32

TABULAR_SUFFIXES = (".csv", ".tsv", ".json")


class _Unparsable(Exception):
    pass


def _parse_data(name: str, raw: bytes) -> Any:
    if len(raw) > MAX_DATA_BYTES:
        raise _Unparsable(f"over {MAX_DATA_BYTES // 1048576} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Unparsable("not UTF-8 text") from None
    if name.lower().endswith(".json"):
        if json_too_deep(text, MAX_DATA_DEPTH):
            raise _Unparsable(f"nested more than {MAX_DATA_DEPTH} levels")
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise _Unparsable("not valid JSON") from None
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    try:
        return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    except csv.Error:
        raise _Unparsable("not valid CSV") from None


def _cell(text: str) -> Any:
    """A CSV cell: a number when it reads as one (``nan``/``inf`` included), else its text."""
    stripped = text.strip()
    if re.fullmatch(r"[+-]?\d+", stripped):
        return int(stripped)
    try:
        return float(stripped)
    except ValueError:
        return text


class _Walk:
    def __init__(self, tolerance: Tolerance) -> None:
        self.tolerance = tolerance
        self.values = 0
        self.close = 0
        self.first_close = ""

    def differ(self, where: str, recorded: Any, observed: Any) -> Optional[str]:
        """Where the first difference beyond the tolerance is, or None."""
        self.values += 1
        if self.values > MAX_DATA_VALUES:
            return f"over {MAX_DATA_VALUES} values: compared by bytes only"
        if isinstance(recorded, dict) and isinstance(observed, dict):
            if set(recorded) != set(observed):
                keys = sorted(set(recorded) ^ set(observed), key=str)
                return f"{where or 'top level'}: keys differ ({', '.join(map(str, keys[:3]))})"
            for key in recorded:
                found = self.differ(
                    f"{where}.{key}" if where else str(key), recorded[key], observed[key]
                )
                if found:
                    return found
            return None
        if isinstance(recorded, list) and isinstance(observed, list):
            if len(recorded) != len(observed):
                return (
                    f"{where or 'top level'}: {len(recorded)} items recorded, {len(observed)} now"
                )
            for i, (r, o) in enumerate(zip(recorded, observed)):
                found = self.differ(f"{where}[{i}]", r, o)
                if found:
                    return found
            return None
        status = value_status(recorded, observed, self.tolerance)
        if status == CLOSE:
            self.close += 1
            if not self.first_close:
                self.first_close = f"{where}: {recorded!r} -> {observed!r}"
            return None
        if status == SAME:
            return None
        return f"{where}: recorded {recorded!r}, now {observed!r}"


def compare_data(
    name: str, recorded: bytes, observed: bytes, tolerance: Optional[Tolerance] = None
) -> tuple[str, str]:
    """(status, detail) of two versions of a CSV/TSV/JSON file, compared by parsed values.

    SAME when the values are equal (bytes may differ in formatting), CLOSE when every number is
    within the tolerance, DIFFERS otherwise; ``detail`` names the first difference (a CSV cell as
    ``row R, column C``). A file that cannot be parsed within the bounds is DIFFERS with the reason.
    """
    tolerance = tolerance or Tolerance()
    try:
        before, after = _parse_data(name, recorded), _parse_data(name, observed)
    except _Unparsable as exc:
        return DIFFERS, f"compared by bytes: {exc}"
    walk = _Walk(tolerance)
    if isinstance(before, list) and name.lower().endswith((".csv", ".tsv")):
        header = before[0] if before else []
        if len(before) != len(after):
            return DIFFERS, f"{len(before)} rows recorded, {len(after)} now"
        for r, (row_b, row_a) in enumerate(zip(before, after)):
            if len(row_b) != len(row_a):
                return DIFFERS, f"row {r + 1}: {len(row_b)} columns recorded, {len(row_a)} now"
            for c, (cb, ca) in enumerate(zip(row_b, row_a)):
                col = header[c] if r > 0 and c < len(header) else str(c + 1)
                found = walk.differ(f"row {r + 1}, column {col}", _cell(cb), _cell(ca))
                if found:
                    return DIFFERS, found
    else:
        found = walk.differ("", before, after)
        if found:
            return DIFFERS, found
    if walk.close:
        return CLOSE, (
            f"{walk.close} number(s) within {tolerance.describe()}, e.g. {walk.first_close}"
        )
    return SAME, "same values, different formatting"
