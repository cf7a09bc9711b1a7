"""Benchmark: ``reprobox capture --no-lock`` against ``pip freeze``, ``uv pip freeze`` and
``pip inspect`` on the same venv, through their real command lines.

Cold: every contestant gets a fresh, empty cache per repetition (pip: ``PIP_CACHE_DIR``; uv:
``UV_CACHE_DIR``; reprobox: ``XDG_CACHE_HOME``, ``REPROBOX_WHEELHOUSE`` and the repository's
``.reprobox`` removed, so its ``local/cache`` is empty too). Warm: every contestant keeps one cache
across repetitions, filled by an untimed first run. A capture records much more than a freeze
(wheel tags, PEP 610 sources, the native libraries every extension module loads and the OS
packages owning them) and writes the sealed experiment folder.

Targets: cold <= 0.35x ``pip freeze``, warm <= 0.2x. Beside the peers runs the floor of an
exact capture (``data/floor_stat.py``: the target interpreter started with ``-I``, every RECORD
read and every file it lists stat-ed, as the installed-file check must), with its own ratio to
``pip freeze``: a target under it cannot be met by checking every installed file.

    python benchmarks/bench_capture.py [--quick] [--env datascience|torch]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
from harness import (
    DATA,
    DEFAULT_REPS,
    QUICK_REPS,
    Contestant,
    Rep,
    Row,
    clean_env,  # noqa: E402
    cold_reprobox_env,
    measure,
    need,
    run_once,
    say,
    table,
)

TARGETS = {"cold": 0.35, "warm": 0.2}
FLOOR = "floor (stat every installed file)"


def contestants(project: Path, venv: Path, mode: str, warm: Path) -> List[Contestant]:
    vpy = venv / "bin" / "python"
    pip = venv / "bin" / "pip"
    uv = need("uv")
    rb = need("reprobox")

    def cache(rep: Rep, tool: str) -> str:
        return str((rep.tmp if mode == "cold" else warm) / tool)

    def reprobox_prepare(rep: Rep) -> None:
        # the experiment folders of earlier repetitions go; cold also loses the local cache
        if mode == "cold":
            shutil.rmtree(project / ".reprobox", ignore_errors=True)
        else:
            shutil.rmtree(project / ".reprobox" / "experiments", ignore_errors=True)

    def reprobox_env(rep: Rep) -> Dict[str, str]:
        if mode == "cold":
            return cold_reprobox_env(rep)
        return clean_env(
            XDG_CACHE_HOME=str(warm / "xdg"), REPROBOX_WHEELHOUSE=str(warm / "wheelhouse")
        )

    return [
        Contestant(
            "reprobox capture --no-lock",
            [rb, "capture", "--no-lock", "--python", vpy, "--cmd", "python train.py"],
            env=reprobox_env,
            cwd=project,
            prepare=reprobox_prepare,
        ),
        Contestant(
            "pip freeze",
            [pip, "freeze"],
            env=lambda rep: clean_env(PIP_CACHE_DIR=cache(rep, "pip")),
        ),
        Contestant(
            "uv pip freeze",
            [uv, "pip", "freeze", "--python", vpy],
            env=lambda rep: clean_env(UV_CACHE_DIR=cache(rep, "uv")),
        ),
        Contestant(
            "pip inspect",
            [pip, "inspect"],
            env=lambda rep: clean_env(PIP_CACHE_DIR=cache(rep, "pip")),
        ),
        # not a peer: the least an exact capture does (see data/floor_stat.py); no cache
        Contestant(FLOOR, [vpy, "-I", DATA / "floor_stat.py"], env=lambda rep: clean_env()),
    ]


def run(quick: bool = False, env_names: tuple = ("datascience", "torch")) -> List[Row]:  # type: ignore[type-arg]
    reps = QUICK_REPS if quick else DEFAULT_REPS
    rows: List[Row] = []
    for name in env_names:
        try:
            rows.extend(run_env(name, reps))
        except Exception as exc:  # noqa: BLE001 - the table says which environment failed
            say(f"capture on {name} FAILED: {exc}")
            rows.append(
                Row(
                    "capture --no-lock",
                    name,
                    "",
                    "FAILED",
                    None,
                    note=str(exc).splitlines()[0][:200],
                )
            )
    return rows


def run_env(name: str, reps: int) -> List[Row]:
    rows: List[Row] = []
    if True:
        project, venv = envs.checkout(name, "capture")
        label = f"{name} ({envs.count(venv)} dists)"
        for mode in ("cold", "warm"):
            with tempfile.TemporaryDirectory(prefix="reprobox-bench-warm-") as tmp:
                warm = Path(tmp)
                cs = contestants(project, venv, mode, warm)
                if mode == "warm":  # fill every warm cache once, untimed
                    for c in cs:
                        run_once(c, Rep(-1, warm))
                res = measure(cs, reps, label=f"capture {name} {mode}")
            subject = res["reprobox capture --no-lock"]
            rows.append(
                Row(
                    "capture --no-lock",
                    label,
                    mode,
                    "floor: python -I, stat every RECORD-listed file",
                    res[FLOOR],
                    "pip freeze",
                    res["pip freeze"],
                    target=TARGETS[mode],
                    note="the floor of an exact capture: at or over the target, the target is "
                    "out of reach for any tool that checks every installed file",
                )
            )
            for peer in ("floor", "pip freeze", "uv pip freeze", "pip inspect"):
                rows.append(
                    Row(
                        "capture --no-lock",
                        label,
                        mode,
                        "reprobox",
                        subject,
                        peer,
                        res[FLOOR if peer == "floor" else peer],
                        target=TARGETS[mode] if peer == "pip freeze" else None,
                        note="what reprobox costs over the floor" if peer == "floor" else "",
                    )
                )
        shutil.rmtree(project / ".reprobox", ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--env", action="append", choices=["datascience", "torch"])
    args = parser.parse_args()
    print(table(run(args.quick, tuple(args.env or ("datascience", "torch")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
