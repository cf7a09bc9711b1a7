"""``reprobox verify``: is the rebuilt environment the captured one? Fingerprinted from inside.

Two halves, as in pip-tools' ``sync.diff`` / ``sync.sync``:

* :func:`compare_environments` is pure: the captured :class:`~reprobox.model.Environment` against
  what the probe saw inside the rebuilt one (:class:`Observed`), giving every difference: the
  interpreter (implementation, exact version, ABI), each package's presence, version and source
  (index, VCS URL + commit, directory and editable flag, archive URL + hash), packages that are
  there but were not captured, the conda packages, the installed files changed after install, and
  the system packages the capture depended on (present, same version). The comparison itself is
  :mod:`reprobox.diff`'s, the one ``reprobox diff`` makes: the same fields, the same words.
  Hardware is not compared: it is the machine, not the environment.
* :func:`verify_experiment` is the thin driver: check out the code (in-repository packages are
  installed from it), prepare the backend's environment, run the stdlib-only probe and
  ``dpkg-query`` inside it in one go, parse, compare.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from . import payload
from .backends import choose_backend, make_run_dir
from .backends.conda import observe_conda, observe_conda_inside
from .backends.docker import image_substitutions
from .build import unverified_notes
from .capture.python import parse_probe
from .diff.compute import (
    AS_INSTALLED,
    INTERPRETER_REBUILT,
    conda_field_changes,
    diff_python_packages,
    diff_system_packages,
    field_changes,
    installed_file_changes,
    system_key,
)
from .errors import ReproboxError
from .lock.wheelhouse import DirectSource
from .model import (
    SCHEMA_VERSION,
    CondaEnvironment,
    Environment,
    InstalledChange,
    Interpreter,
    Package,
    SystemPackage,
)
from .run import _cleanup, checkout_code
from .store import Store, StoredExperiment
from .progress import Progress

VERIFY_SCHEMA = "reprobox.verify"


@dataclass(frozen=True)
class Observed:
    """What the probe saw inside the rebuilt environment.

    ``system_packages`` maps every installed OS package to its version, or is ``None`` when the
    environment has no package manager to ask (a non-Debian image, a host without dpkg).
    """

    interpreter: Interpreter
    packages: tuple[Package, ...]
    system_packages: Optional[Mapping[str, str]] = None
    system_manager: str = "dpkg"
    #: The conda records of the rebuilt prefix (conda backend), None where there are none.
    conda: Optional[CondaEnvironment] = None
    #: Installed files of the rebuilt environment that differ from their RECORD; None when the
    #: probe did not check them.
    installed_changes: Optional[tuple[InstalledChange, ...]] = None


@dataclass(frozen=True)
class EnvDifference:
    kind: str  # interpreter | package | system-package
    subject: str
    expected: Optional[str]
    observed: Optional[str]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "expected": self.expected,
            "observed": self.observed,
            "message": self.message,
        }


def from_wheelhouse(want: Package, got: Package) -> bool:
    """A VCS or archive package rebuilt from the file the host put in its wheelhouse for it.

    The rebuild installs such a package from a local file (``file://.../<name>``: the commit
    archived by the host, the archive downloaded and hash-checked, or the source sealed into the
    experiment), so its direct_url.json names that file, not the recorded URL. It is the
    recorded source when the file is the one reprobox names for that package and version.
    """
    if want.source.kind not in ("vcs", "archive") or got.source.kind != "archive":
        return False
    url = got.source.url or ""
    if not url.startswith("file:"):
        return False
    src = want.source
    expected = DirectSource(
        want.name,
        want.version,
        src.kind,
        src.url or "",
        commit=src.commit,
        repo_path=src.path if src.kind == "archive" else None,
    ).filename
    return url.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1] == expected


def compare_environments(expected: Environment, observed: Observed) -> tuple[EnvDifference, ...]:
    """Every way the observed environment differs from the captured one, in a stable order.

    The comparison is :mod:`reprobox.diff`'s (the same fields, the same words as ``reprobox
    diff``); what is verify's own is what a rebuild may legitimately do otherwise: another build
    of the same interpreter (:data:`~reprobox.diff.compute.INTERPRETER_REBUILT`), a package
    installed from the wheelhouse, more system packages than the capture depended on, a conda
    tool that records more than the capture's did.
    """
    diffs: list[EnvDifference] = []
    for c in field_changes(
        expected.interpreter, observed.interpreter, INTERPRETER_REBUILT, known_only=True
    ):
        diffs.append(
            EnvDifference(
                "interpreter",
                c.key,
                str(c.a),
                str(c.b),
                f"interpreter {c.key}: captured {c.a}, rebuilt {c.b}",
            )
        )

    pkgs = diff_python_packages(expected.packages, observed.packages, same_source=from_wheelhouse)
    missing = {c.name for c in pkgs.removed}
    versions = {c.name: c for c in (*pkgs.upgraded, *pkgs.downgraded)}
    sources = {c.name: c for c in pkgs.source_changed}
    for want in expected.packages:
        label = want.display_name or want.name
        if want.name in missing:
            diffs.append(
                EnvDifference(
                    "package",
                    want.name,
                    want.version,
                    None,
                    f"package {label} {want.version} is missing from the rebuilt environment",
                )
            )
            continue
        if want.name in versions:
            got_version = versions[want.name].b
            diffs.append(
                EnvDifference(
                    "package",
                    want.name,
                    want.version,
                    got_version,
                    f"package {label}: captured {want.version}, rebuilt {got_version}",
                )
            )
        if want.name in sources:
            a, b = sources[want.name].a_source, sources[want.name].b_source
            diffs.append(
                EnvDifference(
                    "package",
                    want.name,
                    a,
                    b,
                    f"package {label} comes from elsewhere: captured from {a}, rebuilt from {b}",
                )
            )
    shown = {p.name: p.display_name or p.name for p in observed.packages}
    for extra in pkgs.added:
        diffs.append(
            EnvDifference(
                "package",
                extra.name,
                None,
                extra.b,
                f"package {shown.get(extra.name, extra.name)} {extra.b} "
                "is in the rebuilt environment but was not in the captured one",
            )
        )

    if expected.conda is not None:
        diffs.extend(compare_conda(expected.conda, observed.conda))
    diffs.extend(compare_installed_files(expected.installed_changes, observed.installed_changes))
    diffs.extend(compare_system_packages(expected.system_packages, observed))
    return tuple(diffs)


def compare_system_packages(
    wanted: Sequence[SystemPackage], observed: Observed
) -> list[EnvDifference]:
    """The system packages the capture depended on: installed, at the recorded version.

    The rebuilt environment has many more (the base image's): those are not differences.
    """
    if not wanted:
        return []
    if observed.system_packages is None:
        return [
            EnvDifference(
                "system-package",
                "*",
                f"{len(wanted)} packages",
                None,
                f"the rebuilt environment has no {wanted[0].manager} to list its system packages, "
                f"so the {len(wanted)} the capture depended on cannot be confirmed",
            )
        ]
    have = tuple(
        SystemPackage(name, version, manager=observed.system_manager)
        for name, version in observed.system_packages.items()
    )
    found = diff_system_packages(wanted, have)
    missing = {c.name for c in found.removed}
    versions = {c.name: c for c in (*found.upgraded, *found.downgraded)}
    diffs: list[EnvDifference] = []
    for s in wanted:
        key = system_key(s)
        if key in missing:
            diffs.append(
                EnvDifference(
                    "system-package",
                    s.name,
                    s.version,
                    None,
                    f"system package {s.name} {s.version} is not installed in the rebuilt "
                    "environment"
                    + (f" (it provides {', '.join(s.libraries[:3])})" if s.libraries else ""),
                )
            )
        elif key in versions:
            got_v = versions[key].b
            diffs.append(
                EnvDifference(
                    "system-package",
                    s.name,
                    s.version,
                    got_v,
                    f"system package {s.name}: captured {s.version}, rebuilt {got_v}",
                )
            )
    return diffs


def compare_installed_files(
    expected: tuple[InstalledChange, ...], observed: Optional[tuple[InstalledChange, ...]]
) -> list[EnvDifference]:
    """The installed files changed after install, capture against rebuild
    (:func:`~reprobox.diff.compute.installed_file_changes`): a post-install change that the
    rebuild lacks (the rebuilt file is as installed), or one the rebuild has and the capture had
    not."""
    if observed is None:
        if not expected:
            return []
        return [
            EnvDifference(
                "installed-file",
                "*",
                f"{len(expected)} changed files",
                None,
                f"the capture holds {len(expected)} installed file(s) changed after install, "
                "and the rebuilt environment's files could not be checked",
            )
        ]
    diffs: list[EnvDifference] = []
    for c in installed_file_changes(expected, observed):
        if c.a == AS_INSTALLED:
            message = (
                f"installed file {c.path} of package {c.package}: as installed in the "
                f"capture, {c.b} in the rebuilt environment"
            )
        else:
            message = (
                f"installed file {c.path} of package {c.package}: captured {c.a}, rebuilt {c.b}"
            )
        diffs.append(EnvDifference("installed-file", f"{c.package}:{c.path}", c.a, c.b, message))
    return diffs


def compare_conda(
    expected: CondaEnvironment, observed: Optional[CondaEnvironment]
) -> list[EnvDifference]:
    """Each conda package of the capture against the rebuilt prefix's conda-meta records
    (:data:`~reprobox.diff.compute.CONDA_FIELDS`)."""
    if observed is None:
        return [
            EnvDifference(
                "conda-package",
                "*",
                f"{len(expected.packages)} packages",
                None,
                f"the rebuilt environment has no conda-meta records, so the "
                f"{len(expected.packages)} conda packages of the capture are not there",
            )
        ]
    diffs: list[EnvDifference] = []
    seen = {p.name: p for p in observed.packages}
    for want in expected.packages:
        got = seen.pop(want.name, None)
        if got is None:
            diffs.append(
                EnvDifference(
                    "conda-package",
                    want.name,
                    f"{want.version} {want.build}",
                    None,
                    f"conda package {want.name} {want.version} ({want.build}) is missing from the "
                    "rebuilt environment",
                )
            )
            continue
        for c in conda_field_changes(want, got, a_is_reference=True):
            what = "its files" if c.key in ("files", "files_sha256") else c.key
            diffs.append(
                EnvDifference(
                    "conda-package",
                    want.name,
                    str(c.a),
                    None if c.b is None else str(c.b),
                    f"conda package {want.name}: {what} differ (captured {c.a}, rebuilt {c.b})",
                )
            )
    for name in sorted(seen):
        got = seen[name]
        diffs.append(
            EnvDifference(
                "conda-package",
                name,
                None,
                f"{got.version} {got.build}",
                f"conda package {name} {got.version} ({got.build}) is in the rebuilt environment "
                "but was not in the captured one",
            )
        )
    return diffs


def parse_dpkg_list(text: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'`` -> name: version.

    Only packages actually installed (status ``ii``) count; removed-but-configured ones are
    listed by dpkg too.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        if len(parts) >= 3 and parts[2].strip() and not parts[2].startswith("ii"):
            continue
        out[parts[0].split(":", 1)[0]] = parts[1]
    return out


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class VerifyReport:
    experiment_id: str
    experiment_name: str
    backend: str
    backend_reason: str
    environment: str
    expected_digest: str
    differences: tuple[EnvDifference, ...]
    packages_checked: int = 0
    system_packages_checked: int = 0
    interpreter: str = ""
    notes: tuple[str, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    #: System packages the image could not have at their recorded version (the build said so):
    #: listed, not counted as differences; ``strict`` makes them fail the verdict.
    substitutions: tuple[str, ...] = ()
    strict: bool = False

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        return self.identical and not (self.strict and self.substitutions)

    @property
    def verdict(self) -> str:
        if not self.identical:
            return "differs"
        return "identical with substitutions" if self.substitutions else "identical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": f"{VERIFY_SCHEMA}/{SCHEMA_VERSION}",
            "experiment": self.experiment_id,
            "name": self.experiment_name,
            "identical": self.identical,
            "verdict": self.verdict,
            "differences": [d.to_dict() for d in self.differences],
            "substitutions": list(self.substitutions),
            "strict": self.strict,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "environment": self.environment,
            "environment_digest": self.expected_digest,
            "interpreter": self.interpreter,
            "packages_checked": self.packages_checked,
            "system_packages_checked": self.system_packages_checked,
            "notes": list(self.notes),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


# --------------------------------------------------------------------------- the driver

_DPKG_FORMAT = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"

#: Runs the probe and lists the system packages in one go (one container start, not two).
_FINGERPRINT_SH = (
    '"$1" -I "$2" --no-native > "$3"; rc=$?; '
    "if command -v dpkg-query >/dev/null 2>&1; then "
    f'dpkg-query -W -f \'{_DPKG_FORMAT}\' > "$4" 2>/dev/null || rm -f "$4"; fi; '
    "exit $rc"
)


def observe(backend: Any, prepared: Any, checkout: Path) -> Observed:
    """Run the probe and dpkg-query inside the prepared environment and parse what they say."""
    run_dir = make_run_dir(checkout)
    probe = run_dir / "probe.py"
    shutil.copyfile(payload.script("probe"), probe)
    out_json, out_dpkg = run_dir / "probe.json", run_dir / "dpkg.txt"
    argv = [
        "/bin/sh",
        "-c",
        _FINGERPRINT_SH,
        "sh",
        prepared.python,
        backend.path_in_env(checkout, probe),
        backend.path_in_env(checkout, out_json),
        backend.path_in_env(checkout, out_dpkg),
    ]
    done = backend.execute(prepared, argv, checkout=checkout, cwd=".", env={}, capture=True)
    if done.returncode != 0 or not out_json.is_file():
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-10:])
        raise ReproboxError(
            f"the probe failed inside the rebuilt environment (exit status {done.returncode})"
            + (f":\n{tail}" if tail else ""),
            "check that the environment's interpreter runs (`reprobox run` shows its errors)",
        )
    try:
        raw = json.loads(out_json.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReproboxError(f"the probe's output is not JSON ({exc})") from None
    repo_root = Path(backend.path_in_env(checkout, checkout))
    result = parse_probe(raw, repo_root)
    system = parse_dpkg_list(out_dpkg.read_text(encoding="utf-8")) if out_dpkg.is_file() else None
    packages, conda_env = tuple(result.packages), None
    if backend.name == "conda":
        packages, conda_env = observe_conda(
            prepared.handle, packages, raw.get("distributions") or ()
        )
    elif getattr(prepared, "conda_prefix", None):  # a conda image: read inside the container
        packages, conda_env = observe_conda_inside(
            backend,
            prepared,
            checkout,
            prepared.conda_prefix,
            packages,
            raw.get("distributions") or (),
        )
    return Observed(
        interpreter=result.interpreter,
        packages=packages,
        system_packages=system,
        conda=conda_env,
        installed_changes=result.installed_changes,
    )


def verify_experiment(
    store: Store,
    ref_or_stored: Union[str, StoredExperiment],
    *,
    backend: str = "auto",
    progress: Optional[Progress] = None,
    limits: Any = None,
    strict: bool = False,
) -> VerifyReport:
    """Rebuild the experiment's environment, fingerprint it from inside, compare with the
    capture."""
    say = progress or (lambda _m: None)
    stored = (
        ref_or_stored if isinstance(ref_or_stored, StoredExperiment) else store.get(ref_or_stored)
    )
    exp, env = stored.experiment, stored.environment  # validated once, by the store
    # a conda environment steers `auto` to the conda backend
    extra = {"environment": stored.environment} if stored.environment.conda is not None else {}
    chosen, reason = choose_backend(backend, limits=limits, **extra)
    say(
        f"verifying the environment of {exp.id} ({exp.name}) with the {chosen.name} backend "
        f"({reason})"
    )
    seconds: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix=f"reprobox-verify-{exp.id}-"))
    checkout = scratch / "checkout"
    made = False
    prepared = None
    try:
        t0 = time.monotonic()
        say(
            "reprobox: phase 1/3 code: checking out the recorded commit (the repository's own "
            "packages install from it)"
        )
        made = True
        checkout, _detail = checkout_code(store, stored, checkout)
        seconds["code"] = time.monotonic() - t0

        t0 = time.monotonic()
        say(f"reprobox: phase 2/3 environment: preparing the {chosen.name} environment")
        prepared = chosen.prepare(store, stored, checkout, progress=say)
        seconds["environment"] = time.monotonic() - t0
        say(f"      {prepared.description}")

        t0 = time.monotonic()
        say("reprobox: phase 3/3 fingerprint: running the probe inside the rebuilt environment")
        observed = observe(chosen, prepared, checkout)
        diffs = compare_environments(env, observed)
        subs = (
            image_substitutions(getattr(chosen, "engine", None), prepared.handle)
            if prepared.backend == "docker" and not prepared.conda_prefix and env.system_packages
            else ()
        )
        # A system package the build could not have exactly is a substitution, not a difference.
        substituted = {x.name for x in subs}
        diffs = tuple(
            d for d in diffs if not (d.kind == "system-package" and d.subject in substituted)
        )
        seconds["fingerprint"] = time.monotonic() - t0
        notes = list(prepared.notes) + unverified_notes(prepared)
        return VerifyReport(
            experiment_id=exp.id,
            experiment_name=exp.name,
            backend=chosen.name,
            backend_reason=reason,
            environment=prepared.description,
            expected_digest=env.digest,
            differences=diffs,
            packages_checked=len(env.packages) + (len(env.conda.packages) if env.conda else 0),
            system_packages_checked=len(env.system_packages),
            interpreter=f"{observed.interpreter.implementation} {observed.interpreter.version}",
            notes=tuple(notes),
            seconds=seconds,
            substitutions=tuple(x.describe() for x in subs),
            strict=strict,
        )
    finally:
        if prepared is not None:
            chosen.release(prepared)
        _cleanup(store, checkout if made else None, scratch)


__all__ = [
    "EnvDifference",
    "Observed",
    "VerifyReport",
    "compare_environments",
    "compare_installed_files",
    "compare_conda",
    "compare_system_packages",
    "from_wheelhouse",
    "observe",
    "parse_dpkg_list",
    "verify_experiment",
]
