"""What a Slurm array task runs on a node that has Apptainer and no docker or podman.

``python -m reprobox.fanout.task apptainer <id> docker://REF@DIGEST`` (from a fresh clone): the
recorded commit and patch checked out apart (as ``reprobox run`` does), the recorded command run
in the published image through Apptainer's documented OCI interface (``apptainer exec
docker://...``: no daemon, the image converted to SIF by Apptainer), then the metrics and outputs
compared with the record; the report is printed as JSON in ``reprobox run --json``'s shape.

Untested on the machines reprobox is tested on: Apptainer is not installable there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..model import grammar as validate
from ..outcome import Tolerance, compare_metrics, compare_outputs, differences
from ..run import (
    _clear,
    _observed_outputs,
    _read_observed_metrics,
    checkout_code,
    plan_run,
)
from ..store import open_store
from ..workspace.replay import RUN_EXPERIMENT_ENV, RUN_METRICS_ENV


def apptainer_report(exp_id: str, image: str) -> dict:
    if not image.startswith("docker://"):
        raise SystemExit("error: the image must be docker://REF@DIGEST")
    validate.image_tag(image[len("docker://") :], "published image")
    store = open_store()
    stored = store.get(validate.experiment_id(exp_id))
    plan = plan_run(stored.experiment, stored.environment)
    if plan.command_kind != "shell":
        raise SystemExit("error: only shell commands run through apptainer (not DVC pipelines)")
    with tempfile.TemporaryDirectory(prefix="reprobox-apptainer-") as scratch:
        checkout, _ = checkout_code(store, stored, Path(scratch) / "checkout")
        _clear(checkout, plan.clear_before)
        inline = checkout / ".reprobox-run" / "metrics.json"
        env = {
            **plan.env,
            RUN_EXPERIMENT_ENV: exp_id,
            RUN_METRICS_ENV: "/repro/.reprobox-run/metrics.json",
        }
        argv = [
            "apptainer",
            "exec",
            "--containall",
            "--cleanenv",
            "--no-home",
            "--bind",
            f"{checkout}:/repro",
            "--pwd",
            f"/repro/{plan.cwd}",
        ]
        for k, v in sorted(env.items()):
            argv += ["--env", f"{k}={v}"]
        argv += [image, "/bin/sh", "-c", plan.command or ""]
        done = subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, check=False)
        observed, reasons = _read_observed_metrics(checkout, plan, inline)
        metrics = compare_metrics(
            stored.experiment.metrics, observed, Tolerance(), unavailable=reasons
        )
        outputs = compare_outputs(plan.outputs, _observed_outputs(checkout, plan))
        diffs = list(differences(metrics, outputs))
        if done.returncode != 0:
            diffs.insert(0, f"the command exited with status {done.returncode}")
    return {
        "experiment": exp_id,
        "name": stored.experiment.name,
        "verdict": "reproduced" if not diffs else "differs",
        "reproduced": not diffs,
        "differences": diffs,
        "metrics": [m.to_dict() for m in metrics],
        "outputs": [o.to_dict() for o in outputs],
        "backend": "apptainer",
        "environment": image,
        "exit_code": done.returncode,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "apptainer":
        print(
            "usage: python -m reprobox.fanout.task apptainer ID docker://REF@DIGEST",
            file=sys.stderr,
        )
        return 2
    os.umask(0o022)
    report = apptainer_report(argv[1], argv[2])
    print(json.dumps(report, sort_keys=True, indent=2))
    return 0 if report["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
