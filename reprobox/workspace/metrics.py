"""Results of a run: metrics files read into flat ``key -> number`` maps, and declared outputs
hashed, so that a rerun can be compared value by value and byte by byte.

Formats follow DVC 3, which reads metrics from JSON, TOML and YAML (any other suffix is parsed as
YAML). reprobox also reads CSV/TSV, which DVC 3 only treats as plots: the first row is the header;
a single data row gives ``column -> value`` (the common "one line of final scores" file); several
rows give ``<row>.<column>`` keys, row numbers from 0, the same keys ``flatten_metrics`` gives a
JSON list of objects. Numbers stay numbers (ints stay ints), whatever the format.

A directory output is hashed as a sorted manifest of its files (like ``sha256sum``'s output), so
its hash changes exactly when a file is added, removed, renamed or changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from ..errors import ReproboxError, ValidationError
from ..model import OutputFile, flatten_metrics, json_too_deep

try:
    import tomllib  # type: ignore[import-not-found]
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

#: Metrics are a handful of numbers; a bigger file is a mistake (a data file passed as metrics).
MAX_METRICS_BYTES = 10 * 1024 * 1024
#: ... and a handful of values: past this many, it is a data file (and would bloat the record).
MAX_METRIC_KEYS = 10_000
#: Nesting of lists/mappings read from a metrics file (checked before building anything).
MAX_DEPTH = 32
_CHUNK = 1024 * 1024


class ResultFileError(ReproboxError):
    """A metrics file is unreadable or malformed, or a declared output is missing or unsafe."""


# --------------------------------------------------------------------------- metrics


def _fail(
    path: Path, what: str, line: int | None = None, column: int | None = None
) -> ResultFileError:
    where = f"{path}"
    if line is not None:
        where += f", line {line}" + (f", column {column}" if column is not None else "")
    return ResultFileError(
        f"cannot read metrics from {where}: {what}",
        "fix the file (or the --metrics path) and capture again; metrics files are JSON, YAML, "
        "TOML, CSV or TSV",
    )


def _json(path: Path, text: str) -> Any:
    if json_too_deep(text, MAX_DEPTH):
        raise _fail(path, f"JSON nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"invalid JSON ({exc.msg})", exc.lineno, exc.colno) from None
    except (ValueError, RecursionError) as exc:
        raise _fail(path, f"invalid JSON ({type(exc).__name__})") from None


def _yaml_events_ok(path: Path, text: str) -> None:
    """Walk the YAML event stream once (no object is built, memory stays flat) and refuse what
    makes a small file expand or recurse: aliases and anchors, and nesting past MAX_DEPTH.

    A "billion laughs" file is a few hundred bytes of anchors whose aliases expand to gigabytes
    once constructed; metrics never need them.
    """
    import yaml  # lazy: PyYAML costs ~12 ms to import, needed only for YAML metrics

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            mark = getattr(event, "start_mark", None)
            line = mark.line + 1 if mark is not None else None
            if isinstance(event, yaml.AliasEvent):
                raise _fail(
                    path,
                    f"YAML alias *{event.anchor} (aliases and anchors are not read "
                    "in metrics files)",
                    line,
                )
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise _fail(
                    path,
                    f"YAML anchor &{anchor} (aliases and anchors are not read in metrics files)",
                    line,
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _fail(path, f"YAML nested more than {MAX_DEPTH} levels deep", line)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if mark is not None:
            raise _fail(path, f"invalid YAML ({problem})", mark.line + 1, mark.column + 1) from None
        raise _fail(path, f"invalid YAML ({problem})") from None


def _yaml(path: Path, text: str) -> Any:
    import yaml  # lazy: PyYAML costs ~12 ms to import, needed only for YAML metrics

    _yaml_events_ok(path, text)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if mark is not None:
            raise _fail(path, f"invalid YAML ({problem})", mark.line + 1, mark.column + 1) from None
        raise _fail(path, f"invalid YAML ({problem})") from None
    except RecursionError:
        raise _fail(path, "YAML nested too deeply") from None


def _toml(path: Path, text: str) -> Any:
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise _fail(path, "TOML nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+), column (\d+)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        if m:
            raise _fail(path, f"invalid TOML ({msg})", int(m.group(1)), int(m.group(2))) from None
        raise _fail(path, f"invalid TOML ({msg})") from None
    if _depth_over(data, MAX_DEPTH):
        raise _fail(path, f"TOML nested more than {MAX_DEPTH} levels deep")
    return data


def _depth_over(data: Any, limit: int) -> bool:
    """True when ``data`` nests lists/dicts deeper than ``limit`` (iterative: no recursion)."""
    stack = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return True
            values = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in values)
    return False


_INT = re.compile(r"^[+-]?\d+$")


def _number(cell: str) -> Any:
    """A CSV cell as int or float when it is one, else the text as is."""
    text = cell.strip()
    if "_" in text:  # Python's float() reads "1_000"; a CSV reader should not
        return cell
    if _INT.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return cell
    return (
        value
        if math.isfinite(value) or text.lower().lstrip("+-") in ("nan", "inf", "infinity")
        else cell
    )


def _table(path: Path, text: str, delimiter: str) -> dict[str, Any]:
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter)]
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        return {}
    header_line, header = numbered[0]
    header = [h.strip() for h in header]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise _fail(path, "the header row has an empty or repeated column name", header_line)
    data = numbered[1:]
    for line, row in data:
        if len(row) != len(header):
            raise _fail(path, f"{len(row)} cells where the header has {len(header)}", line)
    if len(data) == 1:
        return {h: _number(c) for h, c in zip(header, data[0][1])}
    return {
        f"{i}.{h}": _number(c) for i, (_line, row) in enumerate(data) for h, c in zip(header, row)
    }


def read_metrics(path: Path) -> dict[str, Any]:
    """Read a metrics file into a flat ``{"a.b": value}`` map (see the module doc for formats)."""
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise ResultFileError(
            f"metrics file {path} does not exist",
            "run the experiment first, or fix the --metrics path",
        ) from None
    except OSError as exc:
        raise ResultFileError(f"cannot read metrics file {path}: {exc.strerror}") from None
    if not path.is_file():
        raise ResultFileError(
            f"metrics file {path} is not a regular file", "give a file, not a folder"
        )
    raw = _read_bounded(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(path, "not UTF-8 text", line) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data: Any = _json(path, text)
        elif suffix == ".toml":
            data = _toml(path, text)
        elif suffix in (".csv", ".tsv"):
            data = _table(path, text, "\t" if suffix == ".tsv" else ",")
        else:  # .yaml, .yml and, like DVC, anything else
            data = _yaml(path, text)
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise _fail(path, f"a value that cannot be read as a number ({exc})"[:300]) from None
    if data is None:
        return {}
    flat = flatten_metrics(data)
    if len(flat) > MAX_METRIC_KEYS:
        raise ResultFileError(
            f"metrics file {path} holds {len(flat)} values, over the {MAX_METRIC_KEYS} a metrics "
            "file may have",
            "give a small file of final scores; declare large results with --output instead",
        )
    return flat


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, its size checked on the open file before reading (a file that grows
    meanwhile is cut at the limit and refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ResultFileError(f"cannot read metrics file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ResultFileError(
                f"metrics file {path} is not a regular file", "give a file, not a folder"
            )
        if st.st_size > MAX_METRICS_BYTES:
            raise _too_big(path, st.st_size)
        raw = fh.read(MAX_METRICS_BYTES + 1)
    if len(raw) > MAX_METRICS_BYTES:
        raise _too_big(path, len(raw))
    return raw


def _too_big(path: Path, size: int) -> ResultFileError:
    return ResultFileError(
        f"metrics file {path} is {size / 1048576:.1f} MiB, over the "
        f"{MAX_METRICS_BYTES // 1048576} MiB a metrics file may have",
        "give a small file of final scores; declare large results with --output instead",
    )


# --------------------------------------------------------------------------- outputs


def _safe_target(root: Path, rel: str) -> Path:
    """``root/rel`` after checking it stays inside ``root``, symbolic links included."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ValidationError("output", rel, "an empty output path")
    if os.path.isabs(rel) or rel.startswith("\\") or re.match(r"^[A-Za-z]:", rel):
        raise ValidationError(
            "output", rel, "an absolute path; outputs are relative to the repository"
        )
    if any(part == ".." for part in re.split(r"[/\\]", rel)):
        raise ValidationError("output", rel, "climbs out of the repository with '..'")
    base = Path(root).resolve()
    target = base / rel
    try:
        target.resolve().relative_to(base)
    except ValueError:
        raise ValidationError(
            "output",
            rel,
            "a symbolic link leads outside the repository",
            "declare the real file inside the repository, not a link to elsewhere",
        ) from None
    return target


