"""The command line: parse, call the core (reprobox.api), render a result, map errors to exit codes.

Exit codes (SPEC): 0 ok / reproduced / identical; 1 differs; 2 usage or bad input; 3 other errors.
Progress goes to stderr, results to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Optional

import click

from . import __version__
from .errors import ReproboxError
from .termsafe import clean, escape_json, field

EXIT_DIFFERS = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


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


def _echo(text: str, *, err: bool = False, nl: bool = True, prefix: str = "",
          colors: bool = False) -> None:
    """Every line the CLI prints goes through here: text that may hold values from a capture or
    a rerun is cleaned of escape sequences, control, bidi and invisible characters
    (:mod:`reprobox.termsafe`). Only ``prefix``, reprobox's own styling, keeps its colours; with
    ``colors``, SGR colour codes of a renderer that escapes every value itself are kept too."""
    click.echo(prefix + clean(text, keep_colors=colors), err=err, nl=nl)


def _warn(message: str) -> None:
    _echo(message, err=True, prefix=click.style("warning: ", fg="yellow", bold=True))


def _print_json(obj: Any) -> None:
    """JSON on stdout: exact data, with the characters a terminal would obey written as \\u
    escapes (json.dumps already escapes C0; DEL, C1, bidi and invisible ones are added)."""
    click.echo(escape_json(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False,
                                      default=str)))


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
            from .redact import redact_text

            _echo(redact_text(exc.message), err=True,
                  prefix=click.style("error: ", fg="red", bold=True))
            if exc.hint:
                _echo(redact_text(exc.hint), err=True, prefix=click.style("  fix: ", fg="cyan"))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: nothing was left half-written", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                _echo("error: the disk is full: " + str(exc), err=True)
                click.echo("  fix: free some space and run the command again; nothing was "
                           "half-written", err=True)
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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # log lines quote commands and paths too
        handler.setFormatter(_CleanFormatter("%(name)s: %(message)s"))
    ctx.obj = _Progress(quiet)


def _progress() -> _Progress:
    return click.get_current_context().find_root().obj or _Progress(False)


# --------------------------------------------------------------------------- capture


def _record_options(f: Any) -> Any:
    """The options `capture` and `record` share (each adds its own around them)."""
    for option in reversed((
        click.option("--no-lock", is_flag=True,
                     help="Skip the hashed lock (run `reprobox lock` later)."),
        click.option("--build", "do_build", is_flag=True,
                     help="Build the container image right away."),
        click.option("--allow-secret-in-patch", is_flag=True,
                     help="Record the uncommitted change even where it looks like it holds a "
                          "secret."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON object instead of the id."),
        click.option("--system-package", "system_packages", multiple=True, metavar="NAME",
                     help="An OS package the run needs that capture cannot see; repeatable."),
    )):
        f = option(f)
    return f


@main.command()
@click.option("--name", help="A name to refer to the experiment by (default: the script's name).")
@click.option("--cmd", "command",
              help='The command that produced the results, e.g. "python train.py".')
@click.option("--metrics", "metrics_files", multiple=True, metavar="PATH",
              help="Metrics file (JSON, YAML, CSV/TSV); repeatable.")
@click.option("--output", "outputs", multiple=True, metavar="PATH",
              help="Output file whose sha256 a rerun must match; repeatable.")
@click.option("--python", metavar="PATH",
              help="Interpreter to fingerprint (default: the active environment's).")
@_record_options
@click.option("--exit-status", type=int, default=None, metavar="N",
              help="The exit status the command ended with (`reprobox run` compares it).")
def capture(name: Optional[str], command: Optional[str], metrics_files: tuple[str, ...],
            outputs: tuple[str, ...], python: Optional[str], no_lock: bool, do_build: bool,
            allow_secret_in_patch: bool, as_json: bool, system_packages: tuple[str, ...],
            exit_status: Optional[int]) -> None:
    """Record the environment, code, data and results of a run under .reprobox/."""
    _capture(name=name, command=command, metrics_files=metrics_files, outputs=outputs,
             python=python, no_lock=no_lock, do_build=do_build,
             allow_secret_in_patch=allow_secret_in_patch, as_json=as_json,
             system_packages=system_packages, exit_status=exit_status, record_argv=None)


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--name", help="A name to refer to the experiment by (default: the script's name).")
@click.option("--metrics", "metrics_files", multiple=True, metavar="PATH",
              help="Metrics file the command writes (JSON, YAML, CSV/TSV); repeatable.")
@click.option("--output", "outputs", multiple=True, metavar="PATH",
              help="Output file whose sha256 a rerun must match; repeatable.")
@click.option("--python", metavar="PATH",
              help="Interpreter of the environment to run in (default: the active one).")
@_record_options
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def record(name: Optional[str], metrics_files: tuple[str, ...], outputs: tuple[str, ...],
           python: Optional[str], no_lock: bool, do_build: bool, allow_secret_in_patch: bool,
           as_json: bool, system_packages: tuple[str, ...], argv: tuple[str, ...]) -> None:
    """Run CMD in the target environment, then capture what it really used.

    \b
    reprobox record [capture options] -- CMD ARGS...
    Records the exit status, wall time, peak memory, the modules imported and the shared
    libraries loaded (mapped to packages and OS packages). Exits 0 once captured, whatever
    the command's status.
    """
    _capture(name=name, command=None, metrics_files=metrics_files, outputs=outputs,
             python=python, no_lock=no_lock, do_build=do_build,
             allow_secret_in_patch=allow_secret_in_patch, as_json=as_json,
             system_packages=system_packages, exit_status=None, record_argv=list(argv))


def _capture(*, name: Optional[str], command: Optional[str], metrics_files: tuple[str, ...],
             outputs: tuple[str, ...], python: Optional[str], no_lock: bool, do_build: bool,
             allow_secret_in_patch: bool, as_json: bool, system_packages: tuple[str, ...],
             exit_status: Optional[int], record_argv: Optional[list[str]]) -> None:
    from .pipeline import capture_experiment
    from .store import Store, find_root

    progress = _progress()
    root = find_root()
    outcome = capture_experiment(
        root, name=name, command=command, metrics_files=metrics_files, outputs=outputs,
        python=python, lock=not no_lock, progress=progress,
        allow_secret_in_patch=allow_secret_in_patch, system_packages=system_packages,
        exit_status=exit_status, record_argv=record_argv, command_stdout_to_stderr=as_json,
    )
    for w in outcome.warnings:
        _warn(w)
    data = outcome.to_dict()
    if do_build:
        from .build import build_experiment

        result = build_experiment(Store(root), outcome.record, progress=progress)
        data["image"] = result.tag
    if as_json:
        _print_json(data)
    else:
        exp = outcome.record.experiment
        progress(
            f"captured {exp.name}: {data['packages']} packages, {data['system_packages']} system "
            f"packages, "
            + (f"{data['conda_packages']} conda packages, " if "conda_packages" in data else "")
            + f"{'locked' if outcome.locked else 'not locked'}"
            + ("" if outcome.created_new else " (identical to an existing capture)")
            + (f"; the command exited with status {outcome.run.exit_status}"
               if outcome.run is not None else "")
        )
        _echo(exp.id)


# --------------------------------------------------------------------------- ls / show


@main.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(as_json: bool) -> None:
    """List the recorded experiments, oldest first."""
    from .store import open_store

    store = open_store()
    good, skipped = store.scan(report=False)
    for bad in skipped:  # one bad folder is named and skipped, never breaks the list
        _warn(str(bad))
    rows: list[dict[str, Any]] = []
    for s in good:
        exp, env = s.experiment, s.environment
        rows.append({
            "id": exp.id, "name": exp.name, "created": exp.created,
            "python": env.interpreter.version, "packages": len(env.packages),
            "command": exp.command or "", "image": s.image or "",
            "commit": exp.git.commit[:10] + ("+dirty" if exp.git.dirty else ""),
        })
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo('no experiments yet: record one with `reprobox capture --cmd "python train.py"`',
                   err=True)
        return
    header: tuple[str, ...] = ("ID", "NAME", "CREATED", "PYTHON", "PKGS", "COMMIT", "COMMAND")
    table: list[tuple[str, ...]] = [header] + [
        (field(r["id"]), field(r["name"]), field(r["created"]), field(r["python"]),
         field(r["packages"]), field(r["commit"]), field(r["command"])[:50]) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        _echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@main.command()
@click.argument("exp")
@click.option("--json", "as_json", is_flag=True)
def show(exp: str, as_json: bool) -> None:
    """Show one experiment."""
    from .api import _stored
    from .store import open_store

    stored = _stored(open_store(warn=_warn), exp)
    e, env = stored.experiment, stored.environment
    if as_json:
        _print_json({"experiment": e.to_dict(), "environment": env.to_dict(),
                     "path": str(stored.path), "image": stored.image})
        return
    f = field  # every value from the capture: one line, nothing a terminal would obey
    hw, interp, os_ = env.hardware, env.interpreter, env.os
    lines = [
        f"experiment  {f(e.id)}  ({f(e.name)})",
        f"created     {f(e.created)}  by reprobox {f(e.tool_version)}",
        f"command     {f(e.command or '-')}  [{f(e.command_kind)}]  in {f(e.cwd)}",
        f"git         {f(e.git.commit)}" + (f" on {f(e.git.branch)}" if e.git.branch else "")
        + (f"  dirty ({f(e.git.patch)})" if e.git.dirty else "")
        + (f"  remote {f(e.git.remote)}" if e.git.remote else ""),
        f"python      {f(interp.implementation)} {f(interp.version)} "
        f"({f(interp.kind or 'unknown kind')}, {f(interp.platform or '?')})",
        f"os          {f(os_.pretty_name or os_.id or '?')}, kernel {f(os_.kernel or '?')}, "
        f"glibc {f(os_.glibc or '?')}, {f(os_.arch or '?')}",
        f"packages    {len(env.packages)} Python, {len(env.system_packages)} system"
        + (f", {len(env.conda.packages)} conda" if env.conda is not None else ""),
        f"hardware    {f(hw.cpu_model or '?')}, {f(hw.cpu_cores or '?')} CPUs"
        + (f", {len(hw.gpus)} GPU(s): {f(hw.gpus[0].name)}" if hw.gpus else ", no GPU")
        + (f", CUDA {f(hw.cuda_runtime)}" if hw.cuda_runtime else ""),
        f"env digest  {f(e.environment_digest)}",
        f"image       {f(stored.image or '-')}",
    ]
    if e.run is not None:
        r = e.run
        status = "unknown" if r.exit_status is None else f(r.exit_status)
        lines.append(
            f"run         exit status {status} ({f(r.source)})"
            + (f", {f(r.wall_seconds)} s" if r.wall_seconds is not None else "")
            + (f", peak {f(r.peak_memory_kib)} KiB" if r.peak_memory_kib is not None else "")
            + (f", {len(r.modules)} distributions imported, {len(r.libraries)} libraries loaded"
               if r.source == "recorded" else ""))
    if e.dvc:
        lines.append(f"dvc         {len(e.dvc.outputs)} outputs, stages "
                     f"{', '.join(f(s) for s in e.dvc.stages)}")
    for mfile, values in sorted(e.metrics.items()):
        shown = ", ".join(f"{f(k)}={f(v)}" for k, v in sorted(values.items())[:8])
        lines.append(f"metrics     {f(mfile)}: {shown}")
    for out in e.outputs:
        lines.append(f"output      {f(out.path)}  sha256:{f(out.sha256[:16])}  {f(out.size)} bytes")
    if e.env:
        lines.append("env vars    " + " ".join(f"{f(k)}={f(v)}" for k, v in sorted(e.env.items())))
    # File names are shown as git would quote them: an invisible or control character in a name
    # becomes visible instead of vanishing, so two names that differ never look the same.
    files = sorted(_quoted_name(p.name) for p in stored.path.iterdir()
                   if not p.name.startswith("."))
    lines.append(f"files       {f(stored.path)}: {', '.join(files)}")
    _echo("\n".join(lines))


def _quoted_name(name: str) -> str:
    """A file name for display: as is when clean, else Python's escaped form (``'a\\x1bb'``)."""
    return name if field(name) == name else ascii(name)


