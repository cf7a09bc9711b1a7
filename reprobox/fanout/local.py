"""``--on local``: the reproductions run here, ``jobs`` at a time, each a normal ``reprobox run``.

Each one is its own process (``python -m reprobox.cli run <id> --json``): its own git worktree and
scratch folder (``run`` makes both under a fresh temporary folder), its own run report, and a
crash or a hang of one touches no other. Experiments that would build the same image (the same
environment digest and Dockerfile) never build it at the same time: the first of each such group
runs alone, the others of the group are started once it is over and find the image's layers in
the engine's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Optional, Sequence

from .summary import Outcome, run_notes
from ..progress import Progress


def default_jobs() -> int:
    """Half the CPUs this process may use (a rerun is itself multi-threaded), at least 1, at
    most 8 (image builds and checkouts compete for the disk)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


def image_key(stored: object) -> str:
    """What decides the image: the environment digest and the Dockerfile's sha256."""
    exp = stored.experiment  # type: ignore[attr-defined]
    return f"{exp.environment_digest}:{exp.files.get('Dockerfile', '')}"


def run_one(
    root: Path, exp_id: str, name: str, run_args: Sequence[str], timeout: Optional[float]
) -> Outcome:
    argv = [sys.executable, "-m", "reprobox.cli", "run", exp_id, "--json", *run_args]
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Outcome.failure(
            exp_id,
            name,
            f"no verdict after {timeout:.0f} s (--timeout)",
            seconds=time.monotonic() - t0,
            where="local",
        )
    seconds = time.monotonic() - t0
    if done.returncode in (0, 1):
        try:
            report = json.loads(done.stdout)
        except ValueError:
            return Outcome.failure(
                exp_id,
                name,
                "the run printed no JSON report: " + (done.stderr or done.stdout),
                seconds=seconds,
                where="local",
            )
        out = Outcome.from_report(report, seconds=seconds, where="local", name=name)
        return replace(out, notes=run_notes(done.stderr))
    return Outcome.failure(
        exp_id,
        name,
        done.stderr or f"exit status {done.returncode}",
        seconds=seconds,
        where="local",
    )


def run_local(
    root: Path,
    experiments: Sequence[object],
    *,
    jobs: int,
    run_args: Sequence[str] = (),
    timeout: Optional[float] = None,
    progress: Optional[Progress] = None,
) -> list[Outcome]:
    """Run every experiment; outcomes in the order given."""
    say = progress or (lambda _m: None)
    order = {s.id: i for i, s in enumerate(experiments)}  # type: ignore[attr-defined]
    groups: dict[str, list[object]] = {}
    for s in experiments:
        groups.setdefault(image_key(s), []).append(s)
    ready = [g[0] for g in groups.values()]  # one per image first
    waiting = {k: list(g[1:]) for k, g in groups.items()}
    results: dict[str, Outcome] = {}
    lock = threading.Lock()

    def task(s: object) -> Outcome:
        exp = s.experiment  # type: ignore[attr-defined]
        out = run_one(root, exp.id, exp.name, run_args, timeout)
        with lock:
            say(f"{out.status}: {exp.id} ({exp.name}) in {out.seconds:.1f}s")
        return out

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        running: dict[Future[Outcome], object] = {pool.submit(task, s): s for s in ready}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                s = running.pop(fut)
                results[s.id] = fut.result()  # type: ignore[attr-defined]
                for nxt in waiting.pop(image_key(s), []):
                    running[pool.submit(task, nxt)] = nxt
    return sorted(results.values(), key=lambda o: order.get(o.experiment, 0))
