"""Choose the experiments, dispatch them to local / slurm / kubernetes, write the summary."""

from __future__ import annotations

import datetime as _dt
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..errors import UsageError, ValidationError
from ..store import write_atomic
from . import kubernetes as k8s
from . import slurm
from .local import default_jobs, run_local
from .published import published_image, require_published
from .summary import Outcome, Summary, utc_now
from ..progress import Progress

TARGETS = ("local", "slurm", "kubernetes")


def select(
    store: Any, refs: Sequence[str], all_experiments: bool, warn: Progress
) -> tuple[list[Any], list[Outcome]]:
    """The experiments to run, and an outcome already for each one that is refused (a capture
    that fails validation: the others still run)."""
    if all_experiments and refs:
        raise UsageError("give experiments or --all, not both")
    if not all_experiments and not refs:
        raise UsageError("no experiment given", "name one or more (id, prefix, name) or --all")
    chosen: list[Any] = []
    refused: list[Outcome] = []
    if all_experiments:
        good, skipped = store.scan(report=False)
        for bad in skipped:
            warn(f"skipped: {bad}")
        candidates = good
    else:
        ids = [store.resolve(r) for r in refs]  # an unknown ref: exit 2 before anything runs
        candidates = []
        for exp_id in dict.fromkeys(ids):
            try:  # the store validates what it loads: a hostile capture is refused here
                candidates.append(store.load(exp_id))
            except ValidationError as exc:
                refused.append(Outcome.failure(exp_id, "", f"refused: {exc.message}"))
    seen: set[str] = set()
    for s in candidates:
        if s.id in seen:
            continue
        seen.add(s.id)
        chosen.append(s)
    if not chosen and not refused:
        raise UsageError("no experiment to run", "record one with `reprobox capture --cmd ...`")
    return chosen, refused


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def fan_out(
    store: Any,
    refs: Sequence[str],
    *,
    all_experiments: bool = False,
    on: str = "local",
    jobs: Optional[int] = None,
    dry_run: bool = False,
    run_args: Sequence[str] = (),
    timeout: Optional[float] = None,
    repo: Optional[str] = None,
    namespace: str = "default",
    gpus: Optional[str] = None,
    partition: Optional[str] = None,
    time_limit: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> Union[Summary, str]:
    say = progress or (lambda _m: None)
    if on not in TARGETS:
        raise UsageError(f"--on {on!r}: choose one of {', '.join(TARGETS)}")
    if jobs is not None and not 1 <= jobs <= 10_000:
        raise UsageError(
            f"--jobs {jobs} is out of range", "give a number of parallel runs, 1 to 10000"
        )
    if timeout is not None and not 0 < timeout < 10**9:  # NaN and infinity fail this too
        raise UsageError(
            f"--timeout {timeout!r} is not a number of seconds",
            "give a positive number of seconds, e.g. --timeout 3600",
        )
    chosen, refused = select(store, refs, all_experiments, say)
    t0 = time.monotonic()
    summary = Summary(on=on, started=utc_now())
    outcomes: list[Outcome] = []

    if on == "local":
        if dry_run:
            return "".join(
                shlex.join(
                    [sys.executable, "-m", "reprobox.cli", "-q", "run", s.id, "--json", *run_args]
                )
                + "\n"
                for s in chosen
            )
        n = jobs or default_jobs()
        summary.details["jobs"] = n
        say(f"running {len(chosen)} experiment(s) here, {n} at a time")
        outcomes = run_local(
            store.root, chosen, jobs=n, run_args=run_args, timeout=timeout, progress=say
        )

    elif on == "slurm":
        tasks = [slurm.Task(s.id, s.experiment.name, published_image(s) or "") for s in chosen]
        name = f"slurm-{_stamp()}"
        results = (
            (store.root / ".reprobox" / "local" / "fanout" / name)
            if dry_run
            else store.local_dir("fanout", name)
        )
        script = slurm.render_script(
            tasks,
            repo=repo or str(store.root),
            results=results,
            python=slurm.python_for_nodes(),
            throttle=jobs,
            run_args=run_args,
            time_limit=time_limit,
            partition=partition,
        )
        if dry_run:
            return script
        path = results / "job.sbatch"
        write_atomic(path, script)
        job = slurm.submit(path)
        summary.details.update({"job": job, "results": str(results), "script": str(path)})
        say(f"submitted job array {job} ({len(tasks)} task(s)); results in {results}")
        outcomes = slurm.gather(job, tasks, results, timeout=timeout or 24 * 3600.0, progress=say)

    else:
        suffix = _stamp()[9:15].lower() if not dry_run else ""
        manifests = [
            k8s.job_manifest(
                s,
                require_published(s),
                repo=repo or _remote(store),
                namespace=namespace,
                gpus=gpus,
                timeout=int(timeout) if timeout else None,
                suffix=suffix,
            )
            for s in chosen
        ]
        if dry_run:
            return k8s.to_yaml(manifests)
        outcomes = k8s.apply_and_gather(
            chosen, manifests, namespace=namespace, timeout=timeout or 24 * 3600.0, progress=say
        )

    summary.outcomes = refused + outcomes
    summary.seconds = time.monotonic() - t0
    summary.save(store.local_dir("fanout"))
    return summary


def _remote(store: Any) -> str:
    """The repository a pod clones: the origin remote (a pod cannot read this machine's disk)."""
    done = subprocess.run(
        ["git", "-C", str(store.root), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    url = done.stdout.strip()
    if done.returncode != 0 or not url or Path(url).is_absolute():
        raise UsageError(
            "the pods need a repository URL they can clone",
            "push the repository and give --repo URL (or set the origin remote)",
        )
    return url
