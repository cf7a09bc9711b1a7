"""Before and after: this checkout's reprobox against another commit's, interleaved, same inputs.

A change for speed is judged against its own base under the same load, not against numbers
measured on another day: both sides run the real CLI (``python -c`` calling the ``reprobox``
command's entry point, ``reprobox.entry:main``, with ``PYTHONPATH`` naming the checkout, the
other commit extracted with ``git archive``) in the same harness, on the data-science
environment (``--env torch``: the torch one, for capture and lock):

* ``capture --no-lock`` cold (fresh caches per repetition) and warm (one cache, filled untimed);
* ``lock EXP`` cold (a fresh copy of the repository and fresh caches per repetition);
* ``run EXP --backend docker`` on the image ``bench_run.py`` builds (both read the same image).

    python benchmarks/ab_checkouts.py --base e9ffb25 [--reps 7] [--only capture,lock,run]
        [--env torch]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
from harness import (
    DEFAULT_REPS,
    ROOT,
    Contestant,
    Rep,
    Row,
    clean_env,  # noqa: E402
    cold_reprobox_env,
    machine,
    measure,
    run_once,
    say,
    sh,
    table,
    write_json,
)

#: The ``reprobox`` command's own entry point (``[project.scripts]``): it starts a capture's probe
#: and a lock's lookups before the command line loads; a commit older than it runs its cli.
CLI = (
    "import sys\n"
    "try:\n    from reprobox.entry import main\n"
    "except ImportError:\n    from reprobox.cli import main\n"
    "sys.exit(main())"
)


def extract(ref: str) -> Path:
    """The commit ``ref`` as plain files (no git worktree), once per commit."""
    sha = sh(["git", "rev-parse", ref], cwd=ROOT).stdout.strip()
    where = Path(tempfile.gettempdir()) / f"reprobox-ab-{sha[:12]}"
    if not (where / "reprobox" / "cli.py").is_file():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def unused(path: Path) -> Path:
    """``path``, or ``NAME-2.json``, ``NAME-3.json``... when runs end in the same minute."""
    n = 1
    found = path
    while found.exists():
        n += 1
        found = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return found


def sides(base: Path) -> Dict[str, Path]:
    return {"before": base, "after": ROOT}


def argv(*args: object) -> List[str]:
    return [sys.executable, "-c", CLI, *[str(a) for a in args]]


def capture_rows(checkouts: Dict[str, Path], reps: int, env_name: str) -> List[Row]:
    project, venv = envs.checkout(env_name, "ab")
    vpy = venv / "bin" / "python"
    rows: List[Row] = []
    for mode in ("cold", "warm"):
        with tempfile.TemporaryDirectory(prefix="reprobox-ab-warm-") as tmp:
            warm = Path(tmp)
            cs = []
            for side, code in checkouts.items():
                proj = project  # one project: a warm .reprobox/local cache serves both sides

                def prepare(rep: Rep, proj: Path = proj, mode: str = mode) -> None:
                    shutil.rmtree(
                        proj / (".reprobox" if mode == "cold" else ".reprobox/experiments"),
                        ignore_errors=True,
                    )

                def env(
                    rep: Rep,
                    code: Path = code,
                    side: str = side,
                    mode: str = mode,
                    warm: Path = warm,
                ) -> Dict[str, str]:
                    if mode == "cold":
                        return cold_reprobox_env(rep, PYTHONPATH=str(code))
                    return clean_env(
                        PYTHONPATH=str(code),
                        XDG_CACHE_HOME=str(warm / side),
                        REPROBOX_WHEELHOUSE=str(warm / f"{side}-wh"),
                    )

                cs.append(
                    Contestant(
                        side,
                        argv("capture", "--no-lock", "--python", vpy, "--cmd", "python train.py"),
                        env=env,
                        cwd=proj,
                        prepare=prepare,
                    )
                )
            for c in cs:  # bytecode of both checkouts written, warm caches filled: untimed
                run_once(c, Rep(-1, warm))
            res = measure(cs, reps, label=f"A/B capture {mode}")
        rows.append(
            Row(
                "A/B capture --no-lock",
                env_name,
                mode,
                "after",
                res["after"],
                "before",
                res["before"],
            )
        )
    return rows


def lock_rows(checkouts: Dict[str, Path], reps: int, env_name: str) -> List[Row]:
    project, venv = envs.checkout(env_name, "ab-lock")
    with tempfile.TemporaryDirectory(prefix="reprobox-ab-lock-") as tmp:
        base = Path(tmp)
        shutil.rmtree(project / ".reprobox", ignore_errors=True)
        out = sh(
            argv(
                "capture",
                "--no-lock",
                "--python",
                venv / "bin" / "python",
                "--cmd",
                "python train.py",
            ),
            cwd=project,
            env=clean_env(),
        ).stdout
        exp = out.strip().splitlines()[-1]
        template = base / "template"
        shutil.copytree(project, template, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
        shutil.rmtree(project / ".reprobox", ignore_errors=True)

        def fresh(rep: Rep) -> None:
            shutil.copytree(template, rep.tmp / "repo", symlinks=True)

        cs = [
            Contestant(
                side,
                argv("lock", exp),
                env=lambda rep, code=code: cold_reprobox_env(rep, PYTHONPATH=str(code)),
                cwd=lambda rep: rep.tmp / "repo",
                prepare=fresh,
            )
            for side, code in checkouts.items()
        ]
        for c in cs:
            (base / "fill").mkdir(exist_ok=True)
            run_once(c, Rep(-1, base / "fill"))
            shutil.rmtree(base / "fill")
        res = measure(cs, reps, label="A/B lock cold")
    return [Row("A/B lock (CLI)", env_name, "cold", "after", res["after"], "before", res["before"])]


def run_rows(checkouts: Dict[str, Path], reps: int) -> List[Row]:
    import bench_run

    repo, _venv, exp_id, _image = bench_run.setup(bench_run.bench_dir())
    cs = [
        Contestant(
            side,
            argv("run", exp_id, "--backend", "docker", "--json"),
            cwd=repo,
            env=clean_env(PYTHONPATH=str(code)),
        )
        for side, code in checkouts.items()
    ]
    for c in cs:
        run_once(c, Rep(-1, repo))
    res = measure(cs, reps, label="A/B run")
    shutil.rmtree(repo / ".reprobox" / "local" / "runs", ignore_errors=True)
    return [
        Row(
            "A/B run", "numpy script", "image built", "after", res["after"], "before", res["before"]
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS)
    parser.add_argument("--only", default="capture,lock,run")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--env",
        choices=("datascience", "torch"),
        default="datascience",
        help="the environment of the capture and lock cases (run has its own)",
    )
    args = parser.parse_args()
    checkouts = sides(extract(args.base))
    steps: Dict[str, Callable[[Dict[str, Path], int], List[Row]]] = {
        "capture": lambda c, n: capture_rows(c, n, args.env),
        "lock": lambda c, n: lock_rows(c, n, args.env),
        "run": run_rows,
    }
    rows: List[Row] = []
    for name in args.only.split(","):
        before = machine()["loadavg"][0]
        got = steps[name](checkouts, args.reps)
        after = machine()["loadavg"][0]
        for row in got:
            row.note = f"load {before:.1f}→{after:.1f}"
        rows.extend(got)
        say(table(got))
    head = sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip()
    out = args.out or unused(
        Path(__file__).resolve().parent
        / "results"
        / time.strftime("%Y-%m-%d-%H%M-ab.json", time.gmtime())
    )
    write_json(rows, out, {"base": args.base, "head": head})
    print(f"after ({head}) against before ({args.base}); ratio < 1: faster\n")
    print(table(rows))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
