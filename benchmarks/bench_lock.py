"""Benchmark: ``reprobox lock EXP`` (the CLI) against ``uv pip compile --no-deps
--generate-hashes`` and ``pip-compile --generate-hashes`` on the same pins.

The pins are the captured venv's own (``pip freeze --exclude-editable``), so every contestant
hashes the same set; reprobox locks an experiment captured with ``--no-lock`` from that venv (a
fresh copy of the repository per repetition, since a lock re-seals the experiment). All three
read the same package sources: pip's configuration on this host (reprobox and pip-compile read it
themselves; uv is handed the same indexes and find-links through its own variables and flags, and
``--index-strategy unsafe-best-match`` so it looks at every index as pip does).

Cold: a fresh cache per repetition for everyone (reprobox: ``XDG_CACHE_HOME`` and
``REPROBOX_WHEELHOUSE``; uv: ``--cache-dir``; pip-compile: ``--cache-dir``). Warm: one cache kept
across repetitions, filled by an untimed first run. pip-compile resolves and takes minutes per
run: it gets fewer repetitions (``--pip-compile-reps``), which the table shows.

Target: reprobox cold <= 1.0x uv (median).

    python benchmarks/bench_lock.py [--quick] [--env datascience|torch] [--pip-compile-reps N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
from harness import (
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
    sh,
    table,
)

ROOT = Path(__file__).resolve().parent.parent


def uv_sources() -> tuple[Dict[str, str], List[str]]:
    """pip's index configuration on this host, as uv's environment and flags."""
    sys.path.insert(0, str(ROOT))
    from reprobox.lock import read_index_config
    from reprobox.lock.crossplatform import uv_args, uv_environ

    config = read_index_config()
    return dict(uv_environ(config)), list(uv_args(config))


def template(project: Path, venv: Path, base: Path) -> tuple[Path, str, Path]:
    """A copy of the project with an unlocked capture; its id; the pins file of the venv."""
    shutil.rmtree(project / ".reprobox", ignore_errors=True)
    out = sh(
        [
            need("reprobox"),
            "capture",
            "--no-lock",
            "--json",
            "--python",
            venv / "bin" / "python",
            "--cmd",
            "python train.py",
        ],
        cwd=project,
        env=clean_env(),
    ).stdout
    exp = json.loads(out)["id"]
    repo = base / "template"
    shutil.copytree(project, repo, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    shutil.rmtree(project / ".reprobox", ignore_errors=True)
    pins = base / "pins.txt"
    pins.write_text(
        sh([venv / "bin" / "python", "-m", "pip", "freeze", "--exclude-editable"]).stdout
    )
    return repo, exp, pins


def contestants(
    repo: Path, exp: str, pins: Path, mode: str, warm: Path, pip_compile_reps: Optional[int]
) -> List[Contestant]:
    uv_env, uv_flags = uv_sources()

    def where(rep: Rep) -> Path:
        return rep.tmp if mode == "cold" else warm

    def fresh_repo(rep: Rep) -> None:
        shutil.copytree(repo, rep.tmp / "repo", symlinks=True)

    def rb_env(rep: Rep) -> Dict[str, str]:
        return cold_reprobox_env(Rep(rep.index, where(rep)))

    cs = [
        Contestant(
            "reprobox lock",
            [need("reprobox"), "lock", exp],
            env=rb_env,
            cwd=lambda rep: rep.tmp / "repo",
            prepare=fresh_repo,
        ),
        Contestant(
            "uv pip compile --no-deps --generate-hashes",
            lambda rep: [
                need("uv"),
                "pip",
                "compile",
                "--no-deps",
                "--generate-hashes",
                "--quiet",
                "--no-header",
                "--index-strategy",
                "unsafe-best-match",
                "--python",
                sys.executable,
                "--cache-dir",
                where(rep) / "uv",
                *uv_flags,
                "-o",
                rep.tmp / "uv.txt",
                pins,
            ],
            env=clean_env(**uv_env),
        ),
    ]
    if pip_compile_reps != 0:
        cs.append(
            Contestant(
                "pip-compile --generate-hashes",
                lambda rep: [
                    need("pip-compile"),
                    "--generate-hashes",
                    "--quiet",
                    "--no-header",
                    "--cache-dir",
                    where(rep) / "pip-tools",
                    "-o",
                    rep.tmp / "pc.txt",
                    pins,
                ],
                env=lambda rep: clean_env(PIP_CACHE_DIR=str(where(rep) / "pip")),
                cwd=lambda rep: rep.tmp,
                reps=pip_compile_reps,
            )
        )
    return cs


def run(
    quick: bool = False,
    env_names: tuple = ("datascience", "torch"),  # type: ignore[type-arg]
    pip_compile_reps: Optional[int] = 7,
) -> List[Row]:
    reps = QUICK_REPS if quick else DEFAULT_REPS
    if quick:
        pip_compile_reps = 0 if pip_compile_reps != 0 else 0
    rows: List[Row] = []
    for name in env_names:
        try:
            rows.extend(run_env(name, reps, pip_compile_reps))
        except Exception as exc:  # noqa: BLE001 - the table says which environment failed
            say(f"lock on {name} FAILED: {exc}")
            rows.append(
                Row("lock (CLI)", name, "cold", "FAILED", None, note=str(exc).splitlines()[0][:200])
            )
    return rows


def run_env(name: str, reps: int, pip_compile_reps: Optional[int]) -> List[Row]:
    rows: List[Row] = []
    if True:
        project, venv = envs.checkout(name, "lock")
        with tempfile.TemporaryDirectory(prefix="reprobox-bench-lock-") as tmp:
            base = Path(tmp)
            repo, exp, pins = template(project, venv, base)
            n = sum(1 for line in pins.read_text().splitlines() if "==" in line)
            label = f"{name} ({n} pins)"
            for mode in ("cold", "warm"):
                warm = base / f"warm-{mode}"
                warm.mkdir()
                pcr = pip_compile_reps if mode == "cold" else 0
                cs = contestants(repo, exp, pins, mode, warm, pcr)
                if mode == "warm":
                    for c in cs:
                        (warm / "fill").mkdir(exist_ok=True)
                        run_once(c, Rep(-1, warm / "fill"))
                        shutil.rmtree(warm / "fill")
                res = measure(cs, reps, label=f"lock {name} {mode}")
                subject = res["reprobox lock"]
                uv = "uv pip compile --no-deps --generate-hashes"
                rows.append(
                    Row(
                        "lock (CLI)",
                        label,
                        mode,
                        "reprobox lock",
                        subject,
                        uv,
                        res[uv],
                        target=1.0 if mode == "cold" else None,
                    )
                )
                pc = "pip-compile --generate-hashes"
                if pc in res:
                    note = (
                        f"pip-compile: {res[pc].n} reps only (minutes per run)"
                        if res[pc].n < reps
                        else ""
                    )
                    rows.append(
                        Row(
                            "lock (CLI)",
                            label,
                            mode,
                            "reprobox lock",
                            subject,
                            pc,
                            res[pc],
                            note=note,
                        )
                    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--env", action="append", choices=["datascience", "torch"])
    parser.add_argument("--pip-compile-reps", type=int, default=7)
    args = parser.parse_args()
    print(
        table(run(args.quick, tuple(args.env or ("datascience", "torch")), args.pip_compile_reps))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
