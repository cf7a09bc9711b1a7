"""The package-index configuration the host's pip really uses, read without running pip.

A lock is only as good as the indexes it was made from, and a container build must fetch from the
same ones (behind the same proxy, trusting the same CA bundle). So this module reproduces pip's own
reading of its configuration (pip 23's ``configuration.py`` and ``cli/parser.py``):

* files, by *variant*, lowest priority first — global (each ``$XDG_CONFIG_DIRS``/pip/pip.conf,
  default ``/etc/xdg/pip/pip.conf``, then ``/etc/pip.conf``), user (``~/.pip/pip.conf`` then
  ``$XDG_CONFIG_HOME/pip/pip.conf``; skipped when ``PIP_CONFIG_FILE`` names an existing file), site
  (``<environment prefix>/pip.conf``), then the file named by ``PIP_CONFIG_FILE``. (pip's
  documentation says that file is overridden by the others; pip's code merges it *over* them, and
  the code is what runs.) ``PIP_CONFIG_FILE=/dev/null`` disables every file;
* inside the merged files, section ``[global]`` then ``[install]`` (the command that will consume
  the lock); then ``PIP_*`` environment variables override everything;
* list options (``extra-index-url``, ``find-links``, ``trusted-host``, ``constraint``) are one value
  split on whitespace: a later level *replaces* an earlier one, it does not append; empty values
  are ignored.

URLs are kept with their credentials in memory, because fetching needs them; everything written or
printed goes through :meth:`IndexConfig.redacted`.
"""

from __future__ import annotations

import configparser
import netrc
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Optional
from urllib.parse import urlsplit

from ..errors import UsageError
from ..redact import strip_url_credentials

PYPI_SIMPLE = "https://pypi.org/simple"

#: pip options that matter to fetching and installing a lock, by their normalized name.
_KEYS = {
    "index-url": "index_url",
    "extra-index-url": "extra_index_urls",
    "find-links": "find_links",
    "no-index": "no_index",
    "cert": "cert",
    "client-cert": "client_cert",
    "trusted-host": "trusted_hosts",
    "proxy": "proxy",
    "timeout": "timeout",
    "default-timeout": "timeout",
    "retries": "retries",
    "constraint": "constraints",
}
_LIST_KEYS = {"extra_index_urls", "find_links", "trusted_hosts", "constraints"}
#: pip reads this global file after the XDG ones (a module attribute so tests can isolate).
ETC_PIP_CONF = "/etc/pip.conf"
_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


