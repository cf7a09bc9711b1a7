"""``reprobox base``: the image, from a root file system and an interpreter.

The recipe for a copied interpreter is ``templates/base.Dockerfile.j2`` (shown as
``Dockerfile.base`` at the top of the repository); for Debian's own interpreter,
``templates/base-debian.Dockerfile.j2``.
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from ..model import grammar as validate
from ..capture import system
from ..engine import BuildRequest, Engine, get_engine
from ..errors import ReproboxError, UsageError
from ..templating import render_template
from .interpreter import (
    HostInterpreter,
    find_interpreter,
    needed_libraries,
    owning_packages,
    stage_interpreter,
)
from .releases import DEBIAN_RELEASES, check_codename, check_python_release
from .rootfs import SLIM_PACKAGES, Progress, host_release, make_rootfs, scratch_dir


def base_tags(version: str, codename: str) -> tuple[str, str]:
    return f"python:{version}-slim-{codename}", f"reprobox/python:{version}-slim-{codename}"


def render_base_dockerfile(version: str, codename: str, rootfs: str, source: str) -> str:
    """The recipe laying the staged interpreter out like the official image (pure)."""
    check_python_release(version, "--python")
    check_codename(codename, "--os")
    mm = ".".join(version.split(".")[:2])
    source = validate.label_value(source, "interpreter source")
    return render_template(
        "base.Dockerfile.j2",
        version=version,
        mm=mm,
        codename=codename,
        rootfs=rootfs,
        source=source,
    )


def _installed_versions(names: Iterable[str]) -> dict[str, str]:
    """package -> version, for those of ``names`` installed here (dpkg)."""
    found = system.dpkg_versions(names)
    return {name: found[name][1] for name in names if name in found}


def _build_packaged_base(
    interp: HostInterpreter, codename: str, engine: Engine, report: Progress
) -> str:
    """The base for Debian's own interpreter: the same ``pythonX.Y`` packages, same versions."""
    version, mm = interp.version, interp.mm
    host_id, host_code = host_release()
    if host_id != "debian" or host_code != codename or not shutil.which("dpkg-query"):
        raise UsageError(
            f"the only Python {version} here is {host_id or 'the system'} {host_code or ''}'s "
            f"own ({interp.executable}), which exists as such only on Debian {host_code or '?'}",
            f"install a relocatable Python {version} (`uv python install {version}` or `pyenv "
            f"install {version}`) to build a {codename} base, or build on a Debian {codename} "
            "machine",
        )
    names = [
        f"python{mm}",
        f"python{mm}-minimal",
        f"libpython{mm}-minimal",
        f"libpython{mm}-stdlib",
    ]
    pins = _installed_versions(names)
    if f"python{mm}-minimal" not in pins:
        raise UsageError(
            f"{interp.executable} does not come from Debian's python{mm} package",
            f"install a relocatable Python {version}: `uv python install {version}`",
        )
    report(f"interpreter: {interp.executable} (Debian's python{mm} {pins[f'python{mm}-minimal']})")
    rootfs = make_rootfs(
        codename,
        sorted(set(SLIM_PACKAGES) | {f"python{mm}"}),
        engine,
        report,
        pins=pins,
        check_python=f"{mm}:{version}",
    )
    tag, alias = base_tags(version, codename)
    got = engine.run_container(rootfs, ["dpkg-query", "-W", "-f=${Version}", f"python{mm}-minimal"])
    package_version = got.output.strip()
    if got.exit_code != 0 or not re.fullmatch(r"[0-9A-Za-z.+~:-]{1,100}", package_version):
        said = got.output.strip()[:200] or "no output"
        raise ReproboxError(
            f"cannot read the python{mm} package version in {rootfs}: dpkg-query exited with "
            f"status {got.exit_code}: {said}"
        )
    if package_version != pins[f"python{mm}-minimal"]:
        report(
            f"warning: the base has Debian's python{mm} {package_version}, this machine "
            f"{pins[f'python{mm}-minimal']} (both Python {version})"
        )
    work = Path(tempfile.mkdtemp(prefix="reprobox-base-", dir=scratch_dir()))
    try:
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(
            render_template(
                "base-debian.Dockerfile.j2",
                version=version,
                mm=mm,
                codename=codename,
                rootfs=rootfs,
                package_version=package_version,
            )
        )
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = engine.build(
            BuildRequest(
                context=work,
                dockerfile=dockerfile,
                tag=tag,
                labels={"org.opencontainers.image.created": created},
                buildkit=engine.buildkit() is not None,
            ),
            report,
        )
        engine.tag_image(result.image_id, alias)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"tagged {tag} and {alias}")
    return tag


def build_base(
    python_version: str,
    codename: str = "bookworm",
    *,
    progress: Optional[Progress] = None,
    force: bool = False,
) -> str:
    """Build ``python:<python_version>-slim-<codename>`` with no registry; return its tag."""
    report = progress or (lambda _line: None)
    check_python_release(python_version, "--python")
    check_codename(codename, "--os")
    if codename not in DEBIAN_RELEASES:
        raise UsageError(
            f"{codename!r} is not a Debian release reprobox knows",
            "use one of: " + ", ".join(DEBIAN_RELEASES),
        )
    engine = get_engine()
    tag, alias = base_tags(python_version, codename)
    if not force and engine.image_exists(tag):
        report(f"{tag} is already on this machine")
        return tag

    interp = find_interpreter(python_version)
    if interp.kind == "distribution":
        return _build_packaged_base(interp, codename, engine, report)
    report(
        f"interpreter: {interp.executable} ({interp.kind}, "
        f"{'shared' if interp.shared else 'static'} libpython)"
    )
    libs = needed_libraries(interp)
    owners, unowned = owning_packages(libs)
    host_id, host_code = host_release()
    if owners and (host_id != "debian" or host_code != codename):
        raise UsageError(
            f"the Python {python_version} at {interp.prefix} links to this machine's "
            f"{host_id or 'system'} {host_code or ''} libraries ({', '.join(sorted(owners))}), "
            f"which Debian {codename} may not carry in the same versions",
            f"build the base on a Debian {codename} machine, or use a self-contained build: "
            f"`uv python install {python_version}`",
        )
    packages = sorted(set(SLIM_PACKAGES) | owners)
    rootfs = make_rootfs(codename, packages, engine, report)

    work = Path(tempfile.mkdtemp(prefix="reprobox-base-", dir=scratch_dir()))
    try:
        report(f"copying Python {python_version} from {interp.prefix}")
        stage_interpreter(interp, work / "python", unowned)
        source = f"{interp.kind} build at {interp.prefix}"
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(render_base_dockerfile(python_version, codename, rootfs, source))
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        bk = engine.buildkit()
        result = engine.build(
            BuildRequest(
                context=work,
                dockerfile=dockerfile,
                tag=tag,
                labels={"org.opencontainers.image.created": created},
                buildkit=bk is not None,
            ),
            report,
        )
        engine.tag_image(result.image_id, alias)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"tagged {tag} and {alias}")
    return tag