# --------------------------------------------------------------------------- lock / build / base


@main.command("lock")
@click.argument("exp")
@click.option("--platform", type=click.Choice(["linux/amd64", "linux/arm64"]),
              help="Re-resolve a capture made on another OS for this Linux platform.")
def lock_cmd(exp: str, platform: Optional[str]) -> None:
    """(Re)write requirements.lock and pylock.toml with hashes."""
    from . import api

    result = api.lock(exp, platform=platform, progress=_progress())
    for w in result.warnings:
        _warn(w)
    for change in result.changed_versions:
        _warn(f"version changed for {platform}: {change}")
    _echo("wrote " + ", ".join(sorted(result.files)))
    if result.resealed:
        _warn(f"the id seals every file of a capture: experiment {result.previous_id} is now "
              f"{result.id} (commit the new folder; the old one was removed)")
    _echo(result.id)


def _select_engine(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    if value is not None:
        from .build.engine import select_engine

        select_engine(value)


def _engine_option(f: Any) -> Any:
    """--engine docker|podman: the container engine (default: Docker when its daemon answers,
    else Podman when it works here)."""
    return click.option("--engine", type=click.Choice(["auto", "docker", "podman"]),
                        default=None, expose_value=False, callback=_select_engine,
                        is_eager=True, help="Container engine (default: auto: Docker when its "
                        "daemon answers, else Podman).")(f)


@main.command("build")
@click.argument("exp")
@_engine_option
@click.option("--tag", help="Image tag (default: reprobox/<repo>:<id>).")
@click.option("--base-image", help="Base image instead of python:X.Y.Z-slim-<codename> (default: "
              "base-image in ~/.config/reprobox/config.toml, else from the capture).")
@click.option("--network", help="Network mode for the build (default: the engine's default).")
@click.option("--dry-run", is_flag=True, help="Print the Dockerfile, build nothing.")
@click.option("--no-cache", is_flag=True, help="Ignore the layer cache (a clean rebuild).")
def build_cmd(exp: str, tag: Optional[str], base_image: Optional[str], network: Optional[str],
              dry_run: bool, no_cache: bool) -> None:
    """Build the container image of an experiment; prints its tag last."""
    from . import api

    result = api.build(exp, tag=tag, base_image=base_image, network=network, dry_run=dry_run,
                       no_cache=no_cache, progress=_progress())
    if dry_run:
        _echo(result.dockerfile, nl=False)
        return
    _echo(result.tag)


@main.command("base")
@click.option("--python", "python_version", required=True, metavar="X.Y.Z",
              help="Exact Python version of the image.")
@click.option("--os", "codename", default="bookworm", show_default=True,
              help="Debian codename of the image.")
def base_cmd(python_version: str, codename: str) -> None:
    """Build a python:X.Y.Z-slim-CODENAME base image with no registry access."""
    import re

    from .build import build_base

    if not re.fullmatch(r"\d+\.\d+\.\d+", python_version):
        raise click.BadParameter(f"{python_version!r} is not an exact release such as 3.11.7",
                                 param_hint="--python")
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,31}", codename):
        raise click.BadParameter(f"{codename!r} is not a Debian codename such as bookworm",
                                 param_hint="--os")

    _echo(build_base(python_version, codename, progress=_progress()))


