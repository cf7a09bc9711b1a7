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
        click.echo(click.style(f"[{elapsed:6.1f}s] ", dim=True) + message, err=True)


def _warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True)


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str))


class ReproboxGroup(click.Group):
    """Catches every ReproboxError in one place: one message naming the fix, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReproboxError as exc:
            from .secrets import redact_text

            click.echo(click.style("error: ", fg="red", bold=True) + redact_text(exc.message),
                       err=True)
            if exc.hint:
                click.echo(click.style("  fix: ", fg="cyan") + redact_text(exc.hint), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: nothing was left half-written", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                click.echo("error: the disk is full: " + str(exc), err=True)
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
        click.echo(f"error: internal error ({type(exc).__name__}: {exc})", err=True)
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
    ctx.obj = _Progress(quiet)


def _progress() -> _Progress:
    return click.get_current_context().find_root().obj or _Progress(False)


# --------------------------------------------------------------------------- capture


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
@click.option("--no-lock", is_flag=True, help="Skip the hashed lock (run `reprobox lock` later).")
@click.option("--build", "do_build", is_flag=True, help="Build the container image right away.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the id.")
def capture(name: Optional[str], command: Optional[str], metrics_files: tuple[str, ...],
            outputs: tuple[str, ...], python: Optional[str], no_lock: bool, do_build: bool,
            as_json: bool) -> None:
    """Record the environment, code, data and results of a run under .reprobox/."""
    from .capture import capture_experiment
    from .store import Store, find_root

    progress = _progress()
    root = find_root()
    outcome = capture_experiment(
        root, name=name, command=command, metrics_files=metrics_files, outputs=outputs,
        python=python, lock=not no_lock, progress=progress,
    )
    for w in outcome.warnings:
        _warn(w)
    data = outcome.to_dict()
    if do_build:
        from .build import build_experiment

        result = build_experiment(Store(root), outcome.stored, progress=progress)
        data["image"] = result.tag
    if as_json:
        _print_json(data)
    else:
        exp = outcome.stored.experiment
        progress(
            f"captured {exp.name}: {data['packages']} packages, {data['system_packages']} system "
            f"packages, "
            + (f"{data['conda_packages']} conda packages, " if "conda_packages" in data else "")
            + f"{'locked' if outcome.locked else 'not locked'}"
            + ("" if outcome.created_new else " (identical to an existing capture)")
        )
        click.echo(exp.id)


# --------------------------------------------------------------------------- ls / show


@main.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(as_json: bool) -> None:
    """List the recorded experiments, oldest first."""
    from .store import open_store

    store = open_store()
    rows: list[dict[str, Any]] = []
    for s in store.experiments():
        exp, env = s.experiment, s.environment
        rows.append({
            "id": exp.id, "name": exp.name, "created": exp.created,
            "python": env.interpreter.version, "packages": len(env.packages),
            "command": exp.command or "", "image": exp.image or "",
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
        (str(r["id"]), str(r["name"]), str(r["created"]), str(r["python"]), str(r["packages"]),
         str(r["commit"]), str(r["command"])[:50]) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@main.command()
@click.argument("exp")
@click.option("--json", "as_json", is_flag=True)
def show(exp: str, as_json: bool) -> None:
    """Show one experiment."""
    from .api import _stored
    from .store import open_store

    stored = _stored(open_store(), exp)
    e, env = stored.experiment, stored.environment
    if as_json:
        _print_json({"experiment": e.to_dict(), "environment": env.to_dict(),
                     "path": str(stored.path)})
        return
    lines = [
        f"experiment  {e.id}  ({e.name})",
        f"created     {e.created}  by reprobox {e.tool_version}",
        f"command     {e.command or '-'}  [{e.command_kind}]  in {e.cwd}",
        f"git         {e.git.commit}" + (f" on {e.git.branch}" if e.git.branch else "")
        + (f"  dirty ({e.git.patch})" if e.git.dirty else "")
        + (f"  remote {e.git.remote}" if e.git.remote else ""),
        f"python      {env.interpreter.implementation} {env.interpreter.version} "
        f"({env.interpreter.kind or 'unknown kind'}, {env.interpreter.platform or '?'})",
        f"os          {env.os.pretty_name or env.os.id or '?'}, kernel {env.os.kernel or '?'}, "
        f"glibc {env.os.glibc or '?'}, {env.os.arch or '?'}",
        f"packages    {len(env.packages)} Python, {len(env.system_packages)} system"
        + (f", {len(env.conda.packages)} conda" if env.conda is not None else ""),
        f"hardware    {env.hardware.cpu_model or '?'}, {env.hardware.cpu_cores or '?'} CPUs"
        + (f", {len(env.hardware.gpus)} GPU(s): {env.hardware.gpus[0].name}"
           if env.hardware.gpus else ", no GPU")
        + (f", CUDA {env.hardware.cuda_runtime}" if env.hardware.cuda_runtime else ""),
        f"env digest  {e.environment_digest}",
        f"image       {e.image or '-'}",
    ]
    if e.dvc:
        lines.append(f"dvc         {len(e.dvc.outputs)} outputs, stages {', '.join(e.dvc.stages)}")
    for mfile, values in sorted(e.metrics.items()):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(values.items())[:8])
        lines.append(f"metrics     {mfile}: {shown}")
    for out in e.outputs:
        lines.append(f"output      {out.path}  sha256:{out.sha256[:16]}  {out.size} bytes")
    if e.env:
        lines.append("env vars    " + " ".join(f"{k}={v}" for k, v in sorted(e.env.items())))
    files = sorted(p.name for p in stored.path.iterdir() if not p.name.startswith("."))
    lines.append(f"files       {stored.path}: {', '.join(files)}")
    click.echo("\n".join(lines))


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
    for change in getattr(result, "changed_versions", ()):
        _warn(f"version changed for {platform}: {change}")
    click.echo("wrote " + ", ".join(sorted(result.files)))


@main.command("build")
@click.argument("exp")
@click.option("--tag", help="Image tag (default: reprobox/<repo>:<id>).")
@click.option("--base-image", help="Base image instead of python:X.Y.Z-slim-<codename>.")
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
        click.echo(result.dockerfile, nl=False)
        return
    click.echo(result.tag)


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

    click.echo(build_base(python_version, codename, progress=_progress()))


# --------------------------------------------------------------------------- run / verify


def _verdict(ctx: click.Context, result: Any, as_json: bool, ok: bool) -> None:
    """Print a run or verify report (text or JSON) and exit 0 when ``ok``, else 1."""
    if as_json:
        _print_json(result.to_dict())
    else:
        click.echo(result.render_text())
    ctx.exit(0 if ok else EXIT_DIFFERS)


def _backend_option(f: Any) -> Any:
    return click.option("--backend", type=click.Choice(["auto", "docker", "venv", "conda"]),
                        default="auto", show_default=True,
                        help="Where to rebuild the environment.")(f)


@main.command("run")
@click.argument("exp")
@_backend_option
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="Relative tolerance for metrics.")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="Absolute tolerance for metrics.")
@click.option("--keep", is_flag=True, help="Keep the checkout (and print where it is).")
@click.option("--network", help="Container network for the command (default: bridge; "
              "`none` for a hermetic run).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run_cmd(ctx: click.Context, exp: str, backend: str, rtol: float, atol: float, keep: bool,
            network: Optional[str], as_json: bool) -> None:
    """Reproduce an experiment: exit 0 reproduced, 1 differs."""
    from . import api

    if rtol < 0 or atol < 0:
        raise click.BadParameter("tolerances must be >= 0", param_hint="--rtol/--atol")
    record = api.run(exp, backend=backend, rtol=rtol, atol=atol, keep=keep, network=network,
                     progress=_progress())
    _verdict(ctx, record, as_json, record.reproduced)


@main.command("verify")
@click.argument("exp")
@_backend_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify_cmd(ctx: click.Context, exp: str, backend: str, as_json: bool) -> None:
    """Rebuild the environment, fingerprint it from inside, compare: exit 0 identical, 1 differs."""
    from . import api

    report = api.verify(exp, backend=backend, progress=_progress())
    _verdict(ctx, report, as_json, report.identical)


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
        click.echo(render_json(d), nl=False)
    elif fmt == "markdown":
        click.echo(render_markdown(d), nl=False)
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        click.echo(render_text(d, color=color), nl=False)
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
    click.echo(pr_markdown(stored, base, repo_root=store.root), nl=False)


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
        click.echo(f"{mark}{c.name:<14} {c.detail}")
        if not c.ok and c.fix:
            click.echo(f"    fix: {c.fix}")


if __name__ == "__main__":  # pragma: no cover
    main()
