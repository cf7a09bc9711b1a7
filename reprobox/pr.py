"""Markdown for a pull-request comment: the environment of an experiment and what changed.

``reprobox pr EXP --base BASE`` prints one markdown block (rendered from ``templates/pr.md.j2``):
a hidden marker so that a CI workflow can find and update its own comment instead of adding one
per push, a summary table, the numerics warnings, the environment diff against the base, and the
full package lists folded in ``<details>``.

A pull request is where a hostile capture shows up, so every value taken from a capture is escaped
for markdown and HTML by default (the template environment's ``finalize`` escapes every
expression that the code did not explicitly mark safe), and the output is kept under GitHub's
65,536-character comment limit by folding away the tail of the package lists first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from markupsafe import Markup

from .diff import (
    EnvDiff,
    channel_display,
    describe_source,
    diff_environments,
    md_code,
    md_escape,
    render_markdown,
    render_warnings_markdown,
)
from .model import INLINE_METRICS, Environment, Experiment
from .store import STORE_DIR, StoredExperiment

#: First line of every comment; workflows look for it to update their comment in place.
PR_MARKER = "<!-- reprobox:pr -->"

#: GitHub refuses comments over 65,536 characters; stay clear of it.
MAX_COMMENT_CHARS = 65_000

#: Metrics shown per experiment in the summary table before "... and N more".
MAX_METRICS_SHOWN = 12
#: Characters of one value shown in the summary (a metric, the command), before escaping: a
#: record's values may be kilobytes long, and escaping lengthens them.
MAX_CELL_CHARS = 300

TEMPLATE = "pr.md.j2"


@dataclass(frozen=True)
class _Row:
    label: str
    value: Any  # markupsafe.Markup
    base: Any = None


def _safe(text: str) -> Any:
    return Markup(text)


def _python(env: Environment) -> str:
    i = env.interpreter
    extra = f" ({i.kind})" if i.kind else ""
    return f"{i.implementation} {i.version}{extra}"


def _os(env: Environment) -> str:
    o = env.os
    name = o.pretty_name or " ".join(x for x in (o.id, o.version_id) if x) or o.system
    if o.codename and o.codename not in name:
        name += f" ({o.codename})"
    parts = [name]
    if o.arch:
        parts.append(o.arch)
    if o.glibc:
        parts.append(f"glibc {o.glibc}")
    return ", ".join(parts)


def _gpus(env: Environment) -> str:
    hw = env.hardware
    counts: dict[str, int] = {}
    for g in hw.gpus:
        label = g.name + (f" (compute {g.compute_capability})" if g.compute_capability else "")
        counts[label] = counts.get(label, 0) + 1
    gpus = ", ".join(f"{n}× {label}" if n > 1 else label for label, n in counts.items())
    cuda = ", ".join(
        x
        for x in (
            f"CUDA {hw.cuda_runtime}" if hw.cuda_runtime else "",
            f"cuDNN {hw.cudnn}" if hw.cudnn else "",
        )
        if x
    )
    if not gpus and not cuda:
        return "none"
    return "; ".join(x for x in (gpus or "no GPU", cuda) if x)


def _clip(text: str, limit: int = MAX_CELL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _metrics_cell(exp: Experiment) -> Any:
    items: list[str] = []
    for mfile in sorted(exp.metrics):
        prefix = "" if mfile == INLINE_METRICS else f"{mfile}: "
        for key in sorted(exp.metrics[mfile], key=str):
            items.append(_clip(f"{prefix}{key} = {exp.metrics[mfile][key]}"))
    if not items:
        return _safe("—")
    shown = [md_code(x) for x in items[:MAX_METRICS_SHOWN]]
    if len(items) > MAX_METRICS_SHOWN:
        shown.append(f"…and {len(items) - MAX_METRICS_SHOWN} more")
    return _safe("<br>".join(shown))


def _cells(stored: StoredExperiment) -> dict[str, Any]:
    exp, env = stored.experiment, stored.environment
    command = md_code(_clip(exp.command)) if exp.command is not None else "none recorded"
    if exp.command_kind == "dvc":
        command += " (DVC pipeline)"
    return {
        "experiment": _safe(md_code(exp.id)),
        "name": _safe(md_escape(exp.name)),
        "command": _safe(command),
        "git": _safe(md_code(exp.git.commit[:12]) + (" (dirty)" if exp.git.dirty else "")),
        "python": _safe(md_escape(_python(env))),
        "OS": _safe(md_escape(_os(env))),
        "packages": _safe(
            str(len(env.packages))
            + (f" pip + {len(env.conda.packages)} conda" if env.conda is not None else "")
        ),
        "system packages": _safe(str(len(env.system_packages))),
        "GPUs / CUDA": _safe(md_escape(_gpus(env))),
        "environment digest": _safe(md_code(env.digest[:19]) if env.digest else "—"),
        "image": _safe(md_code(stored.image) if stored.image else "not built"),
        "metrics": _metrics_cell(exp),
    }


def _summary(stored: StoredExperiment, base: StoredExperiment | None) -> list[_Row]:
    ours = _cells(stored)
    theirs = _cells(base) if base is not None else {}
    return [_Row(label, value, theirs.get(label)) for label, value in ours.items()]


def _template() -> Any:
    import jinja2  # lazy: 28 ms to import, only `reprobox pr` renders a template here

    source = files("reprobox.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")

    def finalize(value: Any) -> Any:
        if isinstance(value, Markup):
            return value
        if value is None:
            return "—"
        return md_escape(value)

    env = jinja2.Environment(
        autoescape=False,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["code"] = lambda value: Markup(md_code(value))
    return env.from_string(source)


def _record_path(stored: StoredExperiment, repo_root: Path | None) -> str:
    if repo_root is not None:
        try:
            return Path(stored.path).resolve().relative_to(Path(repo_root).resolve()).as_posix()
        except ValueError:
            pass
    return f"{STORE_DIR}/experiments/{stored.id}"


def _package_rows(env: Environment) -> list[dict[str, str]]:
    rows = [
        {"name": p.name, "version": p.version, "source": describe_source(p.source)}
        for p in env.packages
    ]
    if env.conda is not None:
        rows += [
            {
                "name": c.name,
                "version": f"{c.version} {c.build}",
                "source": f"conda {channel_display(c.channel)}",
            }
            for c in env.conda.packages
        ]
        rows.sort(key=lambda r: r["name"])
    return rows


def _system_rows(env: Environment) -> list[dict[str, str]]:
    return [
        {
            "name": s.name,
            "version": s.version,
            "manager": s.manager + (f" ({s.arch})" if s.arch else ""),
        }
        for s in env.system_packages
    ]


def _render(
    template: Any,
    context: Mapping[str, Any],
    packages: Sequence[Any],
    system: Sequence[Any],
    keep: int | None,
) -> str:
    kept_p = list(packages) if keep is None else list(packages)[:keep]
    kept_s = list(system) if keep is None else list(system)[:keep]
    return str(
        template.render(
            **context,
            packages=kept_p,
            packages_hidden=len(packages) - len(kept_p),
            system_packages=kept_s,
            system_packages_hidden=len(system) - len(kept_s),
        )
    )


def pr_markdown(
    stored: StoredExperiment, base: StoredExperiment | None, *, repo_root: Path | None = None
) -> str:
    """The pull-request comment for ``stored``, compared with ``base`` when one is given.

    ``repo_root`` only makes the record path shown at the bottom relative to the repository.
    """
    diff: EnvDiff | None = None
    if base is not None:
        diff = diff_environments(
            base.environment, stored.environment, exp_a=base.experiment, exp_b=stored.experiment
        )
    context = {
        "marker": _safe(PR_MARKER),
        "exp": stored.experiment,
        "base": base,
        "diff": diff,
        "warnings": _safe(render_warnings_markdown(diff)) if diff is not None else _safe(""),
        "diff_markdown": _safe(render_markdown(diff, heading_level=3, include_warnings=False))
        if diff is not None
        else _safe(""),
        "summary": _summary(stored, base),
        "record_path": _record_path(stored, repo_root),
    }
    template = _template()
    packages = _package_rows(stored.environment)
    system = _system_rows(stored.environment)
    text = _render(template, context, packages, system, None)
    keep = max(len(packages), len(system))
    while len(text) > MAX_COMMENT_CHARS and keep > 0:
        keep //= 2
        text = _render(template, context, packages, system, keep)
    if len(text) > MAX_COMMENT_CHARS:
        # Even without the lists the diff is too long (hundreds of changed packages): cut the diff
        # at a line boundary; the full diff is one `reprobox diff` away.
        note = (
            f"\n\n…the diff is too long for one comment; run `reprobox diff "
            f"{base.id if base else ''} {stored.id} --format markdown` for all of it.\n"
        )
        short = _safe(
            _cut_lines(
                str(context["diff_markdown"]),
                MAX_COMMENT_CHARS - (len(text) - len(context["diff_markdown"])) - len(note) - 100,
            )
            + note
        )
        text = _render(template, {**context, "diff_markdown": short}, packages, system, 0)
    if len(text) > MAX_COMMENT_CHARS:
        # still too long (a record's values are long even clipped): the comment is cut, as a
        # comment past GitHub's limit is not posted at all
        note = f"\n\n…cut to fit one comment; `reprobox show {stored.id}` has all of it.\n"
        text = _cut_lines(text, MAX_COMMENT_CHARS - len(note)) + note
    return text


def _cut_lines(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, max(limit, 0))
    return text[:cut] if cut > 0 else ""


__all__ = ["MAX_COMMENT_CHARS", "PR_MARKER", "pr_markdown"]
