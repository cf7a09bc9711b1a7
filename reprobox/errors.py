"""One exception tree for the whole tool.

Every error a user can meet is a :class:`ReproboxError` whose message says what went wrong and
whose ``hint`` names the fix. The CLI catches them in one place and maps ``exit_code`` to the
process status (2 for usage / bad input, 3 for everything else), so no traceback ever reaches a
user.
"""

from __future__ import annotations


class ReproboxError(Exception):
    """Base of every error reprobox raises on purpose."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class UsageError(ReproboxError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = 2


class ExperimentNotFound(UsageError):
    """An EXP reference matched nothing, or more than one experiment."""


class StoreError(ReproboxError):
    """The .reprobox/ store is missing, unreadable, corrupt or modified."""


class RecordRefused(StoreError):
    """A stored record is refused: modified after capture (its seal), a file added or removed,
    unparseable, oversize, nested too deep, or of a schema this release does not read. Bad input,
    so exit status 2."""

    exit_code = 2


class SchemaError(RecordRefused):
    """A stored file carries an unknown, older or newer schema version."""


class ValidationError(ReproboxError):
    """A value from a capture (untrusted input) failed its grammar: refused input, exit 2."""

    exit_code = 2

    def __init__(self, field: str, value: object, reason: str, hint: str | None = None) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"refusing {field}={shown}: {reason}",
            hint
            or "the capture may have been edited by hand or come from an untrusted source; "
            "re-capture it with `reprobox capture`",
        )
        self.field = field


class ToolMissing(ReproboxError):
    """An external program reprobox needs is not installed."""


class CommandError(ReproboxError):
    """An external command exited non-zero."""

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        stderr_tail: str,
        hint: str | None = None,
        what: str | None = None,
    ) -> None:
        head = what or f"`{' '.join(argv[:3])}{' ...' if len(argv) > 3 else ''}`"
        msg = f"{head} failed with exit status {returncode}"
        if stderr_tail.strip():
            msg += ":\n" + "\n".join("    " + line for line in stderr_tail.strip().splitlines())
        super().__init__(msg, hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class GitError(ReproboxError):
    """git is missing, the directory is not a repository, or a commit is unavailable."""


class DvcError(ReproboxError):
    """DVC is missing or one of its operations failed."""


class IndexUnavailable(ReproboxError):
    """The package index could not be reached (network, proxy, TLS, timeout)."""


class LockError(ReproboxError):
    """A package could not be locked (no index serves it, hash missing...)."""


class EngineError(ReproboxError):
    """The container engine is unreachable or a build/run failed."""


class BaseImageMissing(EngineError):
    """The base image is neither local nor pullable."""


class InterpreterError(ReproboxError):
    """The target Python interpreter is missing, broken, or not the right version."""


#: What a command interrupted by Ctrl-C or SIGTERM says (its writes are atomic: nothing is left
#: half-written).
INTERRUPTED = "interrupted: nothing was left half-written"
