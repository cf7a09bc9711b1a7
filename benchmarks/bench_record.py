"""Benchmark: what ``reprobox record`` adds to the command it runs.

The target (issue: reproduce real projects) is under 1 % on a 10 s command. A CPU-bound job
(pure-Python arithmetic plus a few stdlib imports and a ctypes load, ~10 s) runs, interleaved so
that machine noise hits both alike:

* ``plain``: ``python job.py``, timed here from spawn to exit;
* ``payload``: the same command in exactly the environment ``record`` gives it (the payload
  as ``sitecustomize``, the report folder), timed here: wall time, and CPU time (user + system,
  from ``os.wait4``), which a loaded machine disturbs far less than wall time;
* ``record``: ``reprobox record --no-lock -- python job.py`` in a throwaway git repository:
  the command's own wall time as the record measures it (spawn to exit, with the audit-hook
  payload loaded), and the end-to-end time of the whole ``reprobox record`` (which also
  captures the environment afterwards: the probe, git, OS packages).

Back to back, two runs of the identical job differ by up to ±10 % on a shared machine (its
slow and fast spells last seconds), so 7 pairs of them cannot resolve 1 %. The sides are
therefore also run side by side: both started together, each pinned to a core of its own, the
cores swapped every repetition, so a spell of the machine hits both at once (two copies of the
same job measured that way mostly differ by under 0.2 %, against ~4 % back to back). Side by side:

* ``payload`` and ``plain`` together;
* ``record`` and ``plain`` together: the command's wall time as ``record`` measures it (the
  record's capture, which starts once its command is over, runs pinned to its core too).

The overhead reported against the 1 % target is the command's, from the side-by-side pairs of
``payload`` and ``plain`` (the command exactly as ``record`` runs it): the median over
repetitions of each pair's difference. The ``record`` pair is shown too, with no target: its
two sides are not aligned (record's command starts after record's own start, and record's
capture then runs on its core while the peer may still run). The back-to-back medians (wall and
CPU) stay in the JSON and the table for comparison, with the payload's fixed cost per process
(a near-empty ``python -c 'import json'`` with and without it, measured apart with many cheap
repetitions). The capture after the command is reported apart, from the back-to-back record
runs, which use every core as a user's would (it is the time of ``reprobox capture``, paid
once, whatever the command's length). A machine with one core gets no side-by-side rows.

Usage::

    python benchmarks/bench_record.py [--seconds 10] [--reps 7] [--python PATH]

or through ``run_all.py`` (``run(quick)``: rows of the shared table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

JOB = """\
import ctypes, ctypes.util, json, math, sys, time
libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
target = float(sys.argv[1])
# Calibrated once: the same amount of work in every repetition, whatever the machine's load.
n = int(sys.argv[2])
acc = 0.0
for i in range(n):
    acc += math.sqrt(i) * 1e-9
json.dump({"acc": round(acc, 3)}, open("out.json", "w"))
"""


def reprobox_exe() -> str:
    here = Path(sys.executable).parent / "reprobox"
    return str(here) if here.exists() else (shutil.which("reprobox") or "reprobox")


def calibrate(python: str, seconds: float, where: Path) -> int:
    """Loop iterations that take about ``seconds`` of CPU time on this machine (CPU, not wall:
    on a loaded machine wall time says little about the work)."""
    probe_n = 2_000_000
    _wall, cpu = timed([python, "job.py", str(seconds), str(probe_n)], where, dict(os.environ))
    return max(probe_n, int(seconds / (cpu / probe_n)))


def fixed_cost(
    python: str, where: Path, plain_env: dict[str, str], payload_env: dict[str, str], reps: int = 21
) -> tuple[float, float]:
    """Median CPU seconds of a near-empty Python process (``import json``) without and with
    the payload, interleaved: what the payload costs once per process (start-up: the audit
    hook; exit: reading the memory maps, writing the report)."""
    argv = [python, "-c", "import json"]
    plain: list[float] = []
    pay: list[float] = []
    for rep in range(reps):
        pair = [(plain, plain_env), (pay, payload_env)]
        for out, env in pair if rep % 2 == 0 else pair[::-1]:
            out.append(timed(argv, where, env)[1])
    return statistics.median(plain), statistics.median(pay)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall, user + system CPU seconds) of one process, measured with os.wait4."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return wall, usage.ru_utime + usage.ru_stime


def two_cores() -> Optional[tuple[int, int]]:
    """Two CPUs this process may run on, or None when it has only one."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def _pinned(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def side_by_side(
    sides: list[tuple[list[str], dict[str, str]]], cwd: Path, cpus: tuple[int, int]
) -> list[float]:
    """Wall seconds of two processes started together, the first pinned to ``cpus[0]`` and
    the second to ``cpus[1]`` (their children inherit the core): whatever slows the machine
    while they run slows both."""
    started = []
    for (argv, env), cpu in zip(sides, cpus):
        out = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, preexec_fn=_pinned(cpu))
        started.append((child, t0, out))
    walls = []
    for child, t0, out in started:
        _pid, status, _usage = os.wait4(child.pid, 0)
        walls.append(time.perf_counter() - t0)
        out.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{child.args} failed")
    return walls


