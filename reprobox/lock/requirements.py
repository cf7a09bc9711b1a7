"""``requirements.lock``: pip's hash-checking format, written from a lock (pure rendering).

Only index packages go in as requirements: pip's ``--require-hashes`` refuses VCS and directory
requirements, so those are described in the header and installed separately (the container build
does it in its own layer, from environment.json / pylock.toml).

No option line is written (``--index-url``, ``--extra-index-url``, ``--find-links``): where
packages come from is the installing machine's own pip configuration, and
:func:`reprobox.lock.checks.check_requirements_lock` refuses any option line in a lock before
it is used. Extra indexes and find-links locations that served a locked package are named in a
comment, credentials stripped, so that a reader knows what to configure.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence
from urllib.parse import urlsplit

from ..redact import strip_url_credentials
from .config import IndexConfig
from .pylock import vcs_url
from .result import LockedPackage
from .select import Target

INSTALL_COMMAND = "pip install --require-hashes --no-deps -r requirements.lock"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

#: pip 10.0 added the PEP 508 ``name @ url`` form (pip's NEWS, 10.0.0b1: "Add support for the
#: new ``@ url`` syntax from PEP 508"); older pips need ``url#egg=name``.
_PIP_AT_FORM = (10, 0)
#: Until pip 24.1 (which vendors packaging 24.1), ``name @ URL`` is refused for a URL with no
#: host other than a plain ``file:`` one: ``name @ git+file:///repo@sha`` is an "Invalid
#: requirement" for pip 24.0 and older (checked on pip 22.3.1 to 25.0).
_PIP_AT_FORM_NO_HOST = (24, 1)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


def pip_accepts_at_form(pip_version: Optional[str], url: str = "") -> bool:
    """Whether this pip version takes ``name @ url`` for ``url`` (unknown pip: a current one)."""
    if not pip_version or not _version_tuple(pip_version):
        return True
    parts = urlsplit(url)
    no_host = bool(url) and parts.scheme != "file" and not parts.netloc
    need = _PIP_AT_FORM_NO_HOST if no_host else _PIP_AT_FORM
    return _version_tuple(pip_version) >= need


def url_requirement(
    name: str, url: str, pip_version: Optional[str] = None, fragment: tuple[str, ...] = ()
) -> str:
    """A requirement installing ``name`` from ``url`` in the form ``pip_version`` accepts:
    ``name @ url[#frag]`` where it can, else ``url#egg=name[&frag]``."""
    if pip_accepts_at_form(pip_version, url):
        return f"{name} @ {url}" + ("#" + "&".join(fragment) if fragment else "")
    return f"{url}#" + "&".join((f"egg={name}", *fragment))


def vcs_requirement(
    name: str,
    url: str,
    vcs: str,
    commit: str,
    subdirectory: Optional[str] = None,
    pip_version: Optional[str] = None,
) -> str:
    """``name @ git+URL@commit`` (or ``git+URL@commit#egg=name`` for pip < 10)."""
    full = url if url.startswith(f"{vcs}+") else f"{vcs}+{url}"
    frag = (f"subdirectory={subdirectory}",) if subdirectory else ()
    return url_requirement(name, f"{full}@{commit}", pip_version, frag)


def _safe(text: str) -> str:
    """One line of comment text: no control character can start a new requirement line."""
    return _UNSAFE.sub("?", text)


def describe_separate(pkg: LockedPackage, pip_version: Optional[str] = None) -> str:
    """How a package outside requirements.lock is installed (for the header comment).

    A VCS package is named by the requirement that installs it, in the form the recorded pip
    accepts (``name @ git+URL@commit`` from pip 10 on, ``git+URL@commit#egg=name`` before); a
    package from a repository on the capture machine by the file of the experiment holding its
    source at that commit.
    """
    src = pkg.origin
    if pkg.kind == "vcs" and src is not None:
        url = strip_url_credentials(src.url or "")
        if url.startswith("file:") or url.startswith(f"{src.vcs or 'git'}+file:"):
            if src.path and src.hash:
                return (
                    f"{src.vcs or 'vcs'} commit {src.commit} of {url} on the capture "
                    f"machine, sealed into the experiment as {src.path} ({src.hash})"
                )
            return (
                f"{src.vcs or 'vcs'} commit {src.commit} of {url} on the capture machine "
                "(not carried by the capture: a rebuild cannot install it)"
            )
        vcs = src.vcs or "git"
        return vcs_requirement(
            pkg.name, vcs_url(url, vcs), vcs, src.commit or "", src.subdirectory, pip_version
        )
    if pkg.kind == "directory":
        edit = "editable " if src is not None and src.editable else ""
        where = pkg.repo_path or "."
        return f"{edit}directory {where} of the repository, at the experiment's commit"
    if pkg.kind == "archive" and src is not None:
        if pkg.repo_path:
            return f"archive {pkg.repo_path} of the repository, {src.hash or 'no hash'}"
        return f"archive {strip_url_credentials(src.url or '')} {src.hash or ''}".rstrip()
    return pkg.kind


def render_requirements(
    packages: Sequence[LockedPackage],
    *,
    target: Target,
    environment_digest: str,
    config: IndexConfig,
    tool_version: str,
) -> str:
    index_pkgs = [p for p in packages if p.kind == "index"]
    separate = [p for p in packages if p.kind != "index"]
    red = config.redacted()
    machine = f" {target.machine}" if target.machine else ""
    out = [
        f"# requirements.lock written by reprobox {tool_version} from the captured environment:",
        "# the exact distributions that were installed (not a new resolution), each pinned with",
        "# the sha256 of the installed file and of the other files a Linux rebuild of the same",
        "# interpreter could pick.",
        (
            f"# Environment {environment_digest}: Python {target.full_version} "
            f"({target.implementation}) on {target.sys_platform}{machine}"
        ),
        "# Install into a fresh virtual environment of that Python:",
        f"#     {INSTALL_COMMAND}",
    ]
    if not red.no_index:
        out.append(
            f"# Primary index: {_safe(red.index_url)} (the installer's own index-url "
            "applies; it is not written here)"
        )
    if separate:
        out += ["#", "# Installed separately (hash-checking mode refuses them; see pylock.toml):"]
        width = max(len(p.name) for p in separate)
        pip = next((p.version for p in index_pkgs if p.name == "pip"), None)
        for p in sorted(separate, key=lambda p: p.name):
            out.append(f"#     {p.name.ljust(width)}  {_safe(describe_separate(p, pip))}")
    out.append("")

    extra_idx, links = [], []
    primary = strip_url_credentials(config.index_url)
    for p in index_pkgs:
        src = p.source
        if src is None:
            continue
        loc = _safe(src.redacted)
        if src.kind == "index" and loc != primary and loc not in extra_idx:
            extra_idx.append(loc)
        elif src.kind == "find-links" and loc not in links:
            links.append(loc)
    # keep pip's configured order, not the order packages happened to need them
    order = {
        strip_url_credentials(u): i
        for i, u in enumerate((*config.extra_index_urls, *config.find_links))
    }

    def rank(u: str) -> int:
        return order.get(u, 1 << 30)

    sources = [f"extra index {loc}" for loc in sorted(extra_idx, key=rank)]
    sources += [f"find-links {loc}" for loc in sorted(links, key=rank)]
    if sources:
        # not install options: indexes come only from the installing machine's configuration
        out.append("# Also served by (configure them in pip's configuration to rebuild):")
        out += [f"#     {s}" for s in sources]
        out.append("")

    for p in sorted(index_pkgs, key=lambda p: p.name):
        notes = []
        if p.source is not None and p.source.redacted != primary:
            notes.append(f"from {p.source.describe()}")
        if p.built_from_sdist:
            notes.append("built from its sdist on the capture host: the sdist is locked")
        if notes:
            out.append(f"# {p.name}: {_safe('; '.join(notes))}")
        hashes = sorted({f.sha256 for f in p.files if f.sha256})
        out.append(f"{p.name}=={p.version} \\")
        for i, digest in enumerate(hashes):
            tail = " \\" if i + 1 < len(hashes) else ""
            out.append(f"    --hash=sha256:{digest}{tail}")
    return "\n".join(out) + "\n"
