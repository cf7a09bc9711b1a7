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

The overhead reported against the 1 % target is the command's: median CPU time of ``payload``
against ``plain`` (and the same for wall time, noisier), and, measured apart with many cheap
repetitions, the payload's fixed cost per process (a near-empty ``python -c 'import json'``
with and without it) as a share of the job's length. The capture after the command is
reported apart (it is the time of ``reprobox capture``, paid once, whatever the command's length).

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
        plain: list[float] = []
        plain_cpu: list[float] = []
        pay: list[float] = []
        pay_cpu: list[float] = []
        rec_cmd: list[float] = []
        rec_total: list[float] = []
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
                    done = subprocess.run(
                        [
                            reprobox_exe(),
                            "-q",
                            "record",
                            "--no-lock",
                            "--json",
                            "--python",
                            python,
                            "--",
                            python,
                            "job.py",
                            str(seconds),
                            str(n),
                        ],
                        cwd=repo,
                        check=True,
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    rec_total.append(time.perf_counter() - t0)
                    data = json.loads(done.stdout)
                    exp = json.loads((Path(data["path"]) / "experiment.json").read_text())
                    rec_cmd.append(float(exp["run"]["wall_seconds"]))
                    shutil.rmtree(repo / ".reprobox" / "experiments", ignore_errors=True)
            print(
                f"rep {rep + 1}/{reps}: plain {plain[-1]:.3f}s ({plain_cpu[-1]:.3f}s "
                f"CPU), with payload {pay[-1]:.3f}s ({pay_cpu[-1]:.3f}s CPU), record command "
                f"{rec_cmd[-1]:.3f}s, record end to end {rec_total[-1]:.3f}s",
                file=sys.stderr,
            )
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
    }


def paired_percent(subject: list[float], peer: list[float]) -> float:
    """The median over repetitions of ``subject[i]`` against ``peer[i]``, in % of the peer: each
    repetition ran both back to back, so a slower or faster machine moves both alike."""
    return statistics.median(100.0 * (s - p) / p for s, p in zip(subject, peer))


def run(quick: bool = False) -> list:  # type: ignore[type-arg]
    """The harness's interface (``run_all.py``): rows of the table, 7 interleaved repetitions of
    a 10 s command (2 of a 2 s one with ``quick``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import DEFAULT_REPS, QUICK_REPS, Row, stats

    seconds = 2.0 if quick else 10.0
    m = measure_record(sys.executable, seconds, QUICK_REPS if quick else DEFAULT_REPS)
    case = f"{seconds:g} s command"
    plain, plain_cpu = stats(m["plain"]), stats(m["plain_cpu"])  # type: ignore[arg-type]
    pairs = "paired: median of the per-repetition overheads (both sides back to back)"
    return [
        Row(
            "record",
            case,
            "wall",
            "reprobox record (command as timed by record)",
            stats(m["record_command"]),
            "plain python",
            plain,  # type: ignore[arg-type]
            unit="percent",
            target=1.0,
            paired=paired_percent(m["record_command"], m["plain"]),  # type: ignore[arg-type]
            note=pairs,
        ),
        Row(
            "record",
            case,
            "wall",
            "command with the payload",
            stats(m["payload"]),  # type: ignore[arg-type]
            "plain python",
            plain,
            unit="percent",
            target=1.0,
            paired=paired_percent(m["payload"], m["plain"]),  # type: ignore[arg-type]
            note=pairs,
        ),
        Row(
            "record",
            case,
            "CPU",
            "command with the payload",
            stats(m["payload_cpu"]),  # type: ignore[arg-type]
            "plain python",
            plain_cpu,
            unit="percent",
            target=1.0,
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
            note="includes the capture after the command (paid once, whatever its length)",
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
        "load_average": os.getloadavg()[0],
        "target": "command overhead < 1 %",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
