"""``--on kubernetes``: one Job per experiment, the image by digest from its publication record.

Each Job has an init container that clones the repository at the recorded commit into an
``emptyDir`` and the rerun container (the published image, ``REF@DIGEST``) that runs the recorded
command there, then prints the metrics files it wrote to its log, base64-encoded, one line each
(``REPROBOX-FILE <path> <base64>``) after ``REPROBOX-EXIT <status>``. The gatherer reads the Job's
status and the pod's log and compares the metrics with the record here. The recorded command and
file names reach the container as environment variables, never pasted into the script; the pod
runs as uid 65534 with no capability, no privilege escalation, no service-account token.

GPUs (``nvidia.com/gpu`` limits) are requested only when the capture used GPUs AND ``--gpus`` is
given. Captures with an uncommitted patch or a DVC pipeline are refused (the Job has the
committed code only and no DVC remote).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ReproboxError, UsageError
from ..model import INLINE_METRICS
from ..model import grammar as validate
from ..outcome import compare_metrics, differences
from ..run import plan_run
from ..workspace.metrics import read_metrics
from ..workspace.replay import RUN_EXPERIMENT_ENV, RUN_METRICS_ENV
from .summary import Outcome
from ..progress import Progress

DEFAULT_GIT_IMAGE = "docker.io/alpine/git:v2.45.2"
_SIMPLE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*", re.ASCII)
_NAMESPACE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)

WRAPPER = r"""set -u
mkdir -p /work/repo/.reprobox-run
/bin/sh -c "$REPROBOX_COMMAND"
rc=$?
cd /work/repo || exit 3
echo "REPROBOX-EXIT $rc"
for f in $REPROBOX_METRICS_FILES; do
  if [ -f "$f" ]; then printf 'REPROBOX-FILE %s ' "$f"; base64 "$f" | tr -d '\n'; echo; fi