@dataclass(frozen=True)
class IndexConfig:
    """Where packages come from, and how to reach them.

    ``origins`` says where each setting came from (``"env PIP_CERT"``, ``"/etc/pip.conf [global]"``,
    ``"default"``) so that ``reprobox doctor`` and error messages can point at the right file.
    ``constraints`` are recorded because pip applies them at install time too; the lock's pins
    already satisfy them (they were installed under them).
    """

    index_url: str = PYPI_SIMPLE
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    cert: Optional[str] = None
    client_cert: Optional[str] = None
    trusted_hosts: tuple[str, ...] = ()
    #: scheme -> proxy URL ("http", "https"), plus "no" -> comma-separated hosts (NO_PROXY).
    proxies: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 15.0
    retries: int = 2
    constraints: tuple[str, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)
    #: Files read, in the order pip reads them (for messages; never secret themselves).
    files: tuple[str, ...] = ()

    # ------------------------------------------------------------------ views

    @property
    def index_urls(self) -> tuple[str, ...]:
        """The simple-API indexes in pip's order (none under ``no-index``)."""
        if self.no_index:
            return ()
        return (self.index_url, *self.extra_index_urls)

    def redacted(self) -> "IndexConfig":
        """This configuration with credentials stripped from every URL: safe to write or print."""
        return replace(
            self,
            index_url=strip_url_credentials(self.index_url),
            extra_index_urls=tuple(strip_url_credentials(u) for u in self.extra_index_urls),
            find_links=tuple(strip_url_credentials(u) for u in self.find_links),
            proxies={
                k: (v if k == "no" else strip_url_credentials(v)) for k, v in self.proxies.items()
            },
        )

    def has_credentials(self) -> bool:
        """True when some URL carries credentials (the build must pass it as a secret)."""
        return self.redacted() != self

    def to_dict(self) -> dict:
        """Redacted, JSON-friendly form (for ``doctor --json`` and build metadata)."""
        red = self.redacted()
        return {
            "index_url": red.index_url,
            "extra_index_urls": list(red.extra_index_urls),
            "find_links": list(red.find_links),
            "no_index": red.no_index,
            "cert": red.cert,
            "client_cert": red.client_cert,
            "trusted_hosts": list(red.trusted_hosts),
            "proxies": dict(red.proxies),
            "timeout": red.timeout,
            "constraints": list(red.constraints),
            "origins": dict(red.origins),
        }

    def pip_environ(self) -> dict[str, str]:
        """``PIP_*`` variables that make a pip elsewhere use this configuration.

        The values keep their credentials: hand them to a build only as secrets, never as
        build arguments or ``ENV`` lines.
        """
        env: dict[str, str] = {"PIP_INDEX_URL": self.index_url}
        if self.extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
        if self.find_links:
            env["PIP_FIND_LINKS"] = " ".join(self.find_links)
        if self.no_index:
            env["PIP_NO_INDEX"] = "1"
        if self.cert:
            env["PIP_CERT"] = self.cert
        if self.client_cert:
            env["PIP_CLIENT_CERT"] = self.client_cert
        if self.trusted_hosts:
            env["PIP_TRUSTED_HOST"] = " ".join(self.trusted_hosts)
        if "https" in self.proxies:
            env["HTTPS_PROXY"] = self.proxies["https"]
        if "http" in self.proxies:
            env["HTTP_PROXY"] = self.proxies["http"]
        if "no" in self.proxies:
            env["NO_PROXY"] = self.proxies["no"]
        return env

    def is_trusted(self, url: str) -> bool:
        """pip's ``trusted-host``: TLS errors for this host (or host:port) are ignored."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        hostport = f"{host}:{parts.port}" if parts.port else host
        return any(t in (host, hostport) for t in self.trusted_hosts)


# --------------------------------------------------------------------------- reading


def _config_files(environ: Mapping[str, str], prefix: Optional[Path]) -> Iterator[tuple[str, str]]:
    """(variant, path) in pip's override order: later wins."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    for d in xdg_dirs.split(os.pathsep):
        if d:
            yield "global", os.path.join(os.path.expanduser(d), "pip", "pip.conf")
    yield "global", ETC_PIP_CONF
    config_file = environ.get("PIP_CONFIG_FILE")
    if not (config_file and os.path.exists(config_file)):
        home = environ.get("HOME") or os.path.expanduser("~")
        yield "user", os.path.join(home, ".pip", "pip.conf")
        xdg_home = environ.get("XDG_CONFIG_HOME", "").strip() or os.path.join(home, ".config")
        yield "user", os.path.join(xdg_home, "pip", "pip.conf")
    if prefix is not None:
        yield "site", os.path.join(str(prefix), "pip.conf")
    if config_file:
        yield "env", config_file


def _read_ini(path: str) -> Optional[configparser.RawConfigParser]:
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=path)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise UsageError(
            f"pip's configuration file {path} cannot be read: {exc}",
            "fix the file (it is INI: `[global]` then `key = value` lines), or check it with "
            "`pip config debug`",
        ) from None
    return parser


def _norm(name: str) -> str:
    name = name.lower().replace("_", "-")
    return name.removeprefix("--")


def _prefix(environ: Mapping[str, str], venv: Optional[Path]) -> Optional[Path]:
    """The environment whose pip will install: the target env, else the active one."""
    if venv is not None:
        return Path(venv)
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if environ.get(var):
            return Path(environ[var])
    return Path(sys.prefix)


