"""Push and pull of a ~100-package experiment image through the local registry, and what a
second experiment sharing the same lock adds to it (the numbers of docs/scale.md).

    python benchmarks/bench_registry_layers.py [--registry 127.0.0.1:5000/bench] [--packages ...]

Needs Docker, the package index and a registry (scripts/start-registry.sh). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


def sh(*argv: str, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def manifest(ref: str) -> dict:
    name, digest = ref.split("@")
    host, repo = name.split("/", 1)
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", default="127.0.0.1:5000/bench-scale")
    ap.add_argument("--packages", default="jupyterlab==4.2.5")
    args = ap.parse_args()
    import os

    from reprobox.backends.venv import find_interpreter

    reprobox = str(Path(sys.executable).parent / "reprobox")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        py = str(find_interpreter("3.11.7"))
        sh(py, "-m", "venv", str(t / "venv"))
        sh(str(t / "venv/bin/python"), "-m", "pip", "install", "-q", *args.packages.split())
        n = len(json.loads(sh(str(t / "venv/bin/python"), "-m", "pip", "list", "--format", "json")))
        repo = t / "project"
        repo.mkdir()
        sh("git", "init", "-q", "-b", "main", cwd=repo)
        (repo / "a.py").write_text("import json\njson.dump({'a': 1}, open('m.json', 'w'))\n")
        (repo / "b.py").write_text("import json\njson.dump({'b': 2}, open('m.json', 'w'))\n")
        (repo / ".gitignore").write_text("m.json\n")
        sh("git", "add", "-A", cwd=repo)
        sh("git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "i", cwd=repo)
        env = {
            **os.environ,
            "VIRTUAL_ENV": str(t / "venv"),
            "PATH": f"{t / 'venv/bin'}:{os.environ['PATH']}",
        }
        out: dict = {"packages": n}
        refs: list[str] = []
        exps: list[str] = []
        for script in ("a.py", "b.py"):
            sh(str(t / "venv/bin/python"), script, cwd=repo)
            exp = json.loads(
                sh(
                    reprobox,
                    "capture",
                    "--json",
                    "--name",
                    script[0],
                    "--cmd",
                    f"python {script}",
                    "--metrics",
                    "m.json",
                    cwd=repo,
                    env=env,
                )
            )["id"]
            t0 = time.monotonic()
            sh(reprobox, "build", exp, cwd=repo)
            out[f"build_{script[0]}_s"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            ref = sh(reprobox, "push", exp, "--registry", args.registry, cwd=repo).strip()
            out[f"push_{script[0]}_s"] = round(time.monotonic() - t0, 1)
            refs.append(ref)
            exps.append(exp)
        layers = [{lay["digest"]: lay["size"] for lay in manifest(r)["layers"]} for r in refs]
        out["image_a_compressed_bytes"] = sum(layers[0].values())
        out["image_a_layers"] = len(layers[0])
        new = {d: s for d, s in layers[1].items() if d not in layers[0]}
        out["image_b_new_layers"] = len(new)
        out["image_b_new_bytes"] = sum(new.values())
        largest = sorted(layers[0].values(), reverse=True)[:3]
        out["image_a_largest_layers_bytes"] = largest
        # cold pull of a: its image removed here by name (the base stays, as on a node that
        # already ran one experiment on it)
        docker = "/usr/bin/docker"
        for exp_id, r in zip(exps, refs):
            names = sh(
                docker,
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--filter",
                f"label=reprobox.experiment={exp_id}",
            ).split()
            for name in [*names, r]:
                if "<none>" not in name:
                    subprocess.run([docker, "rmi", name], capture_output=True)
        t0 = time.monotonic()
        sh(docker, "pull", "-q", refs[0])
        out["pull_a_cold_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        sh(docker, "pull", "-q", refs[1])
        out["pull_b_after_a_s"] = round(time.monotonic() - t0, 1)
        for r in refs:
            subprocess.run([docker, "rmi", r], capture_output=True)
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
