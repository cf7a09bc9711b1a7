"""conda-lock.yml and conda-explicit.txt for a captured conda environment, without solving.

The environment is already solved: its lock is its exact set of conda packages, each pinned by
URL, md5 and sha256, and the pip packages installed into it, each by URL and sha256 (looked up
on the host's package indexes by :func:`reprobox.lock.lock_environment`). Two files:

* ``conda-lock.yml``: conda-lock's unified format, built with conda-lock's own models
  (``conda_lock.lockfile.v2prelim.models``), written by its writer and read back by its parser,
  so a file that conda-lock would refuse is never stored;
* ``conda-explicit.txt``: an ``@EXPLICIT`` spec, dependencies first, each URL followed by
  ``#sha256:<hex>``, for ``conda create --file`` and ``micromamba create -f``; the pip packages
  are listed there as comments (the explicit format has no pip section).

conda-lock is an optional dependency (``pip install reprobox[conda]``), imported only here.
A record from a conda that wrote md5 only is completed by fetching the archive through the host's
conda configuration and hashing it. A package without a URL (built locally) cannot be locked:
the error names it.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import LockError, UsageError
from ..model import CondaPackage, Environment, canonical_json, sha256_hex
from ..progress import Progress
from ..redact import strip_url_credentials
from .condaconfig import CondaConfig, read_conda_config
from .condafetch import CondaUnlockable, _hashes, check_package, fetch
from .result import LockedPackage

CONDA_LOCK_FILE = "conda-lock.yml"
EXPLICIT_FILE = "conda-explicit.txt"


def _models():  # type: ignore[no-untyped-def]
    try:  # lazy: conda-lock is an optional extra and costs ~340 ms to import
        from conda_lock.lockfile import parse_conda_lock_file, write_conda_lock_file
        from conda_lock.lockfile.v2prelim import models  # lazy: as above
        from conda_lock.models.channel import Channel  # lazy: as above
    except ImportError:
        raise UsageError(
            "writing conda-lock.yml needs the conda-lock package, which is not installed",
            "install reprobox with its conda extra: `pip install 'reprobox[conda]'`",
        ) from None
    return models, Channel, write_conda_lock_file, parse_conda_lock_file


def split_depends(depends: Iterable[str]) -> dict[str, str]:
    """``["python >=3.8", "libzlib"]`` -> ``{"python": ">=3.8", "libzlib": "*"}``."""
    out: dict[str, str] = {}
    for dep in depends:
        name, _, spec = dep.strip().partition(" ")
        if name:
            out[name] = spec.strip() or "*"
    return out


def topological(packages: Sequence[CondaPackage]) -> list[CondaPackage]:
    """Dependencies before the packages needing them (ties by name), as explicit files want."""
    by_name = {p.name: p for p in packages}
    done: set[str] = set()
    order: list[CondaPackage] = []

    def visit(pkg: CondaPackage, stack: tuple[str, ...]) -> None:
        if pkg.name in done or pkg.name in stack:
            return
        for dep in sorted(split_depends(pkg.depends)):
            if dep in by_name:
                visit(by_name[dep], stack + (pkg.name,))
        done.add(pkg.name)
        order.append(pkg)

    for pkg in sorted(packages, key=lambda p: p.name):
        visit(pkg, ())
    return order


def complete_hashes(
    env: Environment, config: CondaConfig, progress: Progress
) -> list[CondaPackage]:
    """Every conda package with a URL, md5 and sha256 (fetching those recorded with md5 only)."""
    assert env.conda is not None

    unlockable = [p for p in env.conda.packages if not p.url]
    if unlockable:
        names = ", ".join(f"{p.name} {p.version} ({p.build})" for p in unlockable)
        raise CondaUnlockable(
            f"conda package{'s' if len(unlockable) > 1 else ''} {names} "
            f"{'have' if len(unlockable) > 1 else 'has'} no download URL: built or installed "
            "locally, so no lock can pin where to fetch them",
            "upload them to a channel (or a local folder channel indexed with `conda index`), "
            "install them from there, and capture again",
        )
    out: list[CondaPackage] = []
    for pkg in env.conda.packages:
        check_package(pkg)
        if pkg.md5 is None or pkg.sha256 is None:
            progress(f"fetching {pkg.name} {pkg.version} to complete its hashes")
            path = fetch(pkg, config)
            md5, sha = _hashes(path)
            pkg = replace(pkg, md5=md5, sha256=sha)
        out.append(pkg)
    return out


def _pip_entries(pip: Sequence[LockedPackage]) -> list[tuple[str, str, str, str]]:
    """(name, version, url, sha256) of each index package of the pip lock."""
    out = []
    for lp in pip:
        if lp.kind != "index" or not lp.files:
            continue
        chosen = next((f for f in lp.files if f.filename == lp.installed), None)
        chosen = chosen or next((f for f in lp.files if f.is_wheel and f.sha256), None)
        chosen = chosen or next((f for f in lp.files if f.sha256), None)
        if chosen is None or not chosen.sha256:
            raise LockError(
                f"pip package {lp.name} {lp.version} has no sha256 on the index",
                "use an index that publishes sha256 hashes",
            )
        out.append((lp.name, lp.version, strip_url_credentials(chosen.url), chosen.sha256))
    return out


def render_conda_lock(
    env: Environment, packages: Sequence[CondaPackage], pip: Sequence[LockedPackage]
) -> str:
    """conda-lock.yml text, built with conda-lock's models and checked by its own parser."""
    assert env.conda is not None
    models, Channel, write_lock, parse_lock = _models()
    platform = env.conda.platform or "linux-64"
    deps = []
    for pkg in sorted(packages, key=lambda p: p.name):
        deps.append(
            models.LockedDependency(
                name=pkg.name,
                version=pkg.version,
                manager="conda",
                platform=platform,
                dependencies=split_depends(pkg.depends),
                url=pkg.url,
                hash=models.HashModel(md5=pkg.md5, sha256=pkg.sha256),
                build=pkg.build,
                categories={"main"},
            )
        )
    for name, version, url, sha in _pip_entries(pip):
        deps.append(
            models.LockedDependency(
                name=name,
                version=version,
                manager="pip",
                platform=platform,
                dependencies={},
                url=url,
                hash=models.HashModel(sha256=sha),
                categories={"main"},
            )
        )
    content_hash = sha256_hex(
        canonical_json(
            {
                "conda": env.conda.identity(),
                "pip": [list(e) for e in _pip_entries(pip)],
            }
        )
    )
    lockfile = models.Lockfile(
        package=deps,
        metadata=models.LockMeta(
            content_hash={platform: content_hash},
            channels=[Channel.from_string(c) for c in env.conda.channels],
            platforms=[platform],
            sources=["environment.json"],
            custom_metadata={"reprobox.environment_digest": env.digest},
        ),
    )
    with tempfile.TemporaryDirectory(prefix="reprobox-conda-lock-") as tmp:
        path = Path(tmp) / CONDA_LOCK_FILE
        write_lock(lockfile, path, metadata_choices=(), include_help_text=False)
        back = parse_lock(path)
        if len(back.package) != len(deps):
            raise LockError(f"conda-lock read back {len(back.package)} packages of {len(deps)}")
        return path.read_text(encoding="utf-8")