def measure_record(python: str, seconds: float, reps: int) -> dict[str, object]:
    """Every measurement of the module doc, interleaved; lists of seconds plus their medians."""
    with tempfile.TemporaryDirectory(prefix="reprobox-bench-record-") as tmp:
        repo = Path(tmp) / "project"
        repo.mkdir()
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@example.org",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@example.org",
        }
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        (repo / "job.py").write_text(JOB)
        (repo / ".gitignore").write_text("out.json\n")
        for argv in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "commit", "-q", "-m", "job"],
        ):
            subprocess.run(argv, cwd=repo, check=True, env=env)
        n = calibrate(python, seconds, repo)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from reprobox.capture import record

        payload_dir = Path(tmp) / "payload"
        out_dir = Path(tmp) / "out"
        payload_dir.mkdir()
        out_dir.mkdir()
        shutil.copyfile(record.PAYLOAD, payload_dir / "sitecustomize.py")
        payload_env = record.command_environment(env, None, payload_dir, out_dir)
        job = [python, "job.py", str(seconds), str(n)]
        record_argv = [
            reprobox_exe(),
            "-q",
            "record",
            "--no-lock",
            "--json",
            "--python",
            python,
            "--",
            *job,
        ]
        experiments = repo / ".reprobox" / "experiments"

        def recorded_wall() -> float:
            """The command's wall seconds as the one recorded experiment says; then removed."""
            (exp,) = [p for p in experiments.iterdir() if (p / "experiment.json").is_file()]
            data = json.loads((exp / "experiment.json").read_text())
            shutil.rmtree(experiments, ignore_errors=True)
            return float(data["run"]["wall_seconds"])

        cpus = two_cores()
        plain: list[float] = []
        plain_cpu: list[float] = []
        pay: list[float] = []
        pay_cpu: list[float] = []
        rec_cmd: list[float] = []
        rec_total: list[float] = []
        # side by side: (plain, payload) and (plain, record command), wall seconds
        sbs_pay: list[tuple[float, float]] = []
        sbs_rec: list[tuple[float, float]] = []
        for rep in range(reps):
            order = ["plain", "payload", "record"]
            order = order[rep % 3 :] + order[: rep % 3]
            for kind in order:
                if kind == "plain":
                    wall, cpu = timed(job, repo, env)
                    plain.append(wall)
                    plain_cpu.append(cpu)
                elif kind == "payload":
                    wall, cpu = timed(job, repo, payload_env)
                    pay.append(wall)
                    pay_cpu.append(cpu)
                else:
                    t0 = time.perf_counter()
                    subprocess.run(record_argv, cwd=repo, check=True, env=env, capture_output=True)
                    rec_total.append(time.perf_counter() - t0)
                    rec_cmd.append(recorded_wall())
            line = (
                f"rep {rep + 1}/{reps}: back to back: plain {plain[-1]:.3f}s "
                f"({plain_cpu[-1]:.3f}s CPU), with payload {pay[-1]:.3f}s ({pay_cpu[-1]:.3f}s "
                f"CPU), record command {rec_cmd[-1]:.3f}s, record end to end {rec_total[-1]:.3f}s"
            )
            if cpus is not None:
                # the cores swap every repetition: neither side keeps a faster one
                pair = cpus if rep % 2 == 0 else (cpus[1], cpus[0])
                p_wall, y_wall = side_by_side([(job, env), (job, payload_env)], repo, pair)
                sbs_pay.append((y_wall, p_wall))
                p_wall, _total = side_by_side([(job, env), (record_argv, env)], repo, pair)
                sbs_rec.append((recorded_wall(), p_wall))
                line += (
                    f"; side by side: payload {sbs_pay[-1][0]:.3f}s / plain {sbs_pay[-1][1]:.3f}s,"
                    f" record command {sbs_rec[-1][0]:.3f}s / plain {sbs_rec[-1][1]:.3f}s"
                )
            print(line, file=sys.stderr)
        fixed_plain, fixed_payload = fixed_cost(python, repo, env, payload_env)
    return {
        "seconds": seconds,
        "reps": reps,
        "plain": plain,
        "plain_cpu": plain_cpu,
        "payload": pay,
        "payload_cpu": pay_cpu,
        "record_command": rec_cmd,
        "record_total": rec_total,
        "fixed_plain": fixed_plain,
        "fixed_payload": fixed_payload,
        "side_by_side_payload": [list(p) for p in sbs_pay],
        "side_by_side_record": [list(p) for p in sbs_rec],
        "cores": list(cpus) if cpus is not None else None,
    }


def paired_percent(subject: list[float], peer: list[float]) -> float:
    """The median over repetitions of ``subject[i]`` against ``peer[i]``, in % of the peer: each
    repetition ran both back to back, so a slower or faster machine moves both alike."""
    return statistics.median(100.0 * (s - p) / p for s, p in zip(subject, peer))


