"""Build logs condensed for people: one line per build step, plus the lines worth seeing.

Three dialects, one reader each, sharing what they keep: BuildKit's plain progress output
(``#5 [build 3/9] RUN ...``), Podman's (``STEP 3/9: RUN ...``) and the classic builder's
(``Step 3/9 : RUN ...``). Each keeps the log's tail (redacted, made safe for a terminal), counts
steps and cached steps, and collects the ``reprobox: warning:`` lines the build's own steps print.
"""

from __future__ import annotations

import abc
import re
from collections import deque
from typing import Optional, Sequence

from ..redact import redact_text
from ..termsafe import clean, stream_line
from .interface import Progress

#: BuildKit: a step starts, ends, or prints.
_STEP = re.compile(r"^#(\d+) \[(?:[\w.-]+ )?(\d+/\d+)\] (.*)$")
_DONE = re.compile(r"^#(\d+) (DONE [0-9.]+s|CACHED|ERROR.*)$")
_OUT = re.compile(r"^#(\d+) [0-9.]+ (.*)$")
#: Podman: a step starts.
_PODMAN_STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")
#: Output lines worth showing while a step runs: what the installers say they did, and warnings.
_NOTABLE = re.compile(
    r"(reprobox: warning:|^warning|Installed \d+ package|Uninstalled \d+ package|"
    r"Successfully installed|\d+ newly installed|^bytecode: \d+ of|^identical files: \d+ stored|"
    r"^E: |error)",
    re.IGNORECASE,
)
_WARNING = re.compile(r"reprobox: warning: (.*)")
_MOUNT_FLAG = re.compile(r"--mount=\S+\s*")


def _title(text: str) -> str:
    """A Dockerfile instruction without its ``--mount=`` flags, on one line."""
    return re.sub(r"\s+", " ", _MOUNT_FLAG.sub("", text)).strip()


class StepLog(abc.ABC):
    """What every dialect keeps; :meth:`feed` is the dialect's own."""

    tail_lines = 60

    def __init__(self, progress: Optional[Progress], step_titles: Sequence[str] = ()) -> None:
        self.progress = progress or (lambda _line: None)
        self.step_titles = list(step_titles)
        self.tail: deque[str] = deque(maxlen=self.tail_lines)
        self.warnings: list[str] = []
        self.steps = 0
        self.cached = 0

    @abc.abstractmethod
    def feed(self, line: str) -> None:
        """Take one line of the engine's build output."""

    def _output(self, text: str) -> None:
        """A line a step printed: note its warning, show it if it is worth seeing."""
        warning = _WARNING.search(text)
        if warning and warning.group(1) not in self.warnings:
            self.warnings.append(warning.group(1))
        if _NOTABLE.search(text):
            self.progress("    " + text.strip()[:160])

    def _step_title(self, index: int, total: int, text: str) -> str:
        """The step's own title when reprobox named every step, else its instruction."""
        if len(self.step_titles) == total:
            return self.step_titles[index - 1]
        return _title(text)

    def error_text(self) -> str:
        return "\n".join(list(self.tail)[-25:])


class BuildLog(StepLog):
    """BuildKit's plain progress output (``--progress=plain``)."""

    def __init__(self, progress: Optional[Progress], step_titles: Sequence[str] = ()) -> None:
        super().__init__(progress, step_titles)
        self.titles: dict[str, str] = {}
        self.step_output: dict[str, deque[str]] = {}
        self.failed: Optional[str] = None

    def feed(self, line: str) -> None:
        line = stream_line(redact_text(line))
        self.tail.append(line)
        m = _STEP.match(line)
        if m:
            num, pos, text = m.groups()
            index, total = (int(x) for x in pos.split("/"))
            title = self._step_title(index, total, text)
            # "[build 3/9]": the image's own steps, numbered apart from reprobox's phases
            self.titles[num] = f"[build {pos}] {title[:90]}{'...' if len(title) > 90 else ''}"
            self.step_output[num] = deque(maxlen=25)
            return
        m = _DONE.match(line)
        if m and m.group(1) in self.titles:
            num, status = m.groups()
            self.steps += 1
            if status == "CACHED":
                self.cached += 1
                self.progress(f"{self.titles[num]}  (cached)")
            elif status.startswith("DONE"):
                self.progress(f"{self.titles[num]}  ({status[5:]})")
            else:
                self.failed = num
                self.progress(f"{self.titles[num]}  FAILED")
            return
        m = _OUT.match(line)
        if m and m.group(1) in self.step_output:
            self.step_output[m.group(1)].append(m.group(2))
            self._output(m.group(2))

    def error_text(self) -> str:
        if self.failed and self.failed in self.step_output:
            lines = list(self.step_output[self.failed])
            return f"step {self.titles[self.failed]}:\n" + "\n".join(lines[-20:])
        return super().error_text()


