"""The command line: parse, call the core (reprobox.api), render a result, map errors to exit codes.

Exit codes (SPEC): 0 ok / reproduced / identical; 1 differs; 2 usage or bad input; 3 other errors.
Progress goes to stderr, results to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Optional

import click

from . import __version__, api
from .errors import INTERRUPTED, ReproboxError
from .redact import redact_text
from .render import ERR, PROGRESS, WARNING, Piece, render
from .termsafe import clean

if TYPE_CHECKING:
    from .backends import ContainerLimits

EXIT_DIFFERS = 1
EXIT_ERROR = 3


def _quiet_stdout() -> None:
    """Standard output to /dev/null: the pipe is closed, and the exit's flush must not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _Progress:
    """Condensed progress on stderr, with the time since the command started."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.t0
        _echo(message, err=True, prefix=click.style(f"[{elapsed:6.1f}s] ", dim=True))


def _echo(
    text: str, *, err: bool = False, nl: bool = True, prefix: str = "", colors: bool = False
) -> None:
    """Every line the CLI prints goes through here: text that may hold values from a capture or
    a rerun is cleaned of escape sequences, control, bidi and invisible characters
    (:mod:`reprobox.termsafe`). Only ``prefix``, reprobox's own styling, keeps its colours; with
    ``colors``, SGR colour codes of a renderer that escapes every value itself are kept too."""
    click.echo(prefix + clean(text, keep_colors=colors), err=err, nl=nl)


def _warn(message: str) -> None:
    _echo(message, err=True, prefix=click.style("warning: ", fg="yellow", bold=True))


#: The status column of a piece that has one (doctor): its text and colour.
_MARKS = {"ok": ("ok  ", "green"), "no": ("no  ", "yellow")}


def _print(pieces: tuple[Piece, ...]) -> None:
    """Print what :func:`reprobox.render.render` made of a result, in its order: stdout for the
    result itself (text or JSON), stderr for warnings and notes, the progress channel for a
    one-line summary (``-q`` hides it)."""
    for piece in pieces:
        if piece.to == WARNING:
            _warn(piece.text)
        elif piece.to == PROGRESS:
            _progress()(piece.text)
        else:
            prefix = click.style(*_MARKS[piece.mark]) if piece.mark else ""
            _echo(
                piece.text,
                err=piece.to == ERR,
                nl=piece.newline,
                prefix=prefix,
                colors=piece.colors,
            )


def _show(result: Any, as_json: bool = False) -> None:
    _print(render(result, "json" if as_json else "text"))


class _CleanFormatter(logging.Formatter):
    """Log records cleaned like every other line the CLI prints (``-v`` logs commands, paths)."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))