def read_index_config(
    environ: Optional[Mapping[str, str]] = None, venv: Optional[Path] = None
) -> IndexConfig:
    """Read pip's effective index settings from its files and ``PIP_*`` variables.

    ``venv`` is the prefix of the environment whose pip matters (its ``pip.conf`` is the "site"
    file); by default ``$VIRTUAL_ENV``, ``$CONDA_PREFIX``, else this interpreter's prefix.
    ``environ`` defaults to ``os.environ`` (tests pass their own).
    """
    env = dict(os.environ if environ is None else environ)
    # Merge per file at the "section.key" level, variants in order (pip's `_dictionary`).
    merged: dict[str, tuple[str, str]] = {}  # "section.key" -> (value, origin)
    files: list[str] = []
    cfg_file = env.get("PIP_CONFIG_FILE")
    if cfg_file != os.devnull:
        for _variant, path in _config_files(env, _prefix(env, venv)):
            parser = _read_ini(path)
            if parser is None:
                continue
            files.append(path)
            for section in parser.sections():
                for key, value in parser.items(section):
                    merged[f"{section}.{_norm(key)}"] = (value, f"{path} [{section}]")

    values: dict[str, object] = {}
    origins: dict[str, str] = {}

    def apply(key: str, raw: str, origin: str) -> None:
        attr = _KEYS.get(key)
        if attr is None or not raw.strip():
            return  # pip ignores empty values and options install does not know
        value: object
        if attr in _LIST_KEYS:
            value = tuple(raw.split())
        elif attr == "no_index":
            low = raw.strip().lower()
            if low not in _TRUE | _FALSE:
                raise UsageError(
                    f"pip's no-index is set to {raw!r} ({origin}), which is not a boolean",
                    "set it to true or false",
                )
            value = low in _TRUE
        elif attr in ("timeout", "retries"):
            try:
                value = float(raw) if attr == "timeout" else int(raw)
            except ValueError:
                raise UsageError(
                    f"pip's {key} is set to {raw!r} ({origin}), which is not a number",
                    f"fix {key} in {origin.split(' [')[0]}",
                ) from None
        else:
            value = raw.strip()
        values[attr] = value
        origins[attr] = origin

    for section in ("global", "install"):
        for skey, (raw, origin) in merged.items():
            sec, _, key = skey.partition(".")
            if sec == section:
                apply(key, raw, origin)
    for var, raw in env.items():
        if var.startswith("PIP_") and var not in ("PIP_VERSION", "PIP_HELP"):
            apply(_norm(var[4:]), raw, f"env {var}")

    # requests (pip's HTTP library) falls back to these when pip has no `cert`.
    if "cert" not in values:
        for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if env.get(var):
                values["cert"] = env[var]
                origins["cert"] = f"env {var}"
                break

    proxies: dict[str, str] = {}
    for scheme in ("http", "https"):
        for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            if env.get(var):
                proxies[scheme] = env[var]
                origins[f"proxy_{scheme}"] = f"env {var}"
                break
    if "ALL_PROXY" in env or "all_proxy" in env:
        allp = env.get("all_proxy") or env.get("ALL_PROXY") or ""
        for scheme in ("http", "https"):
            proxies.setdefault(scheme, allp)
    for var in ("no_proxy", "NO_PROXY"):
        if env.get(var):
            proxies["no"] = env[var]
            break
    if "proxy" in values:  # pip's own --proxy wins for both schemes
        pip_proxy = str(values.pop("proxy"))
        if "://" not in pip_proxy:
            pip_proxy = "http://" + pip_proxy
        proxies["http"] = proxies["https"] = pip_proxy
        origin = origins.pop("proxy")
        origins["proxy_http"] = origins["proxy_https"] = origin
    proxies = {k: v for k, v in proxies.items() if v}

    def text(key: str) -> Optional[str]:
        value = values.get(key)
        return value if isinstance(value, str) else None

    def words(key: str) -> tuple[str, ...]:
        value = values.get(key, ())
        return tuple(str(v) for v in value) if isinstance(value, tuple) else ()

    timeout, retries = values.get("timeout", 15.0), values.get("retries", 2)
    return IndexConfig(
        index_url=(text("index_url") or PYPI_SIMPLE).rstrip("/") or PYPI_SIMPLE,
        extra_index_urls=tuple(u.rstrip("/") for u in words("extra_index_urls")),
        find_links=words("find_links"),
        no_index=values.get("no_index") is True,
        cert=text("cert"),
        client_cert=text("client_cert"),
        trusted_hosts=words("trusted_hosts"),
        proxies=proxies,
        timeout=float(timeout) if isinstance(timeout, (int, float)) else 15.0,
        retries=int(retries) if isinstance(retries, (int, float)) else 2,
        constraints=words("constraints"),
        origins={"index_url": "default", **origins},
        files=tuple(files),
    )


def project_page(index_url: str, project: str) -> str:
    """The URL of ``project``'s page (``project`` normalized) on the simple index
    ``index_url``."""
    return index_url.rstrip("/") + f"/{project}/"


# --------------------------------------------------------------------------- how pages are asked

#: The User-Agent of every page request (the Python client's and curl's).
USER_AGENT = "reprobox-lock (+https://pypi.org/project/reprobox/)"
#: What a page request accepts: PEP 691's JSON first, HTML after.
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
#: Upper bound for one socket operation, whatever pip's (often generous) timeout says: a capture
#: must not hang for minutes on an unreachable index.
MAX_SOCKET_TIMEOUT = 30.0
#: A host that does not accept a connection within this long is reported unreachable at once
#: (no retries): behind a firewall that drops packets, retrying only multiplies the wait.
MAX_CONNECT_TIMEOUT = 10.0


def timeouts(config: IndexConfig) -> tuple[float, float]:
    """The socket and connect timeouts for ``config``: pip's timeout, bounded."""
    timeout = min(max(config.timeout, 1.0), MAX_SOCKET_TIMEOUT)
    return timeout, min(timeout, MAX_CONNECT_TIMEOUT)


def read_netrc(environ: Mapping[str, str]) -> Optional[netrc.netrc]:
    """~/.netrc (or $NETRC), as requests (pip's HTTP library) reads it; never written."""
    path = environ.get("NETRC") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".netrc"
    )
    if not os.path.isfile(path):
        return None
    try:
        return netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return None
