"""Re-resolve a macOS or Windows capture for a Linux container platform.

A capture made on another OS cannot always be installed on Linux as it is: a package may exist
only there (``pywin32``, ``appnope``), or a pinned version may have no Linux file. This is the one
place reprobox resolves: ``uv pip compile`` for the target platform and the captured Python, with
the captured pins seeded in its output file so that uv keeps every version it can (uv treats an
existing output file as preferences) and the user's own requirements (the ``REQUESTED`` packages)
as inputs, so a dependency that is only needed on the capture OS falls away. Every version that
changed, appeared or disappeared is reported.

uv is used rather than pip-tools because pip-compile can only resolve for the interpreter it runs
in; uv resolves for any ``--python-platform``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Mapping, Optional


from .. import proc
from ..errors import CommandError, LockError, ToolMissing
from ..model import Environment
from ..names import canonical_name
from ..redact import redact_text
from .config import IndexConfig
from .result import VersionChange
from .select import Target
from .uv import find_uv  # the uv reprobox depends on, also off PATH (pipx)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\#]+)")


def uv_environ(config: IndexConfig, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment that makes uv use pip's indexes, CA bundle and proxies (credentials kept:
    this goes to a child process, never to a file)."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("UV_", "PIP_"))
    }
    env["UV_NO_CONFIG"] = "1"
    if not config.no_index:  # no-index has no variable: uv_args() passes --no-index
        env["UV_INDEX_URL"] = config.index_url
        if config.extra_index_urls:
            env["UV_EXTRA_INDEX_URL"] = " ".join(config.extra_index_urls)
    if config.find_links:
        env["UV_FIND_LINKS"] = ",".join(config.find_links)
    if config.cert:
        env["SSL_CERT_FILE"] = config.cert
    if config.client_cert:
        env["SSL_CLIENT_CERT"] = config.client_cert
    if config.trusted_hosts:
        env["UV_INSECURE_HOST"] = " ".join(config.trusted_hosts)
    for scheme, var in (("http", "HTTP_PROXY"), ("https", "HTTPS_PROXY"), ("no", "NO_PROXY")):
        if scheme in config.proxies:
            env[var] = config.proxies[scheme]
    return env


def uv_args(config: IndexConfig) -> list[str]:
    """Command-line flags that go with :func:`uv_environ` (those uv reads from no variable)."""
    return ["--no-index"] if config.no_index else []


def uv_platform(target: Target) -> str:
    return f"{target.machine}-unknown-linux-gnu"


def _direct_requirement(pkg, repo_root: Path) -> Optional[str]:
    src = pkg.source
    if src.kind == "vcs" and src.url and src.commit:
        url = src.url if src.url.startswith(f"{src.vcs}+") else f"{src.vcs}+{src.url}"
        sub = f"#subdirectory={src.subdirectory}" if src.subdirectory else ""
        return f"{pkg.name} @ {url}@{src.commit}{sub}"
    if src.kind == "directory" and src.in_repo and src.path:
        return f"{pkg.name} @ {(Path(repo_root) / src.path).resolve().as_uri()}"
    return None


def parse_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a compiled requirements file (canonical names)."""
    out = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            out[str(canonical_name(m.group(1)))] = m.group(2)
    return out


def diff_pins(captured: Mapping[str, str], locked: Mapping[str, str]) -> tuple[VersionChange, ...]:
    changes = []
    for name in sorted(set(captured) | set(locked)):
        old, new = captured.get(name), locked.get(name)
        if old != new:
            changes.append(VersionChange(name, old, new))
    return tuple(changes)


def reresolve(
    env: Environment,
    target: Target,
    *,
    config: IndexConfig,
    repo_root: Path,
    cache_dir: Optional[Path] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, str], tuple[VersionChange, ...]]:
    """Versions of the index packages for ``target``, and every change from the capture."""
    found = find_uv()
    uv = str(found) if found is not None else proc.which("uv")
    if uv is None:
        raise ToolMissing(
            "a cross-platform lock needs uv, which is not installed",
            "install it (`pip install uv`), or lock on a machine of the target platform",
        )
    index_pkgs = [p for p in env.packages if p.source.kind == "index"]
    captured = {p.name: p.version for p in index_pkgs}
    direct_names = {p.name for p in env.packages if p.source.kind != "index"}
    inputs = [p.name for p in index_pkgs if p.requested] or [p.name for p in index_pkgs]
    direct = [r for p in env.packages if (r := _direct_requirement(p, repo_root))]
    if not inputs and not direct:
        return {}, ()
    with tempfile.TemporaryDirectory(prefix="reprobox-xlock-") as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join([*sorted(inputs), *direct]) + "\n")
        out = Path(tmp) / "requirements.txt"
        out.write_text("".join(f"{n}=={v}\n" for n, v in sorted(captured.items())))
        argv = [
            uv,
            "pip",
            "compile",
            str(req_in),
            "-o",
            str(out),
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--python-version",
            target.full_version,
            "--python-platform",
            uv_platform(target),
            "--index-strategy",
            "unsafe-best-match",
            *uv_args(config),
        ]
        if cache_dir is not None:
            argv += ["--cache-dir", str(Path(cache_dir) / "uv")]
        try:
            proc.run(
                argv,
                env=uv_environ(config, environ),
                timeout=600,
                what=f"resolving for linux/{target.machine} with uv",
            )
        except CommandError as exc:
            raise LockError(
                f"the captured packages cannot be resolved for linux/{target.machine}:\n"
                + redact_text(exc.stderr_tail),
                "a package may not exist on Linux at any version; install the environment on "
                "Linux and capture there, or remove that package from the environment",
            ) from None
        pins = parse_pins(out.read_text())
    pins = {n: v for n, v in pins.items() if n not in direct_names}
    return pins, diff_pins(captured, pins)
