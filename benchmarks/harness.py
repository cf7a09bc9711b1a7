"""The one harness every benchmark uses: real command lines, interleaved repetitions, medians.

Fair by construction:

* every contestant is a real executable run as a subprocess (``reprobox``, ``pip``, ``uv``,
  ``pip-compile``, ``docker build``): interpreter start-up, imports and the tool's own cache
  handling count for everyone alike;
* contestants are interleaved (A B C, then B C A, then C A B, ...) so that load on a shared
  machine hits every side alike, and each side runs ``reps`` times (7 unless a contestant says
  fewer, which the table then shows: never silently);
* ``prepare`` runs untimed before each timed run and is where a cold run gets its fresh, empty
  cache folder (passed to the tool through its own flag or environment variable);
* a result is the median with min and max; a ratio is median over median.

Each ``bench_<name>.py`` exposes ``run(quick: bool) -> list[Row]``; ``run_all.py`` collects the
rows, prints one table and writes JSON.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_REPS = 7
QUICK_REPS = 2


@dataclass
class Rep:
    """What one timed run of one contestant gets: its index and a fresh, empty folder."""

    index: int
    tmp: Path


Argv = Union[Sequence[str], Callable[[Rep], Sequence[str]]]
Env = Union[None, Mapping[str, str], Callable[[Rep], Mapping[str, str]]]


@dataclass
class Contestant:
    name: str
    argv: Argv
    env: Env = None
    cwd: Union[None, Path, Callable[[Rep], Path]] = None
    #: untimed, before every timed run (fresh caches, a fresh copy of a repository, ...)
    prepare: Optional[Callable[[Rep], None]] = None
    #: untimed, after every timed run (remove an image, read a result)
    after: Optional[Callable[[Rep, "subprocess.CompletedProcess[str]"], None]] = None
    #: fewer repetitions than the others (slow peers); the table says so
    reps: Optional[int] = None
    ok_codes: Tuple[int, ...] = (0,)


@dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int
    values: List[float] = field(default_factory=list)


def stats(values: Sequence[float]) -> Stats:
    if not values:
        raise ValueError("no measurements")
    return Stats(statistics.median(values), min(values), max(values), len(values), list(values))


def schedule(names: Sequence[str], reps: Mapping[str, int]) -> List[Tuple[int, str]]:
    """The interleaved order: round r runs every contestant that still has repetitions, starting
    at a rotated position (A B C, B C A, C A B, ...) so no side is always first after a pause."""
    order: List[Tuple[int, str]] = []
    rounds = max((reps[n] for n in names), default=0)
    for r in range(rounds):
        k = r % len(names) if names else 0
        rotated = list(names[k:]) + list(names[:k])
        order.extend((r, n) for n in rotated if r < reps[n])
    return order


class BenchError(RuntimeError):
    pass


def _resolve(value, rep: Rep):  # type: ignore[no-untyped-def]
    return value(rep) if callable(value) else value


def run_once(c: Contestant, rep: Rep) -> float:
    if c.prepare is not None:
        c.prepare(rep)
    argv = [str(a) for a in _resolve(c.argv, rep)]
    env = _resolve(c.env, rep)
    env = dict(env) if env is not None else None
    cwd = _resolve(c.cwd, rep)
    t0 = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode not in c.ok_codes:
        raise BenchError(
            f"{c.name}: {' '.join(argv[:6])} exited {done.returncode}:\n"
            f"{done.stdout[-1500:]}\n{done.stderr[-2500:]}"
        )
    if c.after is not None:
        c.after(rep, done)
    return elapsed


def measure(
    contestants: Sequence[Contestant],
    reps: int,
    *,
    label: str = "",
    runner: Callable[[Contestant, Rep], float] = run_once,
) -> Dict[str, Stats]:
    """Run every contestant ``reps`` times (or its own ``reps``), interleaved."""
    by_name = {c.name: c for c in contestants}
    if len(by_name) != len(contestants):
        raise ValueError("contestant names must be unique")
    counts = {c.name: (min(c.reps, reps) if c.reps is not None else reps) for c in contestants}
    times: Dict[str, List[float]] = {c.name: [] for c in contestants}
    with tempfile.TemporaryDirectory(prefix="reprobox-bench-") as tmp:
        for r, name in schedule(list(by_name), counts):
            folder = Path(tmp) / f"{len(times[name])}-{abs(hash(name)) % 10**8}"
            folder.mkdir()
            seconds = runner(by_name[name], Rep(r, folder))
            times[name].append(seconds)
            say(f"  {label} {name}: {seconds:.3f} s (rep {r + 1}/{counts[name]})")
            shutil.rmtree(folder, ignore_errors=True)
    return {n: stats(v) for n, v in times.items()}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- rows and report


@dataclass
class Row:
    """One line of the table: a subject against a peer (or alone, with an absolute target)."""

    benchmark: str
    environment: str
    case: str
    subject: str
    subject_stats: Optional[Stats]
    peer: str = ""
    peer_stats: Optional[Stats] = None
    #: "ratio" (subject median / peer median), "seconds", "overhead" (subject - peer, seconds),
    #: "percent" (overhead in % of the peer) or "bytes" (image size, ratio of sizes)
    unit: str = "ratio"
    target: Optional[float] = None
    note: str = ""
    #: For "percent": the median of the per-repetition overheads, when each repetition ran both
    #: sides back to back or side by side (a drift of the machine's speed then cancels within
    #: the pair). The value reported; the cells still show each side's own median.
    paired: Optional[float] = None

    @property
    def value(self) -> Optional[float]:
        s, p = self.subject_stats, self.peer_stats
        if s is None:
            return None
        if self.unit == "percent" and self.paired is not None:
            return self.paired
        if self.unit == "seconds":
            return s.median
        if p is None:
            return None
        if self.unit == "overhead":
            return s.median - p.median
        if self.unit == "percent":
            return 100.0 * (s.median - p.median) / p.median
        return s.median / p.median

    @property
    def met(self) -> Optional[bool]:
        v = self.value
        if self.target is None or v is None:
            return None
        return v <= self.target

    def to_json(self) -> dict:  # type: ignore[type-arg]
        d = asdict(self)
        d["value"] = self.value
        d["met"] = self.met
        return d


def _fmt_stats(s: Optional[Stats], unit: str) -> str:
    if s is None:
        return "-"
    if unit == "bytes":
        return f"{s.median / 1e6:.0f} MB"
    rng = f" ({s.min:.2f}–{s.max:.2f})" if s.n > 1 else ""
    return f"{s.median:.2f} s{rng} n={s.n}"


def _fmt_value(row: Row) -> str:
    v = row.value
    if v is None:
        return "-"
    if row.unit == "seconds":
        return f"{v:.2f} s"
    if row.unit == "overhead":
        return f"+{v:.2f} s"
    if row.unit == "percent":
        return f"{v:+.2f} %"
    return f"{v:.2f}×"


def _fmt_target(row: Row) -> str:
    if row.target is None:
        return ""
    unit = {"seconds": " s", "overhead": " s", "percent": " %"}.get(row.unit, "×")
    verdict = {True: "met", False: "MISSED", None: ""}[row.met]
    return f"≤ {row.target:g}{unit} {verdict}"


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (the README quotes it as printed)."""
    head = (
        "| benchmark | env | case | reprobox | peer | value | target | note |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        subject = f"{r.subject}: {_fmt_stats(r.subject_stats, r.unit)}"
        peer = f"{r.peer}: {_fmt_stats(r.peer_stats, r.unit)}" if r.peer else ""
        lines.append(
            f"| {r.benchmark} | {r.environment} | {r.case} | {subject} | {peer} | "
            f"{_fmt_value(r)} | {_fmt_target(r)} | {r.note} |"
        )
    return "\n".join(lines)


def machine() -> dict:  # type: ignore[type-arg]
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "node": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "loadavg": [round(x, 2) for x in load],
    }