# --------------------------------------------------------------------------- run / verify


def _verdict(ctx: click.Context, result: Any, as_json: bool, ok: bool) -> None:
    """Print a run or verify report (text or JSON) and exit 0 when ``ok``, else 1."""
    if as_json:
        _print_json(result.to_dict())
    else:
        _echo(result.render_text())
    ctx.exit(0 if ok else EXIT_DIFFERS)


def _backend_option(f: Any) -> Any:
    return click.option("--backend", type=click.Choice(["auto", "docker", "venv", "conda"]),
                        default="auto", show_default=True,
                        help="Where to rebuild the environment.")(f)


def _container_options(f: Any) -> Any:
    """--pids-limit / --memory / --gpus: what the rerun's container may use."""
    f = click.option("--gpus", metavar="all|N|IDS",
                     help="Give the container GPUs (all, a count, or device ids such as 0,1); "
                     "without it a GPU capture reruns on the CPU.")(f)
    f = click.option("--memory", metavar="SIZE",
                     help="Memory limit of the container (e.g. 8g); default: none.")(f)
    return click.option("--pids-limit", type=int, default=4096, show_default=True,
                        help="Most processes and threads the container may hold.")(f)


def _limits(pids_limit: int, memory: Optional[str], gpus: Optional[str]) -> Any:
    from .backends import ContainerLimits

    return ContainerLimits(pids_limit=pids_limit, memory=memory, gpus=gpus)


