"""Every benchmark, one table of ratios, one JSON file: ``python benchmarks/run_all.py [--quick]``.

Runs capture, lock, build, run (and record's benchmark, ``bench_record.py``, when it exists) through
the shared harness (``harness.py``: real command lines, interleaved repetitions, cold and warm
apart, medians with min and max), prints the Markdown table the README quotes and writes
``benchmarks/results/<date>.json`` with every measurement and the machine's load.

``--quick`` is a smoke run (2 repetitions, no pip-compile, data-science environment only): its
numbers are not the ones to quote. ``--only capture,lock`` picks benchmarks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Row, Stats, machine, say, table, write_json  # noqa: E402

ORDER = ["capture", "lock", "record", "build", "run"]


#: what benchmarks outside the harness printed, shown under the table
extra_output: List[str] = []


def plan(
    quick: bool,
    envs: tuple,
    build_reps: int,  # type: ignore[type-arg]
    pip_compile_reps: int,
) -> Dict[str, Callable[[], List[Row]]]:
    def capture() -> List[Row]:
        return importlib.import_module("bench_capture").run(quick, envs)

    def lock() -> List[Row]:
        return importlib.import_module("bench_lock").run(
            quick, envs, 0 if quick else pip_compile_reps
        )

    def record() -> List[Row]:
        if not (HERE / "bench_record.py").is_file():
            say("bench_record.py is not here yet: record's overhead not measured")
            return [
                Row(
                    "record",
                    "10 s command",
                    "",
                    "not measured",
                    None,
                    unit="percent",
                    target=1.0,
                    note="benchmarks/bench_record.py is not in this tree",
                )
            ]
        mod = importlib.import_module("bench_record")
        if hasattr(mod, "run"):  # the harness's interface: run(quick) -> list[Row]
            return list(mod.run(quick))
        # a script of its own: run it, show what it printed (no row of the table)
        done = subprocess.run(
            [sys.executable, str(HERE / "bench_record.py"), *(["--quick"] if quick else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        extra_output.append(
            "bench_record.py (exit %d):\n%s" % (done.returncode, done.stdout[-4000:])
        )
        return []

    def build() -> List[Row]:
        return importlib.import_module("bench_build").run(
            quick, ("datascience",), None if quick else build_reps
        )

    def run() -> List[Row]:
        return importlib.import_module("bench_run").run(quick)

    return {"capture": capture, "lock": lock, "record": record, "build": build, "run": run}


def _stats(d):  # type: ignore[no-untyped-def]
    return None if d is None else Stats(**d)


#: what ``--only NAME`` keeps of a merged file: the benchmark names its rows carry
ROW_BENCHMARKS = {
    "capture": ("capture --no-lock",),
    "lock": ("lock (CLI)",),
    "record": ("record",),
    "build": ("build", "first run"),
    "run": ("run",),
}


def _key(r: Row) -> tuple:  # type: ignore[type-arg]
    return (r.benchmark, r.environment, r.case, r.subject, r.peer)


def merge(paths: List[Path], only: Optional[List[str]] = None) -> int:
    """One table from earlier result files. A row measured again in a later file (the same
    benchmark, environment, case, subject and peer) replaces the earlier one in its place."""
    keep = {b for name in (only or ORDER) for b in ROW_BENCHMARKS.get(name, (name,))}
    rows: List[Row] = []
    where: dict = {}  # type: ignore[type-arg]
    for path in paths:
        doc = json.loads(path.read_text())
        m = doc["machine"]
        print(
            f"{path.name}: {doc['date']}, {m['cpus']} CPUs, Python {m['python']}, load average "
            f"before {doc.get('loadavg_before', ['?'])[0]}, after {m['loadavg'][0]}"
            + (", quick" if doc.get("quick") else "")
            + "".join(f"; {k} FAILED" for k in doc.get("failed", {}))
        )
        for r in doc["rows"]:
            if r["benchmark"] not in keep:
                continue
            fields = {k: v for k, v in r.items() if k not in ("value", "met")}
            fields["subject_stats"] = _stats(fields["subject_stats"])
            fields["peer_stats"] = _stats(fields["peer_stats"])
            row = Row(**fields)
            if _key(row) in where:
                rows[where[_key(row)]] = row
            else:
                where[_key(row)] = len(rows)
                rows.append(row)
    print()
    print(table(rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 reps, fewer peers")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument(
        "--env",
        action="append",
        choices=["datascience", "torch"],
        help="environments for capture and lock (default: both; --quick: datascience)",
    )
    parser.add_argument(
        "--build-reps", type=int, default=7, help="repetitions of the build cases (minutes each)"
    )
    parser.add_argument(
        "--pip-compile-reps", type=int, default=7, help="repetitions of pip-compile (minutes each)"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: results/<date>.json)")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print one table from earlier result files (run nothing; --only keeps those "
        "benchmarks' rows; a row measured again in a later file replaces the earlier one)",
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.only.split(",") if args.only else None)
    envs = tuple(args.env or (("datascience",) if args.quick else ("datascience", "torch")))
    chosen = args.only.split(",") if args.only else ORDER
    steps = plan(args.quick, envs, args.build_reps, args.pip_compile_reps)
    rows: List[Row] = []
    failed: Dict[str, str] = {}
    started = time.time()
    load_before = machine()["loadavg"]
    for name in ORDER:
        if name not in chosen:
            continue
        say(f"== {name}")
        try:
            before = machine()["loadavg"][0]
            got = steps[name]()
            after = machine()["loadavg"][0]
            for row in got:  # the machine is shared: each figure says how loaded it was
                load = f"load {before:.1f}→{after:.1f}"
                row.note = f"{row.note}; {load}" if row.note else load
            rows.extend(got)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            failed[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    out = args.out or HERE / "results" / (
        time.strftime("%Y-%m-%d-%H%M", time.gmtime()) + ("-quick" if args.quick else "") + ".json"
    )
    info = machine()
    write_json(
        rows,
        out,
        {
            "quick": args.quick,
            "failed": failed,
            "seconds": round(time.time() - started),
            "loadavg_before": load_before,
        },
    )
    print(
        f"reprobox benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{info['cpus']} CPUs, Python {info['python']}, load average before "
        f"{load_before[0]:.1f}, after {info['loadavg'][0]:.1f}"
        + (" (quick smoke run: not for quoting)" if args.quick else "")
    )
    print()
    print(table(rows))
    for text in extra_output:
        print("\n" + text)
    for name, why in failed.items():
        print(f"\n{name}: FAILED: {why}")
    print(f"\nwritten: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
