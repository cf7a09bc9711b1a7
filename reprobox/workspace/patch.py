"""The uncommitted change of a capture: recorded as ``patch.diff`` beside the record.

A secret in it cannot be redacted without breaking the patch, so the capture is refused instead
(naming the file and line, never the value). Parsing and applying a recorded patch, an untrusted
input when the capture arrives in a pull request, is :mod:`reprobox.workspace.git`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import UsageError
from ..redact import scan_patch

#: The experiment file holding the uncommitted change.
PATCH_FILE = "patch.diff"


def refuse_secrets_in_patch(
    patch: bytes, environ: Mapping[str, str], *, allow: bool, warnings: list[str]
) -> None:
    """A secret in the uncommitted change cannot be redacted without breaking the patch: refuse
    the capture (nothing is written), naming the file and line, never the value."""
    found = scan_patch(patch, environ)
    if not found:
        return
    where = "; ".join(f"{f.path} line {f.line} ({f.kind})" for f in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    if allow:
        warnings.append(
            f"{PATCH_FILE} records what looks like a secret, as asked "
            f"(--allow-secret-in-patch): {where}{more}"
        )
        return
    raise UsageError(
        f"the uncommitted change would be recorded in {PATCH_FILE} with what looks like a "
        f"secret: {where}{more}; nothing was recorded",
        "move the secret out of the file (read it from an environment variable) or commit the "
        "change without it; if it is not a secret, capture again with --allow-secret-in-patch",
    )
