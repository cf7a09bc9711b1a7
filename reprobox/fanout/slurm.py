"""``--on slurm``: ONE job array, one task per experiment, results gathered by polling.

The script (``templates/sbatch.sh.j2``) runs on the node: it finds the node's engine (docker,
podman, else apptainer), clones the repository afresh, and runs ``reprobox run <id> --json``
there (the image pulled by digest when the experiment has a publication record, else built on
the node). Each task writes ``<task>.json`` (the run's report) or ``<task>.failed`` (one line)
into the results folder, which must be on a filesystem the nodes share with this machine, like
the repository path and this Python.

Without slurmdbd there is no ``sacct``: states come from ``squeue`` while tasks are pending or
running, then from ``scontrol show job -o <job>_<task>`` (kept ``MinJobAge`` seconds).
``--jobs N`` becomes the array throttle ``%N``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from .. import __version__
from ..errors import ReproboxError, ToolMissing, UsageError
from ..model import grammar as validate
from .summary import Outcome, run_notes
from ..progress import Progress

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*", re.ASCII)  # #SBATCH lines are not shell-quoted
_PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_TIME = re.compile(
    r"[0-9]{1,6}(?::[0-9]{2}){0,2}|[0-9]{1,3}-[0-9]{1,2}(?::[0-9]{2}){0,2}", re.ASCII
)


@dataclass(frozen=True)
class Task:
    exp_id: str
    name: str
    image: str = ""  # REF@DIGEST when published


def safe_dir(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH.fullmatch(text):
        raise UsageError(
            f"{what} {text!r} holds characters an sbatch directive cannot carry",
            "use a folder whose path has only letters, digits and . _ / + -",
        )
    return text


def render_script(
    tasks: Sequence[Task],
    *,
    repo: str,
    results: Path,
    python: str,
    throttle: Optional[int] = None,
    run_args: Sequence[str] = (),
    cpus: int = 1,
    time_limit: Optional[str] = None,
    partition: Optional[str] = None,
) -> str:
    """The sbatch script; every value checked against its grammar, quoted where a shell reads
    it."""
    if not tasks:
        raise UsageError("no experiment to submit")
    ids = [validate.experiment_id(t.exp_id, "experiment id") for t in tasks]
    images = [
        shlex.quote(validate.image_tag(t.image, "published image")) if t.image else "''"
        for t in tasks
    ]
    validate.clean_text("--repo", repo)
    if repo.startswith("-"):
        raise UsageError(f"--repo {repo[:80]!r} starts with '-'", "give the repository's URL")
    if partition is not None and not _PARTITION.fullmatch(partition):
        raise UsageError(f"--partition {partition!r} is not a partition name")
    if time_limit is not None and not _TIME.fullmatch(time_limit):
        raise UsageError(f"--time-limit {time_limit!r} is not a Slurm time (e.g. 2:00:00)")
    if throttle is not None and throttle < 1:
        raise UsageError("--jobs must be at least 1")
    from jinja2 import Environment, PackageLoader, StrictUndefined  # lazy: ~25 ms, sbatch only

    env = Environment(
        loader=PackageLoader("reprobox.templates", "."),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    results_text = safe_dir(results, "the results folder")
    return env.get_template("sbatch.sh.j2").render(
        count=len(ids),
        ids=ids,
        images=images if any(t.image for t in tasks) else [],
        repo_q=shlex.quote(repo),
        results=results_text,
        results_q=shlex.quote(results_text),
        python_q=shlex.quote(validate.clean_text("python", python)),
        throttle=throttle,
        run_args_q=[shlex.quote(a) for a in run_args],
        cpus=int(cpus),
        time_limit=time_limit,
        partition=partition,
        job_name="reprobox-fanout",
        version=__version__,
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ToolMissing(
            f"`{name}` is not on PATH: this machine cannot submit to Slurm",
            "run from a Slurm login node, or use --on local",
        )
    return path


def submit(script_path: Path) -> str:
    done = subprocess.run(
        [_tool("sbatch"), "--parsable", str(script_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise ReproboxError(
            f"sbatch refused the job array: {done.stderr.strip()[:500]}",
            "check the partition and limits (`sinfo`, `scontrol show config`)",
        )
    job = done.stdout.strip().split(";")[0]
    if not re.fullmatch(r"[0-9]+", job):
        raise ReproboxError(f"sbatch answered {done.stdout.strip()!r}, not a job id")
    return job


def _pending(job: str) -> dict[str, str]:
    """``{task index: state}`` of the array's tasks squeue still shows."""
    done = subprocess.run(
        [_tool("squeue"), "-h", "-r", "-j", job, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and "_" in parts[0]:
            out[parts[0].split("_", 1)[1]] = parts[1]
    return out


def task_record(job: str, index: int) -> dict[str, str]:
    """``scontrol show job -o <job>_<index>`` as a dict (empty once Slurm forgot the job)."""
    done = subprocess.run(
        [_tool("scontrol"), "show", "job", "-o", f"{job}_{index}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    fields: dict[str, str] = {}
    for tok in done.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields.setdefault(k, v)
    return fields


def _runtime(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", text or "")
    if not m:
        return 0.0
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def outcome_of(task: Task, index: int, job: str, results: Path, record: dict[str, str]) -> Outcome:
    where = f"slurm {job}_{index}" + (
        f" on {record['NodeList']}"
        if record.get("NodeList") and record["NodeList"] != "(null)"
        else ""
    )
    seconds = _runtime(record.get("RunTime", ""))
    report = results / f"{index}.json"
    failed = results / f"{index}.failed"
    state = record.get("JobState", "")
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except ValueError:
            data = None
        if not isinstance(data, dict):  # cut short, or not a report of `reprobox run --json`
            return Outcome.failure(
                task.exp_id, task.name, f"unreadable report {report}", seconds=seconds, where=where
            )
        reported = data.get("seconds")
        if not seconds and isinstance(reported, (int, float)) and not isinstance(reported, bool):
            seconds = float(reported)
        out = Outcome.from_report(data, seconds=seconds, where=where, name=task.name)
        err = results / f"{index}.err"
        if err.is_file():
            out = replace(out, notes=run_notes(err.read_text(encoding="utf-8", errors="replace")))
        if out.experiment != task.exp_id:
            return Outcome.failure(
                task.exp_id,
                task.name,
                f"the task reported experiment {out.experiment!r}",
                seconds=seconds,
                where=where,
            )
        return out
    if state == "CANCELLED":
        return Outcome.failure(
            task.exp_id,
            task.name,
            f"cancelled by the scheduler (scancel) in task {job}_{index}",
            seconds=seconds,
            where=where,
        )
    if state in ("TIMEOUT", "DEADLINE"):
        return Outcome.failure(
            task.exp_id,
            task.name,
            f"task {job}_{index} hit its time limit (--time-limit)",
            seconds=seconds,
            where=where,
        )
    if state in ("NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "PREEMPTED"):
        return Outcome.failure(
            task.exp_id,
            task.name,
            f"task {job}_{index} ended {state} on {record.get('NodeList')}",
            seconds=seconds,
            where=where,
        )
    if failed.is_file():
        return Outcome.failure(
            task.exp_id,
            task.name,
            failed.read_text(encoding="utf-8", errors="replace"),
            seconds=seconds,
            where=where,
        )
    return Outcome.failure(
        task.exp_id,
        task.name,
        f"task {job}_{index} ended {state or 'UNKNOWN'} (exit code "
        f"{record.get('ExitCode', '?')}) and left no result: see {results}/slurm-{job}_{index}.out",
        seconds=seconds,
        where=where,
    )


def gather(
    job: str,
    tasks: Sequence[Task],
    results: Path,
    *,
    timeout: float,
    poll: float = 1.0,
    progress: Optional[Progress] = None,
) -> list[Outcome]:
    say = progress or (lambda _m: None)
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while True:
        pending = _pending(job)
        for i in range(len(tasks)):
            if (
                i not in seen
                and str(i) not in pending
                and ((results / f"{i}.json").exists() or (results / f"{i}.failed").exists())
            ):
                seen.add(i)
                say(f"task {job}_{i} ({tasks[i].exp_id}) finished")
        if not pending:
            break
        if time.monotonic() > deadline:
            subprocess.run([_tool("scancel"), job], capture_output=True, timeout=60)
            say(f"no verdict within {timeout:.0f} s: job {job} cancelled")
            time.sleep(2)
            out = []
            for i, t in enumerate(tasks):
                if str(i) in pending:
                    out.append(
                        Outcome.failure(
                            t.exp_id,
                            t.name,
                            f"no verdict within --timeout {timeout:.0f} s "
                            f"(task {job}_{i} was {pending[str(i)]})",
                            where=f"slurm {job}_{i}",
                        )
                    )
                else:
                    out.append(outcome_of(t, i, job, results, task_record(job, i)))
            return out
        time.sleep(poll)
    return [outcome_of(t, i, job, results, task_record(job, i)) for i, t in enumerate(tasks)]


def python_for_nodes() -> str:
    return sys.executable