def write_json(rows: Sequence[Row], path: Path, extra: Optional[dict] = None) -> Path:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "rows": [r.to_json() for r in rows],
        **(extra or {}),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- shared helpers


def tool(name: str) -> Optional[str]:
    """The real executable installed beside this interpreter first (a version manager's shim on
    PATH is a shell script that would add its own start-up to the tool's time)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def need(name: str) -> str:
    exe = tool(name)
    if exe is None:
        raise BenchError(f"{name} is not installed here (pip install -e '.[test]')")
    return exe


def clean_env(**extra: str) -> Dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(extra)
    return env


def cold_reprobox_env(rep: Rep, **extra: str) -> Dict[str, str]:
    """reprobox with every host cache empty: the index/probe caches (XDG_CACHE_HOME) and the
    wheelhouse (REPROBOX_WHEELHOUSE); the repository's .reprobox/local/cache is the caller's."""
    return clean_env(
        XDG_CACHE_HOME=str(rep.tmp / "xdg"),
        REPROBOX_WHEELHOUSE=str(rep.tmp / "wheelhouse"),
        **extra,
    )


def bench_dir() -> Path:
    return Path(os.environ.get("REPROBOX_BENCH_DIR") or Path.home() / ".cache" / "reprobox-bench")


GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


def sh(argv: Sequence[object], **kw) -> "subprocess.CompletedProcess[str]":  # type: ignore[no-untyped-def]
    done = subprocess.run([str(a) for a in argv], text=True, capture_output=True, check=False, **kw)
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(str(a) for a in argv[:6])} failed ({done.returncode}):\n"
            f"{done.stdout[-1500:]}\n{done.stderr[-2500:]}"
        )
    return done