def _file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def hash_output(root: Path, rel: str) -> OutputFile:
    """sha256 and size of a declared output (a file, or a folder as a sorted manifest)."""
    target = _safe_target(root, rel)
    norm = Path(rel).as_posix().strip("/")
    base = Path(root).resolve()
    if target.is_file():
        sha, size = _file_sha256(target)
        return OutputFile(path=norm, sha256=sha, size=size)
    if not target.is_dir():
        raise ResultFileError(
            f"output {rel} does not exist in {root}",
            "run the experiment first, or fix the --output path",
        )
    lines = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames.sort()
        here = Path(dirpath)
        for name in dirnames:  # not followed: recorded as the link it is, refused if it leaves
            link = here / name
            if link.is_symlink():
                _safe_target(base, link.relative_to(base).as_posix())
                target_text = os.readlink(link)
                lines.append(
                    f"{'symlink':<64}  {link.relative_to(target).as_posix()} -> {target_text}\n"
                )
        for name in sorted(filenames):
            path = here / name
            relname = path.relative_to(target).as_posix()
            _safe_target(base, path.relative_to(base).as_posix())
            if not path.is_file():
                continue  # a dangling link or a socket: not content
            sha, size = _file_sha256(path)
            total += size
            lines.append(f"{sha}  {relname}\n")
    lines.sort(key=lambda ln: ln[66:])
    manifest = "".join(lines).encode("utf-8", "surrogateescape")
    return OutputFile(path=norm, sha256=hashlib.sha256(manifest).hexdigest(), size=total)