class ReproboxGroup(click.Group):
    """Catches every ReproboxError in one place: one message naming the fix, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReproboxError as exc:
            _echo(
                redact_text(exc.message),
                err=True,
                prefix=click.style("error: ", fg="red", bold=True),
            )
            if exc.hint:
                _echo(redact_text(exc.hint), err=True, prefix=click.style("  fix: ", fg="cyan"))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\n" + INTERRUPTED, err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == 32:  # EPIPE: the reader went away (`reprobox ls | head -1`)
                _quiet_stdout()
                ctx.exit(141)  # as a command ended by SIGPIPE; the work itself is done
            if exc.errno == 28:  # ENOSPC
                _echo("error: the disk is full: " + str(exc), err=True)
                click.echo(
                    "  fix: free some space and run the command again; nothing was half-written",
                    err=True,
                )
                ctx.exit(EXIT_ERROR)
            self._internal(ctx, exc)
        except Exception as exc:  # a bug: say so plainly, traceback only with -v
            self._internal(ctx, exc)

    @staticmethod
    def _internal(ctx: click.Context, exc: BaseException) -> None:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise exc
        _echo(f"error: internal error ({type(exc).__name__}: {exc})", err=True)
        click.echo("  fix: rerun with `reprobox -v ...` for the traceback and report it", err=True)
        ctx.exit(EXIT_ERROR)


@click.group(cls=ReproboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reprobox")
@click.option("-v", "--verbose", is_flag=True, help="Log every external command.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Capture the exact environment of a run, rebuild it anywhere, prove it reproduces."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:  # log lines quote commands and paths too
        handler.setFormatter(_CleanFormatter("%(name)s: %(message)s"))
    ctx.obj = _Progress(quiet)


def _progress() -> _Progress:
    return click.get_current_context().find_root().obj or _Progress(False)


# --------------------------------------------------------------------------- capture


def _record_options(f: Any) -> Any:
    """The options `capture` and `record` share (each adds its own around them)."""
    for option in reversed(
        (
            click.option(
                "--no-lock", is_flag=True, help="Skip the hashed lock (run `reprobox lock` later)."
            ),
            click.option(
                "--build", "do_build", is_flag=True, help="Build the container image right away."
            ),
            click.option(
                "--allow-secret-in-patch",
                is_flag=True,
                help="Record the uncommitted change even where it looks like it holds a secret.",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print a JSON object instead of the id."
            ),
            click.option(
                "--system-package",
                "system_packages",
                multiple=True,
                metavar="NAME",
                help="An OS package the run needs that capture cannot see; repeatable.",
            ),
        )
    ):
        f = option(f)
    return f


@main.command()
@click.option("--name", help="A name to refer to the experiment by (default: the script's name).")
@click.option(
    "--cmd", "command", help='The command that produced the results, e.g. "python train.py".'
)
@click.option(
    "--metrics",
    "metrics_files",
    multiple=True,
    metavar="PATH",
    help="Metrics file (JSON, YAML, CSV/TSV); repeatable.",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="Output file whose sha256 a rerun must match; repeatable.",
)
@click.option(
    "--python",
    metavar="PATH",
    help="Interpreter to fingerprint (default: the active environment's).",
)
@_record_options
@click.option(
    "--exit-status",
    type=int,
    default=None,
    metavar="N",
    help="The exit status the command ended with (`reprobox run` compares it).",
)
def capture(
    name: Optional[str],
    command: Optional[str],
    metrics_files: tuple[str, ...],
    outputs: tuple[str, ...],
    python: Optional[str],
    no_lock: bool,
    do_build: bool,
    allow_secret_in_patch: bool,
    as_json: bool,
    system_packages: tuple[str, ...],
    exit_status: Optional[int],
) -> None:
    """Record the environment, code, data and results of a run under .reprobox/."""
    _capture(
        name=name,
        command=command,
        metrics_files=metrics_files,
        outputs=outputs,
        python=python,
        no_lock=no_lock,
        do_build=do_build,
        allow_secret_in_patch=allow_secret_in_patch,
        as_json=as_json,
        system_packages=system_packages,
        exit_status=exit_status,
        record_argv=None,
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--name", help="A name to refer to the experiment by (default: the script's name).")
@click.option(
    "--metrics",
    "metrics_files",
    multiple=True,
    metavar="PATH",
    help="Metrics file the command writes (JSON, YAML, CSV/TSV); repeatable.",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="Output file whose sha256 a rerun must match; repeatable.",
)
@click.option(
    "--python",
    metavar="PATH",
    help="Interpreter of the environment to run in (default: the active one).",
)
@_record_options
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def record(
    name: Optional[str],
    metrics_files: tuple[str, ...],
    outputs: tuple[str, ...],
    python: Optional[str],
    no_lock: bool,
    do_build: bool,
    allow_secret_in_patch: bool,
    as_json: bool,
    system_packages: tuple[str, ...],
    argv: tuple[str, ...],
) -> None:
    """Run CMD in the target environment, then capture what it really used.

    \b
    reprobox record [capture options] -- CMD ARGS...
    Records the exit status, wall time, peak memory, the modules imported and the shared
    libraries loaded (mapped to packages and OS packages). Exits 0 once captured, whatever
    the command's status.
    """
    _capture(
        name=name,
        command=None,
        metrics_files=metrics_files,
        outputs=outputs,
        python=python,
        no_lock=no_lock,
        do_build=do_build,
        allow_secret_in_patch=allow_secret_in_patch,
        as_json=as_json,
        system_packages=system_packages,
        exit_status=None,
        record_argv=list(argv),
    )


def _capture(
    *,
    name: Optional[str],
    command: Optional[str],
    metrics_files: tuple[str, ...],
    outputs: tuple[str, ...],
    python: Optional[str],
    no_lock: bool,
    do_build: bool,
    allow_secret_in_patch: bool,
    as_json: bool,
    system_packages: tuple[str, ...],
    exit_status: Optional[int],
    record_argv: Optional[list[str]],
) -> None:
    captured = api.record(
        record_argv,
        name=name,
        command=command,
        metrics_files=metrics_files,
        outputs=outputs,
        python=python,
        lock=not no_lock,
        build=do_build,
        progress=_progress(),
        warn=_warn,
        allow_secret_in_patch=allow_secret_in_patch,
        system_packages=system_packages,
        exit_status=exit_status,
        command_stdout_to_stderr=as_json,
    )
    _show(captured, as_json)


# --------------------------------------------------------------------------- ls / show


@main.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(as_json: bool) -> None:
    """List the recorded experiments, oldest first."""
    _show(api.ls(), as_json)


@main.command()
@click.argument("exp")
@click.option("--json", "as_json", is_flag=True)
def show(exp: str, as_json: bool) -> None:
    """Show one experiment."""
    _show(api.show(exp, warn=_warn), as_json)


# --------------------------------------------------------------------------- lock / build / base


@main.command("lock")
@click.argument("exp")
@click.option(
    "--platform",
    type=click.Choice(["linux/amd64", "linux/arm64"]),
    help="Re-resolve a capture made on another OS for this Linux platform.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the id.")
def lock_cmd(exp: str, platform: Optional[str], as_json: bool) -> None:
    """(Re)write requirements.lock and pylock.toml with hashes."""
    _show(api.lock(exp, platform=platform, progress=_progress()), as_json)


def _select_engine(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    if value is not None:
        from .engine import select_engine  # lazy: ~14 ms, only when --engine is given

        select_engine(value)


def _engine_option(f: Any) -> Any:
    """--engine docker|podman: the container engine (default: Docker when its daemon answers,
    else Podman when it works here)."""
    return click.option(
        "--engine",
        type=click.Choice(["auto", "docker", "podman"]),
        default=None,
        expose_value=False,
        callback=_select_engine,
        is_eager=True,
        help="Container engine (default: auto: Docker when its daemon answers, else Podman).",
    )(f)


@main.command("build")
@click.argument("exp")
@_engine_option
@click.option("--tag", help="Image tag (default: reprobox/<repo>:<id>).")
@click.option(
    "--base-image",
    help="Base image instead of python:X.Y.Z-slim-<codename> (default: "
    "base-image in ~/.config/reprobox/config.toml, else from the capture).",
)
@click.option("--network", help="Network mode for the build (default: the engine's default).")
@click.option("--dry-run", is_flag=True, help="Print the Dockerfile, build nothing.")
@click.option("--no-cache", is_flag=True, help="Ignore the layer cache (a clean rebuild).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the tag.")
def build_cmd(
    exp: str,
    tag: Optional[str],
    base_image: Optional[str],
    network: Optional[str],
    dry_run: bool,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Build the container image of an experiment; prints its tag last."""
    _show(
        api.build(
            exp,
            tag=tag,
            base_image=base_image,
            network=network,
            dry_run=dry_run,
            no_cache=no_cache,
            progress=_progress(),
        ),
        as_json,
    )