class PodmanLog(StepLog):
    """``podman build``'s output: ``STEP n/m: INSTRUCTION``, then the step's own lines."""

    def feed(self, line: str) -> None:
        line = stream_line(redact_text(line))
        self.tail.append(line)
        m = _PODMAN_STEP.match(line)
        if m:
            self.steps += 1
            index, total = int(m.group(1)), int(m.group(2))
            if not m.group(3).startswith("ARG REPROBOX_INPUTS_"):  # a cache key, no work
                self.progress(
                    f"[{index}/{total}] {self._step_title(index, total, m.group(3))[:90]}"
                )
        elif line.startswith("--> Using cache"):
            self.cached += 1
        else:
            self._output(line)


class ClassicLog(StepLog):
    """The classic builder's ``stream`` text, as the daemon's API hands it over."""

    tail_lines = 40

    def feed(self, line: str) -> None:
        line = clean(redact_text(line))
        self.tail.append(line)
        if line.startswith("Step "):
            self.steps += 1
            self.progress(re.sub(r"\s+", " ", line)[:110])
        elif "Using cache" in line:
            self.cached += 1
        else:
            self._output(line)


def build_hint(text: str) -> str:
    """The likely fix for a failed build, from what its log says."""
    low = text.lower()
    if "hash" in low and ("mismatch" in low or "do not match" in low or "doesn't match" in low):
        return (
            "the index served files whose hashes differ from the lock: re-lock with "
            "`reprobox lock <exp>` if the index legitimately changed"
        )
    if any(
        s in low
        for s in (
            "temporary failure in name resolution",
            "could not resolve",
            "name or service not known",
            "failed to connect",
            "connection refused",
            "network is unreachable",
            "dns error",
            "timed out",
        )
    ):
        return (
            "the build could not reach the package index or the OS mirror: check the proxy "
            "settings, or try `--network host`"
        )
    if "certificate" in low or "ssl" in low:
        return (
            "TLS verification failed inside the build: set pip's `cert` (or PIP_CERT) to the "
            "CA bundle your network needs; reprobox passes it to the build as a secret"
        )
    return "read the build output above; `reprobox build --dry-run` shows the Dockerfile"


def step_titles(dockerfile: str) -> tuple[str, ...]:
    """A short title per build step (FROM, RUN, COPY, ADD, WORKDIR).

    A RUN step is named by the first sentence of the comment block of its section; the other
    steps by their instruction.
    """
    titles: list[str] = []
    block: list[str] = []
    section: Optional[str] = None
    continued = False
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if continued:
            continued = stripped.endswith("\\")
            continue
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        if block:
            text = " ".join(block)
            section = re.split(r"(?<=[A-Za-z0-9)])[.:] ", text + " ", maxsplit=1)[0].strip()
            block = []
        if not stripped:
            continue
        word = stripped.split(None, 1)[0].upper()
        continued = stripped.endswith("\\")
        if word in ("FROM", "RUN", "COPY", "ADD", "WORKDIR"):
            short = re.sub(r"\s+", " ", _MOUNT_FLAG.sub("", stripped))
            titles.append(section if section and word == "RUN" else short[:80])
    return tuple(titles)