@main.command("run")
@click.argument("exps", metavar="EXP...", nargs=-1)
@click.option("--all", "all_experiments", is_flag=True, help="Every recorded experiment.")
@click.option("--on", "on", type=click.Choice(["local", "slurm", "kubernetes"]),
              help="Fan the reproductions out: here, as one Slurm job array, or as Kubernetes "
              "Jobs (default with several EXPs: local).")
@click.option("--jobs", type=int, help="How many at a time (local: default half the CPUs; "
              "slurm: the array throttle %N).")
@click.option("--dry-run", is_flag=True,
              help="Print what would be submitted (commands, sbatch script, Job manifests).")
@click.option("--timeout", type=float, metavar="SECONDS",
              help="Fan-out: give up on what has no verdict after this long.")
@click.option("--repo", metavar="URL|PATH", help="Fan-out: the repository the nodes or pods "
              "clone (slurm default: this one, on a shared filesystem; kubernetes: origin).")
@click.option("--namespace", default="default", show_default=True,
              help="Kubernetes namespace of the Jobs.")
@click.option("--partition", help="Slurm partition of the job array.")
@click.option("--time-limit", metavar="TIME", help="Slurm time limit per task (e.g. 2:00:00).")
@_engine_option
@_backend_option
@_container_options
@click.option("--dvc-remote", metavar="URL",
              help="DVC remote to pull the data from, trusted with your credentials (the "
              "checkout's own .dvc/config remote is used only when it equals a remote of your "
              "DVC global/system configuration).")
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="Relative tolerance for metrics and the numbers of CSV/JSON outputs.")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="Absolute tolerance for metrics and the numbers of CSV/JSON outputs.")
@click.option("--ignore-output", "ignore_outputs", multiple=True, metavar="PATH",
              help="Leave this output (or everything under this folder) out of the verdict; "
              "repeatable.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a system package could not be had at its recorded version "
              "(by default the verdict lists each substitution and exits 0).")