@main.command("base")
@click.option(
    "--python",
    "python_version",
    required=True,
    metavar="X.Y.Z",
    help="Exact Python version of the image.",
)
@click.option(
    "--os", "codename", default="bookworm", show_default=True, help="Debian codename of the image."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the tag.")
def base_cmd(python_version: str, codename: str, as_json: bool) -> None:
    """Build a python:X.Y.Z-slim-CODENAME base image with no registry access."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", python_version):
        raise click.BadParameter(
            f"{python_version!r} is not an exact release such as 3.11.7", param_hint="--python"
        )
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,31}", codename):
        raise click.BadParameter(
            f"{codename!r} is not a Debian codename such as bookworm", param_hint="--os"
        )
    _show(api.base(python_version, codename, progress=_progress()), as_json)


# --------------------------------------------------------------------------- run / verify


def _verdict(ctx: click.Context, result: Any, as_json: bool) -> None:
    """Print a run, verify or fan-out report (text or JSON) and exit 0 when it is ``ok``
    (reproduced, identical), else 1."""
    _show(result, as_json)
    ctx.exit(0 if result.ok else EXIT_DIFFERS)


def _backend_option(f: Any) -> Any:
    return click.option(
        "--backend",
        type=click.Choice(["auto", "docker", "venv", "conda"]),
        default="auto",
        show_default=True,
        help="Where to rebuild the environment.",
    )(f)


def _container_options(f: Any) -> Any:
    """--pids-limit / --memory / --gpus: what the rerun's container may use."""
    f = click.option(
        "--gpus",
        metavar="all|N|IDS",
        help="Give the container GPUs (all, a count, or device ids such as 0,1); "
        "without it a GPU capture reruns on the CPU.",
    )(f)
    f = click.option(
        "--memory", metavar="SIZE", help="Memory limit of the container (e.g. 8g); default: none."
    )(f)
    return click.option(
        "--pids-limit",
        type=int,
        default=4096,
        show_default=True,
        help="Most processes and threads the container may hold.",
    )(f)


def _limits(pids_limit: int, memory: Optional[str], gpus: Optional[str]) -> ContainerLimits:
    from .backends import ContainerLimits  # lazy: ~130 ms (every backend), run/verify/fan-out only

    return ContainerLimits(pids_limit=pids_limit, memory=memory, gpus=gpus)


@main.command("run")
@click.argument("exps", metavar="EXP...", nargs=-1)
@click.option("--all", "all_experiments", is_flag=True, help="Every recorded experiment.")
@click.option(
    "--on",
    "on",
    type=click.Choice(["local", "slurm", "kubernetes"]),
    help="Fan the reproductions out: here, as one Slurm job array, or as Kubernetes "
    "Jobs (default with several EXPs: local).",
)
@click.option(
    "--jobs",
    type=int,
    help="How many at a time (local: default half the CPUs; slurm: the array throttle %N).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be submitted (commands, sbatch script, Job manifests).",
)
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    help="Fan-out: give up on what has no verdict after this long.",
)
@click.option(
    "--repo",
    metavar="URL|PATH",
    help="Fan-out: the repository the nodes or pods "
    "clone (slurm default: this one, on a shared filesystem; kubernetes: origin).",
)
@click.option(
    "--namespace", default="default", show_default=True, help="Kubernetes namespace of the Jobs."
)
@click.option("--partition", help="Slurm partition of the job array.")
@click.option("--time-limit", metavar="TIME", help="Slurm time limit per task (e.g. 2:00:00).")
@_engine_option
@_backend_option
@_container_options
@click.option(
    "--dvc-remote",
    metavar="URL",
    help="DVC remote to pull the data from, trusted with your credentials (the "
    "checkout's own .dvc/config remote is used only when it equals a remote of your "
    "DVC global/system configuration).",
)
@click.option(
    "--rtol",
    type=float,
    default=0.0,
    show_default=True,
    help="Relative tolerance for metrics and the numbers of CSV/JSON outputs.",
)
@click.option(
    "--atol",
    type=float,
    default=0.0,
    show_default=True,
    help="Absolute tolerance for metrics and the numbers of CSV/JSON outputs.",
)
@click.option(
    "--ignore-output",
    "ignore_outputs",
    multiple=True,
    metavar="PATH",
    help="Leave this output (or everything under this folder) out of the verdict; repeatable.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when a system package could not be had at its recorded version "
    "(by default the verdict lists each substitution and exits 0).",
)
@click.option("--keep", is_flag=True, help="Keep the checkout (and print where it is).")
@click.option(
    "--network",
    help="Container network for the command (default: bridge; `none` for a hermetic run).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run_cmd(
    ctx: click.Context,
    exps: tuple[str, ...],
    backend: str,
    rtol: float,
    atol: float,
    keep: bool,
    network: Optional[str],
    as_json: bool,
    pids_limit: int,
    memory: Optional[str],
    gpus: Optional[str],
    dvc_remote: Optional[str],
    all_experiments: bool,
    on: Optional[str],
    jobs: Optional[int],
    dry_run: bool,
    timeout: Optional[float],
    repo: Optional[str],
    namespace: str,
    partition: Optional[str],
    time_limit: Optional[str],
    ignore_outputs: tuple[str, ...] = (),
    strict: bool = False,
) -> None:
    """Reproduce experiments: exit 0 all reproduced (also with substitutions, unless --strict),
    1 any differs or failed.

    One EXP: rerun it here and print its report. Several, --all or --on: fan them out and print
    one line per experiment and a summary (JSON with --json)."""
    if not (0 <= rtol < math.inf and 0 <= atol < math.inf):  # NaN fails both
        raise click.BadParameter("tolerances must be numbers >= 0", param_hint="--rtol/--atol")
    if network is not None and not network.strip():
        raise click.BadParameter("give a network name, e.g. none or bridge", param_hint="--network")
    _term_as_interrupt(ctx)
    if len(exps) != 1 or all_experiments or on or dry_run or jobs is not None:
        if keep:
            raise click.BadParameter(
                "--keep applies to one experiment run here", param_hint="--keep"
            )
        # what each run would refuse is refused here, once, before any is planned or started
        from .model import grammar  # lazy: the record grammar, for fan-outs only

        _limits(pids_limit, memory, gpus)
        for path in ignore_outputs:
            grammar.relpath("--ignore-output", path, allow_dot=False)
        run_args = [
            *(["--backend", backend] if backend != "auto" else []),
            *(["--rtol", repr(rtol)] if rtol else []),
            *(["--atol", repr(atol)] if atol else []),
            *(["--network", network] if network else []),
            "--pids-limit",
            str(pids_limit),
            *(["--memory", memory] if memory else []),
            *(["--gpus", gpus] if gpus else []),
            *(["--dvc-remote", dvc_remote] if dvc_remote else []),
            *[arg for path in ignore_outputs for arg in ("--ignore-output", path)],
            *(["--strict"] if strict else []),
        ]
        result = api.fan_out(
            exps,
            all_experiments=all_experiments,
            on=on or "local",
            jobs=jobs,
            dry_run=dry_run,
            run_args=run_args,
            timeout=timeout,
            repo=repo,
            namespace=namespace,
            gpus=gpus,
            partition=partition,
            time_limit=time_limit,
            progress=_progress(),
        )
        if isinstance(result, api.FanOutPlan):
            _show(result, as_json)
            return
        _verdict(ctx, result, as_json)
    fan_out_only = [
        flag
        for flag, given in (
            ("--timeout", timeout is not None),
            ("--repo", repo is not None),
            ("--namespace", namespace != "default"),
            ("--partition", partition is not None),
            ("--time-limit", time_limit is not None),
        )
        if given
    ]
    if fan_out_only:  # one experiment run here: they would be ignored without a word
        raise click.BadParameter(
            "applies to a fan-out (several EXPs, --all, --on or --dry-run), not to one "
            "experiment run here",
            param_hint="/".join(fan_out_only),
        )
    record = api.run(
        exps[0],
        backend=backend,
        rtol=rtol,
        atol=atol,
        keep=keep,
        network=network,
        progress=_progress(),
        limits=_limits(pids_limit, memory, gpus),
        dvc_remote=dvc_remote,
        ignore_outputs=tuple(ignore_outputs),
        strict=strict,
    )
    _verdict(ctx, record, as_json)