def _split(pairs: list[list[float]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run(quick: bool = False) -> list:  # type: ignore[type-arg]
    """The harness's interface (``run_all.py``): rows of the table, 7 interleaved repetitions of
    a 10 s command (2 of a 2 s one with ``quick``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import DEFAULT_REPS, QUICK_REPS

    seconds = 2.0 if quick else 10.0
    return rows(measure_record(sys.executable, seconds, QUICK_REPS if quick else DEFAULT_REPS))


def rows(m: dict[str, object]) -> list:  # type: ignore[type-arg]
    """The table's rows from :func:`measure_record`'s measurements."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import Row, stats

    case = f"{m['seconds']:g} s command"
    plain, plain_cpu = stats(m["plain"]), stats(m["plain_cpu"])  # type: ignore[arg-type]
    pairs = "back to back: median of the per-repetition overheads; ±10 % between two runs here"
    found = []
    for key, subject, target, note in (
        (
            "side_by_side_payload",
            "command with the payload",
            1.0,
            "the command exactly as record runs it (record's own environment and payload); "
            "paired: both started together, one core each, cores swapped every repetition; "
            "median of the per-pair overheads",
        ),
        (
            "side_by_side_record",
            "reprobox record (command as timed by record)",
            None,
            "side by side as above, but not aligned: record's command starts after record's "
            "own start (~0.25 s) and its capture follows on the same core while the peer may "
            "still run; median of the per-pair overheads",
        ),
    ):
        got = m[key]
        if not got:
            continue
        mine = [float(x[0]) for x in got]  # type: ignore[union-attr]
        peer = [float(x[1]) for x in got]  # type: ignore[union-attr]
        found.append(
            Row(
                "record",
                case,
                "wall, side by side",
                subject,
                stats(mine),
                "plain python",
                stats(peer),
                unit="percent",
                target=target,
                paired=paired_percent(mine, peer),
                note=note,
            )
        )
    return found + [
        Row(
            "record",
            case,
            "wall, back to back",
            "command with the payload",
            stats(m["payload"]),  # type: ignore[arg-type]
            "plain python",
            plain,
            unit="percent",
            paired=paired_percent(m["payload"], m["plain"]),  # type: ignore[arg-type]
            note=pairs,
        ),
        Row(
            "record",
            case,
            "CPU, back to back",
            "command with the payload",
            stats(m["payload_cpu"]),  # type: ignore[arg-type]
            "plain python",
            plain_cpu,
            unit="percent",
            paired=paired_percent(m["payload_cpu"], m["plain_cpu"]),  # type: ignore[arg-type]
            note=f"{pairs}; fixed cost per process "
            f"{1000 * (m['fixed_payload'] - m['fixed_plain']):.1f} ms CPU",  # type: ignore[operator]
        ),
        Row(
            "record",
            case,
            "end to end",
            "reprobox record (command + capture)",
            stats(m["record_total"]),
            "plain python",
            plain,  # type: ignore[arg-type]
            unit="overhead",
            note="back to back, every core free; includes the capture after the command "
            "(paid once, whatever its length)",
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    m = measure_record(args.python, args.seconds, args.reps)
    med = statistics.median
    mp, mpc = med(m["plain"]), med(m["plain_cpu"])  # type: ignore[arg-type]
    mpay, mpayc = med(m["payload"]), med(m["payload_cpu"])  # type: ignore[arg-type]
    mc, mt = med(m["record_command"]), med(m["record_total"])  # type: ignore[arg-type]
    fixed_plain, fixed_payload = m["fixed_plain"], m["fixed_payload"]
    result = {
        "job_seconds_target": args.seconds,
        "reps": args.reps,
        "plain_median_s": round(mp, 3),
        "plain_cpu_median_s": round(mpc, 3),
        "payload_median_s": round(mpay, 3),
        "payload_cpu_median_s": round(mpayc, 3),
        "command_cpu_overhead_percent": round((mpayc / mpc - 1) * 100, 2),
        "command_wall_overhead_percent": round((mpay / mp - 1) * 100, 2),
        "record_command_median_s": round(mc, 3),
        "record_command_overhead_percent": round((mc / mp - 1) * 100, 2),
        "record_end_to_end_median_s": round(mt, 3),
        "capture_after_command_median_s": round(mt - mc, 3),
        "fixed_cpu_plain_s": round(fixed_plain, 4),  # type: ignore[call-overload]
        "fixed_cpu_with_payload_s": round(fixed_payload, 4),  # type: ignore[call-overload]
        "fixed_cpu_cost_percent_of_job": round(
            (fixed_payload - fixed_plain) / args.seconds * 100, 3
        ),  # type: ignore[operator]
        "side_by_side_record_overhead_percent": (
            round(paired_percent(*_split(m["side_by_side_record"])), 2)  # type: ignore[arg-type]
            if m["side_by_side_record"]
            else None
        ),
        "side_by_side_payload_overhead_percent": (
            round(paired_percent(*_split(m["side_by_side_payload"])), 2)  # type: ignore[arg-type]
            if m["side_by_side_payload"]
            else None
        ),
        "load_average": os.getloadavg()[0],
        "target": "command overhead < 1 %",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