@click.option("--keep", is_flag=True, help="Keep the checkout (and print where it is).")
@click.option("--network", help="Container network for the command (default: bridge; "
              "`none` for a hermetic run).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run_cmd(ctx: click.Context, exps: tuple[str, ...], backend: str, rtol: float, atol: float,
            keep: bool, network: Optional[str], as_json: bool, pids_limit: int,
            memory: Optional[str], gpus: Optional[str], dvc_remote: Optional[str],
            all_experiments: bool, on: Optional[str], jobs: Optional[int], dry_run: bool,
            timeout: Optional[float], repo: Optional[str], namespace: str,
            partition: Optional[str], time_limit: Optional[str],
            ignore_outputs: tuple[str, ...] = (), strict: bool = False) -> None:
    """Reproduce experiments: exit 0 all reproduced (also with substitutions, unless --strict),
    1 any differs or failed.

    One EXP: rerun it here and print its report. Several, --all or --on: fan them out and print
    one line per experiment and a summary (JSON with --json)."""
    from . import api

    if rtol < 0 or atol < 0:
        raise click.BadParameter("tolerances must be >= 0", param_hint="--rtol/--atol")
    _term_as_interrupt(ctx)
    if len(exps) != 1 or all_experiments or on or dry_run or jobs is not None:
        if keep:
            raise click.BadParameter("--keep applies to one experiment run here",
                                     param_hint="--keep")
        run_args = [*(["--backend", backend] if backend != "auto" else []),
                    *(["--rtol", repr(rtol)] if rtol else []),
                    *(["--atol", repr(atol)] if atol else []),
                    *(["--network", network] if network else []),
                    "--pids-limit", str(pids_limit), *(["--memory", memory] if memory else []),
                    *(["--gpus", gpus] if gpus else []),
                    *(["--dvc-remote", dvc_remote] if dvc_remote else []),
                    *[arg for path in ignore_outputs for arg in ("--ignore-output", path)],
                    *(["--strict"] if strict else [])]
        result = api.fan_out(exps, all_experiments=all_experiments, on=on or "local",
                             jobs=jobs, dry_run=dry_run, run_args=run_args, timeout=timeout,
                             repo=repo, namespace=namespace, gpus=gpus, partition=partition,
                             time_limit=time_limit, progress=_progress())
        if isinstance(result, str):
            _echo(result, nl=False)
            return
        if as_json:
            _print_json(result.to_dict())
        else:
            _echo(result.render_text())
        ctx.exit(0 if result.ok else EXIT_DIFFERS)
    exp = exps[0]
    record = api.run(exp, backend=backend, rtol=rtol, atol=atol, keep=keep, network=network,
                     progress=_progress(), limits=_limits(pids_limit, memory, gpus),
                     dvc_remote=dvc_remote, ignore_outputs=tuple(ignore_outputs),
                     strict=strict)
    _verdict(ctx, record, as_json, record.ok)