def _term_as_interrupt(ctx: click.Context) -> None:
    """SIGTERM (a scheduler cancelling the job, a timeout) ends a run like Ctrl-C: the container
    is removed and the checkout cleaned up instead of being left behind. The previous handler is
    back when the command ends, so a program that calls the CLI in-process (and the processes it
    forks later) keeps its own."""

    def _raise(_signo: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (an embedding application): leave it alone
        return
    ctx.call_on_close(
        lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    )


@main.command("verify")
@click.argument("exp")
@_engine_option
@_backend_option
@_container_options
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when a system package could not be had at its recorded version.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    exp: str,
    backend: str,
    as_json: bool,
    pids_limit: int,
    memory: Optional[str],
    gpus: Optional[str],
    strict: bool = False,
) -> None:
    """Rebuild the environment, fingerprint it from inside, compare: exit 0 identical, 1 differs."""
    report = api.verify(
        exp,
        backend=backend,
        progress=_progress(),
        limits=_limits(pids_limit, memory, gpus),
        strict=strict,
    )
    _verdict(ctx, report, as_json)


@main.command("push")
@click.argument("exp")
@_engine_option
@click.option(
    "--registry",
    metavar="HOST[:PORT]/NAMESPACE",
    help="Registry to push to (default: [registry] default in "
    "~/.config/reprobox/config.toml; never one named by a capture).",
)
@click.option("--json", "as_json", is_flag=True)
def push_cmd(exp: str, registry: Optional[str], as_json: bool) -> None:
    """Push the experiment's image (built first when needed) and record it in images.json."""
    _show(api.push(exp, registry=registry, progress=_progress(), warn=_warn), as_json)


# --------------------------------------------------------------------------- diff / pr


@main.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when the environments differ.")
@click.option("--python", metavar="PATH", help="With one EXP: the interpreter to compare with.")
@click.pass_context
def diff_cmd(
    ctx: click.Context, a: str, b: Optional[str], fmt: str, exit_code: bool, python: Optional[str]
) -> None:
    """Environment diff between two experiments (B defaults to the current environment)."""
    d = api.diff(a, b, python=python)
    _print(render(d, fmt, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    ctx.exit(EXIT_DIFFERS if exit_code and not d.empty else 0)


@main.command("pr")
@click.argument("exp")
@click.option("--base", "base_ref", help="Experiment to compare with (e.g. the base branch's).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON object (the markdown in it) instead of the markdown.",
)
def pr_cmd(exp: str, base_ref: Optional[str], as_json: bool) -> None:
    """Markdown for a pull-request comment: environment summary and diff against the base."""
    _show(api.pr(exp, base_ref), as_json)


# --------------------------------------------------------------------------- doctor


@main.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Tell what this machine can do: engine, BuildKit, git, DVC, GPUs, index reachability."""
    _show(api.doctor(), as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
