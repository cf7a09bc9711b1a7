"""``reprobox doctor``: what this machine can do, each finding with the fix when it falls short."""

from __future__ import annotations

import os
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from . import proc
from .capture.hardware import detect_hardware
from .engine import get_engine
from .errors import ReproboxError
from .lock import read_index_config
from .lock import uv as lock_uv


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: Optional[str] = None

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _tool_version(tool: str, *args: str) -> Optional[str]:
    path = shutil.which(tool)
    if not path:
        return None
    try:
        out = proc.run([path, *args], timeout=20, check=False)
    except ReproboxError:
        return None
    text = (out.stdout or out.stderr or "").strip().splitlines()
    return text[0] if text else path


def check_git() -> Check:
    v = _tool_version("git", "--version")
    return Check("git", bool(v), v or "not found", None if v else "apt-get install git")


def check_dvc() -> Check:
    v = _tool_version("dvc", "--version")
    return Check(
        "dvc",
        bool(v),
        f"DVC {v}" if v else "not found",
        None if v else "pip install dvc (needed for DVC projects only)",
    )


def check_engine() -> list[Check]:
    try:
        engine = get_engine()
        info = engine.info()
    except ReproboxError as exc:
        return [Check("docker", False, exc.message, exc.hint)]
    if engine.name == "podman":
        checks = [
            Check(
                "podman",
                True,
                f"podman {info.get('server_version', '?')} works "
                f"({'rootless' if info.get('rootless') else 'as root'}, no daemon)",
            )
        ]
        if not os.environ.get("REPROBOX_ENGINE"):
            checks.insert(
                0,
                Check(
                    "docker",
                    False,
                    "no Docker daemon answers: podman is used",
                    "start the Docker daemon to use Docker, or pass --engine podman to say so",
                ),
            )
        return checks
    checks = [Check("docker", True, f"daemon {info.get('server_version', '?')} answers")]
    buildkit = info.get("buildkit_client")
    checks.append(
        Check(
            "buildkit",
            bool(buildkit),
            f"BuildKit client: {buildkit}" if buildkit else "no BuildKit-capable docker client",
            None
            if buildkit
            else "install Debian's docker.io client or the buildx plugin; "
            "builds fall back to the classic builder (slower, no cache mounts)",
        )
    )
    nvidia = info.get("nvidia_runtime")
    checks.append(
        Check(
            "gpu-runtime",
            bool(nvidia),
            "NVIDIA container runtime present"
            if nvidia
            else "no NVIDIA container runtime (containers run on CPU)",
            None if nvidia else "install nvidia-container-toolkit to give containers the GPUs",
        )
    )
    return checks


def check_gpus() -> Check:
    try:
        hw = detect_hardware((), {})
    except ReproboxError as exc:
        return Check("gpus", False, exc.message)
    if not hw.gpus:
        return Check("gpus", True, "no NVIDIA GPU (CPU-only machine)")
    names = ", ".join(g.name for g in hw.gpus)
    return Check(
        "gpus",
        True,
        f"{len(hw.gpus)}: {names}; driver {hw.gpus[0].driver}, CUDA {hw.gpus[0].cuda_driver}",
    )


def check_index() -> Check:
    try:
        config = read_index_config()
    except ReproboxError as exc:
        return Check("index", False, exc.message, exc.hint)
    url = config.index_url
    shown = config.redacted().index_url
    if url.startswith("file://"):
        return Check("index", True, f"{shown} (local folder)")
    ctx = ssl.create_default_context(cafile=config.cert) if config.cert else None
    req = urllib.request.Request(
        url.rstrip("/") + "/pip/",
        method="GET",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return Check("index", True, f"{shown} answers (HTTP {resp.status})")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            "index",
            False,
            f"{shown} unreachable: {reason}",
            "check the network, proxy (HTTPS_PROXY) and CA bundle (PIP_CERT); "
            "capture still works and `reprobox lock` completes the lock later",
        )


def check_uv() -> Check:
    """The uv that builds and the venv backend use: the one installed with reprobox (a declared
    dependency, found also where its folder is not on PATH, as with pipx), else one on PATH."""
    found = lock_uv.find_uv()
    fix = (
        "reinstall reprobox (`pip install --force-reinstall reprobox`), which installs uv with "
        "it; without uv, image builds and the venv backend install with pip (slower)"
    )
    if found is None:
        return Check("uv", False, "not found", fix)
    try:
        out = proc.run([str(found), "--version"], timeout=20, check=False)
    except ReproboxError as exc:
        return Check("uv", False, f"{found} does not run: {exc.message}", fix)
    lines = (out.stdout or "").strip().splitlines()
    if out.returncode != 0 or not lines:
        return Check("uv", False, f"{found} does not run (exit status {out.returncode})", fix)
    return Check("uv", True, f"{lines[0]} ({found})")


def check_debootstrap() -> Check:
    path = shutil.which("debootstrap")
    return Check(
        "debootstrap",
        bool(path),
        path or "not found",
        None if path else "apt-get install debootstrap (for `reprobox base`)",
    )


CHECKS: tuple[Callable[[], object], ...] = (
    check_git,
    check_dvc,
    check_engine,
    check_gpus,
    check_index,
    check_uv,
    check_debootstrap,
)


def diagnose() -> list[Check]:
    out: list[Check] = []
    for fn in CHECKS:
        result = fn()
        if isinstance(result, list):
            out.extend(result)
        else:
            out.append(result)  # type: ignore[arg-type]
    return out