def _term_as_interrupt(ctx: click.Context) -> None:
    """SIGTERM (a scheduler cancelling the job, a timeout) ends a run like Ctrl-C: the container
    is removed and the checkout cleaned up instead of being left behind. The previous handler is
    back when the command ends, so a program that calls the CLI in-process (and the processes it
    forks later) keeps its own."""
    import signal

    def _raise(_signo: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (an embedding application): leave it alone
        return
    ctx.call_on_close(lambda: signal.signal(
        signal.SIGTERM, previous if previous is not None else signal.SIG_DFL))


@main.command("verify")
@click.argument("exp")
@_engine_option
@_backend_option
@_container_options
@click.option("--strict", is_flag=True,
              help="Exit 1 when a system package could not be had at its recorded version.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify_cmd(ctx: click.Context, exp: str, backend: str, as_json: bool, pids_limit: int,
               memory: Optional[str], gpus: Optional[str], strict: bool = False) -> None:
    """Rebuild the environment, fingerprint it from inside, compare: exit 0 identical, 1 differs."""
    from . import api

    report = api.verify(exp, backend=backend, progress=_progress(),
                        limits=_limits(pids_limit, memory, gpus), strict=strict)
    _verdict(ctx, report, as_json, report.ok)


@main.command("push")
@click.argument("exp")
@_engine_option
@click.option("--registry", metavar="HOST[:PORT]/NAMESPACE",
              help="Registry to push to (default: [registry] default in "
              "~/.config/reprobox/config.toml; never one named by a capture).")
@click.option("--json", "as_json", is_flag=True)
def push_cmd(exp: str, registry: Optional[str], as_json: bool) -> None:
    """Push the experiment's image (built first when needed) and record it in images.json."""
    from . import registry as reg
    from .store import open_store

    store = open_store(warn=_warn)
    stored = store.get(exp)
    pub = reg.push(store, stored, registry, progress=_progress())
    if as_json:
        _print_json({"experiment": stored.id, **pub.to_dict(),
                     "record": str(stored.path / reg.IMAGES_FILE)})
        return
    _echo(f"recorded in {stored.path / reg.IMAGES_FILE} (commit it: a clone pulls by digest)",
          err=True)
    _echo(pub.reference)


# --------------------------------------------------------------------------- diff / pr


@main.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True)
@click.option("--exit-code", is_flag=True, help="Exit 1 when the environments differ.")
@click.option("--python", metavar="PATH", help="With one EXP: the interpreter to compare with.")
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: Optional[str], fmt: str, exit_code: bool,
             python: Optional[str]) -> None:
    """Environment diff between two experiments (B defaults to the current environment)."""
    from . import api
    from .diff import render_json, render_markdown, render_text

    d = api.diff(a, b, python=python)
    if fmt == "json":
        _echo(render_json(d), nl=False)
    elif fmt == "markdown":
        _echo(render_markdown(d), nl=False)
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        _echo(render_text(d, color=color), nl=False, colors=color)
    ctx.exit(EXIT_DIFFERS if exit_code and not d.empty else 0)


@main.command("pr")
@click.argument("exp")
@click.option("--base", "base_ref", help="Experiment to compare with (e.g. the base branch's).")
def pr_cmd(exp: str, base_ref: Optional[str]) -> None:
    """Markdown for a pull-request comment: environment summary and diff against the base."""
    from .api import _stored
    from .pr import pr_markdown
    from .store import open_store

    store = open_store()
    stored = _stored(store, exp)
    base = _stored(store, base_ref) if base_ref else None
    _echo(pr_markdown(stored, base, repo_root=store.root), nl=False)


# --------------------------------------------------------------------------- doctor


@main.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Tell what this machine can do: engine, BuildKit, git, DVC, GPUs, index reachability."""
    from .doctor import diagnose

    checks = diagnose()
    if as_json:
        _print_json([c.to_dict() for c in checks])
        return
    for c in checks:
        mark = click.style("ok  ", fg="green") if c.ok else click.style("no  ", fg="yellow")
        _echo(f"{c.name:<14} {c.detail}", prefix=mark)
        if not c.ok and c.fix:
            _echo(f"    fix: {c.fix}")


if __name__ == "__main__":  # pragma: no cover
    main()
