"""One renderer for every command: a result of :mod:`reprobox.api` becomes human text or JSON.

:func:`render` turns a result into the :class:`Piece` s a command prints, in order: what goes to
stdout (the id, the report, the table, the JSON), the warnings and notes that go to stderr, and
the one-line summary that goes with the progress messages. Both forms come from the same result
object, through the same table of renderers (:func:`_renderers`): ``text`` builds the human form,
``data`` the JSON-able form, ``warnings`` what stderr says with either.

Values from a capture or a rerun are made one-line with :func:`reprobox.termsafe.field` where a
line is composed here; the terminal layer (:mod:`reprobox.cli`) cleans every piece again before
it prints it, and JSON goes out through :func:`json_text`, where the characters a terminal would
obey are ``\\u`` escapes. Some results keep their own human form next to their data, because
other code writes them too (a run report, a fan-out summary, an environment diff in a pull
request): the renderer calls it, so every command still prints through this module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from .api import (
    BaseImage,
    Captured,
    Diagnosis,
    FanOutPlan,
    Listing,
    Locked,
    PrComment,
    Pushed,
    Shown,
)
from .termsafe import escape_json, field

if TYPE_CHECKING:
    from .fanout import Summary
    from .run import RunRecord
    from .verify import VerifyReport
    from .build import BuildResult
    from .build.condaimage import CondaImage
    from .diff import EnvDiff

#: Where a piece goes. ``warning``: stderr behind ``warning:``; ``progress``: stderr with the
#: progress messages (``-q`` hides it).
OUT, ERR, WARNING, PROGRESS = "out", "err", "warning", "progress"
FORMATS = ("text", "json", "markdown")


@dataclass(frozen=True)
class Piece:
    """One thing a command prints, in the order it prints it."""

    text: str
    to: str = OUT
    #: ``ok`` / ``no``: a status column (doctor) the terminal layer styles.
    mark: str = ""
    #: False where the text ends with its own newline (a Dockerfile, markdown, JSON).
    newline: bool = True
    #: The text holds SGR colour codes of a renderer that escaped every value itself.
    colors: bool = False


@dataclass(frozen=True)
class _Renderer:
    text: Callable[[Any, bool], list[Piece]]  # (result, color) -> pieces
    data: Callable[[Any], Any]  # result -> JSON-able
    warnings: Callable[[Any], list[str]] = lambda _result: []
    markdown: Optional[Callable[[Any], str]] = None


def json_text(data: Any) -> str:
    """JSON as every command prints it: sorted keys, two-space indent, trailing newline, the
    characters a terminal would obey written as ``\\u`` escapes (same data, inert text). A value
    that holds a lone surrogate (an undecodable file name) makes everything ``\\u``-escaped, so
    the output stays valid JSON that any terminal or pipe can carry."""
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True, default=str) + "\n"
    return escape_json(text)


def render(result: Any, fmt: str = "text", *, color: bool = False) -> tuple[Piece, ...]:
    """What a command prints for ``result``: ``fmt`` ``text`` (human), ``json``, or
    ``markdown`` (the results that have one: a diff, a pull-request comment)."""
    renderer = _renderer_for(result)
    if fmt == "json":
        return (
            *(Piece(w, WARNING) for w in renderer.warnings(result)),
            Piece(json_text(renderer.data(result)), newline=False),
        )
    if fmt == "markdown":
        if renderer.markdown is None:
            raise ValueError(f"{type(result).__name__} has no markdown form")
        return (Piece(renderer.markdown(result), newline=False),)
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return tuple(renderer.text(result, color))


def data(result: Any) -> Any:
    """The JSON-able form of ``result`` (what ``--json`` prints)."""
    return _renderer_for(result).data(result)


def _renderer_for(result: Any) -> _Renderer:
    table = _renderers()
    for cls in type(result).__mro__:
        found = table.get(_name(cls))
        if found is not None:
            return found
    raise TypeError(f"no renderer for {type(result).__name__}")


# --------------------------------------------------------------------------- capture / record


def _capture_data(c: Captured) -> dict[str, Any]:
    if c.stored is None:  # inside `reprobox run`: the metrics were reported, nothing captured
        return {"id": c.id, "name": c.name, "replay": True}
    exp, env = c.stored.experiment, c.stored.environment
    return {
        "id": exp.id,
        "name": exp.name,
        "path": str(c.stored.path),
        "environment_digest": exp.environment_digest,
        "locked": c.locked,
        "new": c.new,
        "warnings": list(c.warnings),
        "packages": len(env.packages),
        "system_packages": len(env.system_packages),
        "interpreter": env.interpreter.executable,
        **({"exit_status": c.run.exit_status} if c.run is not None else {}),
        **({"conda_packages": len(env.conda.packages)} if env.conda is not None else {}),
        **({"image": c.image} if c.image is not None else {}),
    }


def _capture_text(c: Captured, _color: bool) -> list[Piece]:
    if c.stored is None:
        return [Piece(c.id)]
    d = _capture_data(c)
    summary = (
        f"captured {c.stored.experiment.name}: {d['packages']} packages, "
        f"{d['system_packages']} system packages, "
        + (f"{d['conda_packages']} conda packages, " if "conda_packages" in d else "")
        + f"{'locked' if c.locked else 'not locked'}"
        + ("" if c.new else " (identical to an existing capture)")
        + (f"; the command exited with status {c.run.exit_status}" if c.run is not None else "")
    )
    return [Piece(summary, PROGRESS), Piece(c.id)]


# --------------------------------------------------------------------------- ls / show


_LS_HEADER: tuple[str, ...] = ("ID", "NAME", "CREATED", "PYTHON", "PKGS", "COMMIT", "COMMAND")
_LS_EMPTY = 'no experiments yet: record one with `reprobox capture --cmd "python train.py"`'


def _ls_data(listing: Listing) -> list[dict[str, Any]]:
    return [dataclasses.asdict(row) for row in listing.experiments]


def _ls_text(listing: Listing, _color: bool) -> list[Piece]:
    pieces = [Piece(w, WARNING) for w in listing.skipped]
    if not listing.experiments:
        return pieces + [Piece(_LS_EMPTY, ERR)]
    table: list[tuple[str, ...]] = [_LS_HEADER] + [
        (
            field(r.id),
            field(r.name),
            field(r.created),
            field(r.python),
            field(r.packages),
            field(r.commit),
            field(r.command)[:50],
        )
        for r in listing.experiments
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(_LS_HEADER) - 1)]
    return pieces + [
        Piece("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        for row in table
    ]


def _show_data(shown: Shown) -> dict[str, Any]:
    s = shown.stored
    return {
        "experiment": s.experiment.to_dict(),
        "environment": s.environment.to_dict(),
        "path": str(s.path),
        "image": s.image,
    }


def _quoted_name(name: str) -> str:
    """A file name for display: as is when clean, else Python's escaped form (``'a\\x1bb'``),
    as git would quote it: an invisible or control character in a name becomes visible instead
    of vanishing, so two names that differ never look the same."""
    return name if field(name) == name else ascii(name)


def _show_text(shown: Shown, _color: bool) -> list[Piece]:
    stored = shown.stored
    e, env = stored.experiment, stored.environment
    f = field  # every value from the capture: one line, nothing a terminal would obey
    hw, interp, os_ = env.hardware, env.interpreter, env.os
    lines = [
        f"experiment  {f(e.id)}  ({f(e.name)})",
        f"created     {f(e.created)}  by reprobox {f(e.tool_version)}",
        f"command     {f(e.command or '-')}  [{f(e.command_kind)}]  in {f(e.cwd)}",
        f"git         {f(e.git.commit)}"
        + (f" on {f(e.git.branch)}" if e.git.branch else "")
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
            + (
                f", {len(r.modules)} distributions imported, {len(r.libraries)} libraries loaded"
                if r.source == "recorded"
                else ""
            )
        )
    if e.dvc:
        lines.append(
            f"dvc         {len(e.dvc.outputs)} outputs, stages "
            f"{', '.join(f(s) for s in e.dvc.stages)}"
        )
    for mfile, values in sorted(e.metrics.items()):
        shown_values = ", ".join(f"{f(k)}={f(v)}" for k, v in sorted(values.items())[:8])
        lines.append(f"metrics     {f(mfile)}: {shown_values}")
    for out in e.outputs:
        lines.append(f"output      {f(out.path)}  sha256:{f(out.sha256[:16])}  {f(out.size)} bytes")
    if e.env:
        lines.append("env vars    " + " ".join(f"{f(k)}={f(v)}" for k, v in sorted(e.env.items())))
    files = sorted(_quoted_name(name) for name in shown.files)
    lines.append(f"files       {f(stored.path)}: {', '.join(files)}")
    return [Piece("\n".join(lines))]


# --------------------------------------------------------------------------- lock / build / base


def _resealed(locked: Locked) -> list[str]:
    if not locked.resealed:
        return []
    return [
        f"the id seals every file of a capture: experiment {locked.previous_id} is now "
        f"{locked.id} (commit the new folder; the old one was removed)"
    ]


def _lock_warnings(locked: Locked) -> list[str]:
    return [
        *locked.warnings,
        *(
            f"version changed for {locked.platform}: {c.describe()}"
            for c in locked.changed_versions
        ),
    ]


def _lock_text(locked: Locked, _color: bool) -> list[Piece]:
    return [
        *(Piece(w, WARNING) for w in _lock_warnings(locked)),
        Piece("wrote " + ", ".join(sorted(locked.files))),
        *(Piece(w, WARNING) for w in _resealed(locked)),
        Piece(locked.id),
    ]


def _lock_data(locked: Locked) -> dict[str, Any]:
    return {
        "id": locked.id,
        "previous_id": locked.previous_id,
        "resealed": locked.resealed,
        "files": sorted(locked.files),
        "platform": locked.platform,
        "warnings": list(locked.warnings),
        "changed_versions": [c.describe() for c in locked.changed_versions],
    }


def _build_text(result: BuildResult | CondaImage, _color: bool) -> list[Piece]:
    if result.dry_run:
        return [Piece(result.dockerfile, newline=False)]
    return [Piece(result.tag)]


def _build_data(result: BuildResult) -> dict[str, Any]:
    return {**result.to_dict(), **({"dockerfile": result.dockerfile} if result.dry_run else {})}


def _conda_image_data(result: CondaImage) -> dict[str, Any]:
    return {
        "tag": result.tag,
        "image_id": result.image_id,
        "base_image": result.base_image,
        "seconds": round(result.seconds, 3),
        "steps": result.steps,
        "cached_steps": result.cached_steps,
        "dry_run": result.dry_run,
        **({"dockerfile": result.dockerfile} if result.dry_run else {}),
    }


def _base_data(image: BaseImage) -> dict[str, Any]:
    return {"tag": image.tag, "python": image.python, "os": image.codename}


# --------------------------------------------------------------------------- run / verify / push


def run_text(record: RunRecord) -> str:
    """The human report: verdict first, then every difference, then how it was made."""
    lines: list[str] = []
    head = record.verdict.upper()
    lines.append(f"{head}: experiment {record.experiment_id} ({record.experiment_name})")
    if record.differences:
        lines.append(f"{len(record.differences)} difference(s):")
        lines += [f"  - {d}" for d in record.differences]
    if record.substitutions:
        lines.append(
            f"{len(record.substitutions)} substitution(s)"
            + (" (--strict: the run fails)" if record.strict else "")
            + ":"
        )
        lines += [f"  ~ {d}" for d in record.substitutions]
    ok_metrics = [m for m in record.metrics if m.ok and m.status != "new"]
    if ok_metrics:
        lines.append(
            f"metrics ({record.tolerance.describe()}): "
            f"{len(ok_metrics)} of {sum(1 for m in record.metrics if m.status != 'new')}"
            " as recorded"
        )
        for m in ok_metrics:
            lines.append(f"  = {m.describe()}")
    new = [m for m in record.metrics if m.status == "new"]
    for m in new:
        lines.append(f"  + {m.describe()}")
    # lazy: a rerun's result has loaded outcome already; other commands print no outputs
    from .outcome import CLOSE, IGNORED, SAME

    every = (*record.outputs, *record.dvc_outputs)
    same = [o for o in every if o.status == SAME]
    if same:
        lines.append(f"outputs: {len(same)} identical")
    for o in every:
        if o.status in (CLOSE, IGNORED):
            lines.append(f"  ~ {o.describe()}")
    for note in ((record.gpu_note,) if record.gpu_note else ()) + record.notes:
        lines.append(f"note: {note}")
    lines.append(f"environment: {record.backend} ({record.backend_reason}): {record.environment}")
    timing = ", ".join(f"{p.name} {p.seconds:.1f}s" for p in record.phases)
    lines.append(f"time: {record.seconds:.1f}s ({timing})")
    if record.checkout:
        lines.append(f"checkout kept at {record.checkout}")
    if record.report_path:
        lines.append(f"report: {record.report_path}")
    return "\n".join(lines)


def verify_text(report: VerifyReport) -> str:
    head = report.verdict.upper()
    lines = [
        f"{head}: the rebuilt environment of {report.experiment_id} ({report.experiment_name})"
        + (" matches the capture" if report.identical else " differs from the capture")
    ]
    if report.differences:
        lines.append(f"{len(report.differences)} difference(s):")
        lines += [f"  - {d.message}" for d in report.differences]
    if report.substitutions:
        lines.append(
            f"{len(report.substitutions)} substitution(s)"
            + (" (--strict: the verification fails)" if report.strict else "")
            + ":"
        )
        lines += [f"  ~ {d}" for d in report.substitutions]
    lines.append(
        f"checked: interpreter {report.interpreter}, {report.packages_checked} packages "
        f"(names, versions, sources, installed files against their RECORD), "
        f"{report.system_packages_checked} system packages"
    )
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"environment: {report.backend} ({report.backend_reason}): {report.environment}")
    return "\n".join(lines)


def summary_text(summary: Summary) -> str:
    # lazy: a summary in hand has loaded its module already (see _renderers)
    from .fanout.summary import DIFFERS, FAILED, REPRODUCED

    lines = [o.line() for o in summary.outcomes]
    c = summary.counts()
    lines.append(
        f"{len(summary.outcomes)} experiment(s) on {summary.on}: {c[REPRODUCED]} "
        f"reproduced, {c[DIFFERS]} differ, {c[FAILED]} failed "
        f"({summary.seconds:.1f}s)"
    )
    if summary.path:
        lines.append(f"summary: {summary.path}")
    return "\n".join(lines)


def _report_data(result: Any) -> Any:
    return result.to_dict()


def _plan_text(plan: FanOutPlan, _color: bool) -> list[Piece]:
    return [Piece(plan.text, newline=False)]


def _plan_data(plan: FanOutPlan) -> dict[str, Any]:
    return {"on": plan.on, "dry_run": True, "submission": plan.text}


def _push_text(pushed: Pushed, _color: bool) -> list[Piece]:
    return [
        Piece(f"recorded in {pushed.record} (commit it: a clone pulls by digest)", ERR),
        Piece(pushed.publication.reference),
    ]


def _push_data(pushed: Pushed) -> dict[str, Any]:
    return {
        "experiment": pushed.experiment,
        **pushed.publication.to_dict(),
        "record": str(pushed.record),
    }


# --------------------------------------------------------------------------- diff / pr / doctor


def _diff_text(d: EnvDiff, color: bool) -> list[Piece]:
    from .diff import render_text  # lazy: ~10 ms at every start; the call that made d loaded it

    return [Piece(render_text(d, color=color), newline=False, colors=color)]


def _diff_markdown(d: EnvDiff) -> str:
    from .diff import render_markdown  # lazy: as in _diff_text

    return render_markdown(d)


def _pr_text(comment: PrComment, _color: bool) -> list[Piece]:
    return [Piece(comment.markdown, newline=False)]


def _pr_data(comment: PrComment) -> dict[str, Any]:
    return {"experiment": comment.experiment, "base": comment.base, "markdown": comment.markdown}


def _doctor_text(diagnosis: Diagnosis, _color: bool) -> list[Piece]:
    pieces = []
    for c in diagnosis.checks:
        pieces.append(Piece(f"{c.name:<14} {c.detail}", mark="ok" if c.ok else "no"))
        if not c.ok and c.fix:
            pieces.append(Piece(f"    fix: {c.fix}"))
    return pieces


def _doctor_data(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    return [c.to_dict() for c in diagnosis.checks]


# --------------------------------------------------------------------------- the table


_TABLE: dict[str, _Renderer] = {}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _renderers() -> dict[str, _Renderer]:
    """Result type (named ``module.Class``) -> its renderer. The result types of the stages are
    named, not imported: importing them all would cost every command that prints a result
    ~180 ms (``reprobox ls`` included), and a result in hand has loaded its own module."""
    if _TABLE:
        return _TABLE
    _TABLE.update(
        {
            _name(Captured): _Renderer(_capture_text, _capture_data),
            _name(Listing): _Renderer(_ls_text, _ls_data, lambda listing: list(listing.skipped)),
            _name(Shown): _Renderer(_show_text, _show_data),
            _name(Locked): _Renderer(
                _lock_text, _lock_data, lambda locked: _lock_warnings(locked) + _resealed(locked)
            ),
            "reprobox.build.builder.BuildResult": _Renderer(_build_text, _build_data),
            "reprobox.build.condaimage.CondaImage": _Renderer(_build_text, _conda_image_data),
            _name(BaseImage): _Renderer(lambda image, _c: [Piece(image.tag)], _base_data),
            "reprobox.run.RunRecord": _Renderer(lambda r, _c: [Piece(run_text(r))], _report_data),
            "reprobox.verify.VerifyReport": _Renderer(
                lambda r, _c: [Piece(verify_text(r))], _report_data
            ),
            "reprobox.fanout.summary.Summary": _Renderer(
                lambda s, _c: [Piece(summary_text(s))], _report_data
            ),
            _name(FanOutPlan): _Renderer(_plan_text, _plan_data),
            _name(Pushed): _Renderer(_push_text, _push_data),
            "reprobox.diff.model.EnvDiff": _Renderer(
                _diff_text, lambda d: d.to_dict(), markdown=_diff_markdown
            ),
            _name(PrComment): _Renderer(
                _pr_text, _pr_data, markdown=lambda comment: comment.markdown
            ),
            _name(Diagnosis): _Renderer(_doctor_text, _doctor_data),
        }
    )
    return _TABLE


__all__ = [
    "ERR",
    "FORMATS",
    "OUT",
    "PROGRESS",
    "WARNING",
    "Piece",
    "data",
    "json_text",
    "render",
    "run_text",
    "summary_text",
    "verify_text",
]