done
exit $rc
"""

CHECKOUT = r"""set -eu
git clone -q -- "$REPROBOX_REPO" /work/repo
cd /work/repo
git -c advice.detachedHead=false checkout -q "$REPROBOX_COMMIT"
"""


def gpu_count(stored: Any, gpus: Optional[str]) -> int:
    """``nvidia.com/gpu`` to request: 0 unless the capture used GPUs and ``--gpus`` was given."""
    used = len(stored.environment.hardware.gpus)
    if not gpus or not used:
        return 0
    if gpus == "all":
        return used
    if re.fullmatch(r"[0-9]{1,3}", gpus):
        return int(gpus)
    if re.fullmatch(r"[0-9]{1,3}(?:,[0-9]{1,3})*", gpus):
        return len(gpus.split(","))
    raise UsageError(f"--gpus {gpus!r} is not all, a count or device ids such as 0,1")


def job_manifest(
    stored: Any,
    image: str,
    *,
    repo: str,
    namespace: str = "default",
    gpus: Optional[str] = None,
    git_image: str = DEFAULT_GIT_IMAGE,
    timeout: Optional[int] = None,
    suffix: str = "",
) -> dict[str, Any]:
    """The Job of one experiment, as a dict (dumped as YAML or sent to the API)."""
    exp = stored.experiment
    exp_id = validate.experiment_id(exp.id, "experiment id")
    image = validate.image_tag(image, "published image")
    if "@sha256:" not in image:
        raise UsageError(
            f"image {image!r} is not pinned by digest", f"publish it with `reprobox push {exp_id}`"
        )
    git_image = validate.image_tag(git_image, "--git-image")
    if not _NAMESPACE.fullmatch(namespace):
        raise UsageError(f"--namespace {namespace!r} is not a Kubernetes namespace name")
    repo = validate.clean_text("--repo", repo)
    if repo.startswith("-"):
        raise UsageError(f"--repo {repo[:80]!r} starts with '-'", "give the repository's URL")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@", repo):
        raise UsageError(
            "--repo carries credentials, which would be written into the Job "
            "for anyone who can read it",
            "give the URL without user:password@ and let the pods authenticate "
            "(a credential helper in the git image, a mounted Secret)",
        )
    plan = plan_run(exp, stored.environment)
    if plan.command_kind != "shell" or exp.dvc is not None:
        raise UsageError(
            f"experiment {exp_id} is a DVC pipeline: a Kubernetes Job has no trusted DVC remote",
            "run it with --on local or --on slurm",
        )
    if plan.patch:
        raise UsageError(
            f"experiment {exp_id} was captured with uncommitted changes: a "
            "Kubernetes Job checks out committed code only",
            "commit the change and capture again, or use --on local / slurm",
        )
    files = [*plan.metrics_files, *([".reprobox-run/metrics.json"] if plan.inline_metrics else [])]
    for f in files:
        if not _SIMPLE_PATH.fullmatch(f):
            raise UsageError(
                f"metrics file {f!r} of {exp_id} has characters a Job's file list cannot carry",
                "rename it to letters, digits and . _ / -",
            )
    env = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    env += [
        {"name": "REPROBOX_COMMAND", "value": validate.command(plan.command)},
        {"name": "REPROBOX_METRICS_FILES", "value": " ".join(files)},
        {"name": RUN_EXPERIMENT_ENV, "value": exp_id},
        {"name": RUN_METRICS_ENV, "value": "/work/repo/.reprobox-run/metrics.json"},
    ]
    labels = {"app.kubernetes.io/managed-by": "reprobox", "reprobox.dev/experiment": exp_id}
    confined = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
    }
    mounts = [{"name": "work", "mountPath": "/work"}]
    rerun: dict[str, Any] = {
        "name": "rerun",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", WRAPPER],
        "env": env,
        "workingDir": "/work/repo" + ("" if plan.cwd in ("", ".") else "/" + plan.cwd),
        "volumeMounts": mounts,
        "securityContext": confined,
    }
    n = gpu_count(stored, gpus)
    if n:
        rerun["resources"] = {"limits": {"nvidia.com/gpu": n}}
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [
                    {
                        "name": "checkout",
                        "image": git_image,
                        "command": ["/bin/sh", "-c", CHECKOUT],
                        "env": [
                            {"name": "REPROBOX_REPO", "value": repo},
                            {"name": "REPROBOX_COMMIT", "value": plan.commit},
                            {"name": "HOME", "value": "/tmp"},
                        ],
                        "volumeMounts": mounts,
                        "securityContext": confined,
                    }
                ],
                "containers": [rerun],
            },
        },
    }
    if timeout:
        spec["activeDeadlineSeconds"] = int(timeout)
    name = f"reprobox-{exp_id}" + (f"-{suffix}" if suffix else "")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def to_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    import yaml  # lazy: PyYAML costs ~10 ms to import, only `--on kubernetes --dry-run` prints

    return "".join(
        "---\n" + yaml.safe_dump(m, sort_keys=False, default_flow_style=False) for m in manifests
    )


def report_from_log(stored: Any, log: str) -> dict[str, Any]:
    """The rerun container's log -> a report in ``reprobox run --json``'s shape."""
    exp = stored.experiment
    plan = plan_run(exp, stored.environment)
    exit_code: Optional[int] = None
    blobs: dict[str, bytes] = {}
    for line in log.splitlines():
        if line.startswith("REPROBOX-EXIT "):
            try:
                exit_code = int(line.split()[1])
            except (IndexError, ValueError):
                exit_code = None
        elif line.startswith("REPROBOX-FILE "):
            parts = line.split(" ")
            if len(parts) == 3:
                try:
                    blobs[parts[1]] = base64.b64decode(parts[2], validate=True)
                except ValueError:
                    continue
    observed: dict[str, Optional[dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="reprobox-k8s-") as tmp:
        wanted = {f: f for f in plan.metrics_files}
        if plan.inline_metrics:
            wanted[INLINE_METRICS] = ".reprobox-run/metrics.json"
        for key, rel in wanted.items():
            if rel not in blobs:
                observed[key] = None
                continue
            path = validate.path_inside(Path(tmp), rel, "metrics file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blobs[rel])
            try:
                observed[key] = dict(read_metrics(path))
            except ReproboxError as exc:
                observed[key] = None
                reasons[key] = f"{rel} could not be read after the rerun: {exc.message}"
    metrics = compare_metrics(exp.metrics, observed, unavailable=reasons)
    diffs = list(differences(metrics, ()))
    if exit_code is None:
        diffs.insert(0, "the rerun container ended before reporting its exit status")
    elif exit_code != 0:
        diffs.insert(0, f"the command exited with status {exit_code}")
    return {
        "experiment": exp.id,
        "name": exp.name,
        "reproduced": not diffs,
        "verdict": "reproduced" if not diffs else "differs",
        "differences": diffs,
        "metrics": [m.to_dict() for m in metrics],
        "exit_code": exit_code,
        "backend": "kubernetes",
        "notes": ["declared output files are not compared on Kubernetes (only metrics)"],
    }


def apply_and_gather(
    stored_list: Sequence[Any],
    manifests: Sequence[dict[str, Any]],
    *,
    namespace: str,
    timeout: float,
    poll: float = 2.0,
    progress: Optional[Progress] = None,
) -> list[Outcome]:
    """Create the Jobs with the configured cluster (kubeconfig), wait, read status and logs."""
    say = progress or (lambda _m: None)
    try:  # lazy: an optional extra that costs ~160 ms to import; only a real submission needs it
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException  # lazy: as above
    except ImportError:
        raise ReproboxError(
            "the kubernetes Python client is not installed", "pip install 'reprobox[kubernetes]'"
        ) from None
    try:
        config.load_kube_config()
    except Exception as exc:  # the client raises several types for a missing/bad kubeconfig
        raise ReproboxError(
            f"no Kubernetes cluster is configured: {exc}",
            "set KUBECONFIG (or ~/.kube/config), or print the manifests with --dry-run",
        ) from None
    batch: Any = client.BatchV1Api()  # dict bodies are accepted: the client serialises them
    core: Any = client.CoreV1Api()
    t0 = time.monotonic()
    created: dict[str, float] = {}
    outcomes: dict[str, Outcome] = {}
    for s, m in zip(stored_list, manifests):
        try:
            batch.create_namespaced_job(namespace, m)
            created[m["metadata"]["name"]] = time.monotonic()
            say(f"created job {m['metadata']['name']}")
        except ApiException as exc:
            outcomes[s.id] = Outcome.failure(
                s.id,
                s.experiment.name,
                f"the API server refused the Job: {exc.reason}",
                where="kubernetes",
            )
    by_name = {m["metadata"]["name"]: s for s, m in zip(stored_list, manifests)}
    while set(created) - {n for n, s in by_name.items() if s.id in outcomes}:
        for name in list(created):
            s = by_name[name]
            if s.id in outcomes:
                continue
            job = batch.read_namespaced_job_status(name, namespace)
            st = job.status
            if st is None or not (st.succeeded or st.failed):
                if time.monotonic() - t0 > timeout:
                    outcomes[s.id] = Outcome.failure(
                        s.id,
                        s.experiment.name,
                        f"no verdict within --timeout {timeout:.0f} s (job {name})",
                        where=f"kubernetes {name}",
                    )
                continue
            seconds = time.monotonic() - created[name]
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            log = ""
            if pods:
                try:
                    log = core.read_namespaced_pod_log(
                        pods[0].metadata.name, namespace, container="rerun"
                    )
                except ApiException:
                    log = ""
            if "REPROBOX-EXIT " not in log:
                why = (
                    "; ".join(f"{c.type}: {c.message}" for c in (st.conditions or []) if c.message)
                    or "the pod left no result"
                )
                outcomes[s.id] = Outcome.failure(
                    s.id,
                    s.experiment.name,
                    f"job {name} failed: {why}",
                    seconds=seconds,
                    where=f"kubernetes {name}",
                )
                continue
            report = report_from_log(s, log)
            outcomes[s.id] = Outcome.from_report(
                report, seconds=seconds, where=f"kubernetes {name}", name=s.experiment.name
            )
        time.sleep(poll)
    return [outcomes[s.id] for s in stored_list]


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest)
