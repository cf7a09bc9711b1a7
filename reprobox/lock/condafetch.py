"""Fetch recorded conda packages on the host, through its conda configuration, hash-checked.

Each package of a capture names its archive by URL with md5 and (usually) sha256. Before any of
it is used, the record is checked against strict grammars (a capture may be untrusted input):
the name, version and build of a conda package, a known subdir, an ``https``/``http``/``file``
URL that really is ``<channel>/<subdir>/<name>-<version>-<build>.conda|.tar.bz2``, hex hashes.
Then the archive is fetched from the places the host's configuration names for that channel
(mirrors, ``custom_channels``, ``channel_alias``, the channel with its token), checked against
every recorded hash, and kept in a cache by hash so that the next rebuild downloads nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from ..capture.conda import strip_token
from ..diff import channel_display
from ..errors import LockError, ReproboxError, UsageError
from ..model import CondaEnvironment, CondaPackage, Environment
from ..model.condacheck import check_package
from .condaconfig import CondaConfig

CHUNK = 1 << 20


class CondaFetchError(ReproboxError):
    """A recorded conda package could not be fetched or did not match its hashes."""


class CondaAuthError(CondaFetchError):
    """The channel wants credentials the host's conda configuration does not have."""


class CondaUnlockable(LockError):
    """A conda package that no rebuild can fetch (no URL: built locally)."""

    exit_code = 2


def require_url(pkg: CondaPackage) -> str:
    if not pkg.url:
        raise CondaUnlockable(
            f"conda package {pkg.name} {pkg.version} ({pkg.build}) has no download URL: it was "
            "built or installed locally, so no rebuild can fetch it",
            f"upload {pkg.name} to a channel (or a local folder channel: `conda index DIR`), "
            "install it from there, and capture again",
        )
    return pkg.url


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "conda-pkgs"


def _hashes(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _check_hashes(pkg: CondaPackage, path: Path, where: str) -> tuple[str, str]:
    md5, sha = _hashes(path)
    for algo, want, got in (("md5", pkg.md5, md5), ("sha256", pkg.sha256, sha)):
        if want is not None and want != got:
            raise CondaFetchError(
                f"conda package {pkg.name} {pkg.version} ({pkg.build}): the archive from "
                f"{where} has {algo} {got}, the capture recorded {want}",
                "the channel serves another file than the one captured (rebuilt or replaced); "
                "check the channel, or re-capture the environment if the change is wanted",
            )
    return md5, sha


def _opener(config: CondaConfig) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler(dict(config.proxies))]
    if config.ssl_verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    elif isinstance(config.ssl_verify, str) and config.ssl_verify.lower() not in ("true", "1"):
        handlers.append(
            urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=config.ssl_verify)
            )
        )
    return urllib.request.build_opener(*handlers)


def _download(opener: urllib.request.OpenerDirector, url: str, dest: Path) -> None:
    parts = urlsplit(url)
    headers = {"User-Agent": "reprobox"}
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        url = urlunsplit(
            (parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, parts.query, parts.fragment)
        )
    request = urllib.request.Request(url, headers=headers)
    with opener.open(request, timeout=120) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, CHUNK)


def fetch(pkg: CondaPackage, config: CondaConfig, cache: Optional[Path] = None) -> Path:
    """The recorded archive of ``pkg`` as a local file whose md5 and sha256 match the record."""
    check_package(pkg)
    url = require_url(pkg)
    if pkg.md5 is None and pkg.sha256 is None:
        raise CondaUnlockable(
            f"conda package {pkg.name} {pkg.version} ({pkg.build}) was recorded without any "
            "hash, so what a rebuild fetches could not be checked",
            "reinstall it with a current conda, mamba or pixi (they record md5 and sha256) "
            "and capture again",
        )
    cache = cache or cache_dir()
    name = url.rsplit("/", 1)[-1]
    key = pkg.sha256 or pkg.md5
    cached = cache / f"{key}-{name}"
    if cached.is_file():
        try:
            _check_hashes(pkg, cached, str(cached))
            return cached
        except CondaFetchError:
            cached.unlink()
    channel = pkg.channel or url.rsplit("/", 2)[0]
    rest = url[len(channel) :].lstrip("/")
    shown = channel_display(channel)
    cache.mkdir(parents=True, exist_ok=True)
    opener = None
    auth_refused: Optional[str] = None
    failures: list[str] = []
    for base in config.candidates(channel, shown):
        candidate = base.rstrip("/") + "/" + rest
        clean = strip_token(candidate)
        if candidate.startswith("file:"):
            local = Path(unquote(urlsplit(candidate).path))
            if not local.is_file():
                failures.append(f"{clean}: no such file")
                continue
            _check_hashes(pkg, local, clean)
            return local
        opener = opener or _opener(config)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".part-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _download(opener, candidate, tmp)
            _check_hashes(pkg, tmp, clean)
            os.replace(tmp, cached)
            return cached
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                auth_refused = f"{strip_token(base)} (HTTP {exc.code})"
            failures.append(f"{clean}: HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(f"{clean}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    if auth_refused:
        raise CondaAuthError(
            f"conda package {pkg.name} {pkg.version} ({pkg.build}): the channel {auth_refused} "
            "refused the download: it needs a token or password this host's conda "
            "configuration does not have",
            f"add the channel with its token to ~/.condarc (e.g. `channels: "
            f"[{channel_with_token_hint(channel)}]`, or `custom_channels`), then run again",
        )
    raise CondaFetchError(
        f"conda package {pkg.name} {pkg.version} ({pkg.build}) could not be fetched: "
        + "; ".join(failures),
        f"check that the channel {shown} answers from this host (its URL, a mirror in "
        "~/.condarc's mirrored_channels, or a proxy in proxy_servers)",
    )


def channel_with_token_hint(channel: str) -> str:
    parts = urlsplit(channel)
    if parts.scheme not in ("http", "https"):
        return channel
    return urlunsplit((parts.scheme, parts.netloc, "/t/<TOKEN>" + parts.path, "", ""))


def require_conda(environment: Environment, exp_id: str) -> CondaEnvironment:
    """The conda part of a capture, or a usage error for a capture that has none."""
    if environment.conda is None:
        raise UsageError(
            f"experiment {exp_id} was not captured in a conda environment, so --backend conda "
            "has nothing to recreate",
            "use `--backend venv` or `--backend docker` for it",
        )
    return environment.conda