def render_explicit(
    env: Environment, packages: Sequence[CondaPackage], pip: Sequence[LockedPackage]
) -> str:
    assert env.conda is not None
    lines = [
        "# This file may be used to create an environment using:",
        "# $ conda create --name <env> --file conda-explicit.txt",
        f"# platform: {env.conda.platform or 'linux-64'}",
        f"# environment digest: {env.digest}",
        "@EXPLICIT",
    ]
    lines += [f"{p.url}#sha256:{p.sha256}" for p in topological(packages)]
    entries = _pip_entries(pip)
    if entries:
        lines.append("# pip packages (install after, with --no-deps --require-hashes):")
        lines += [f"# pip {n}=={v} --hash=sha256:{s}" for n, v, _u, s in entries]
    return "\n".join(lines) + "\n"


def lock_conda(
    env: Environment,
    pip: Sequence[LockedPackage] = (),
    *,
    config: Optional[CondaConfig] = None,
    progress: Optional[Progress] = None,
) -> dict[str, str]:
    """The two conda lock files for ``env`` (which has a conda part)."""
    if env.conda is None:
        return {}
    say = progress or (lambda _m: None)
    config = config if config is not None else read_conda_config()
    packages = complete_hashes(env, config, say)
    return {
        CONDA_LOCK_FILE: render_conda_lock(env, packages, pip),
        EXPLICIT_FILE: render_explicit(env, packages, pip),
    }
