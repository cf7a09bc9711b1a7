"""The package's templates (``templates/``: Dockerfiles, the PR text, the sbatch script) and
the one way they are rendered."""

from __future__ import annotations

import json
import shlex
from functools import cache
from typing import Any


@cache
def _jinja_env() -> Any:
    # lazy: jinja2 costs 40-80 ms to import, and only rendering commands need it
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reprobox.templates", "."),
        autoescape=False,  # a Dockerfile, not HTML: values are shell- or JSON-quoted explicitly
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["json"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    return env


def render_template(name: str, **context: object) -> str:
    """Render one of the package's templates (``templates/<name>``)."""
    return str(_jinja_env().get_template(name).render(**context))
