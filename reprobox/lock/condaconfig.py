"""The host's conda configuration, for fetching locked conda packages (as config.py is for pip).

Read from the files conda itself reads, lowest priority first (``/etc/conda/.condarc``,
``/etc/conda/condarc``, ``/etc/conda/condarc.d/*.yml``, ``$CONDA_ROOT/.condarc``,
``~/.config/conda/.condarc``, ``~/.conda/.condarc``, ``~/.condarc``, ``$CONDA_PREFIX/.condarc``,
``$CONDARC``) plus ``CONDA_CHANNEL_ALIAS`` / ``CONDA_PROXY_SERVERS_*`` style variables:

* ``channel_alias``: where ``conda.anaconda.org/<name>`` channels are fetched from instead;
* ``custom_channels``: ``name: base URL`` — a recorded ``https://conda.anaconda.org/<name>``
  (or any URL ending in ``/<name>``) is fetched from ``<base URL>/<name>``;
* ``mirrored_channels``: ``name or URL: [mirror URLs]`` — tried first, in order;
* ``channels`` / ``default_channels`` / ``custom_channels`` entries carrying a token
  (``https://host/t/<token>/chan``) or ``user:password@``: used to fetch that channel;
* ``proxy_servers`` and ``ssl_verify`` (a CA bundle path, or false).

Credentials live only in memory: what reprobox writes names channels by their cleaned URL
(:func:`reprobox.capture.conda.strip_token`), and messages show them cleaned too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..capture.conda import DEFAULT_CHANNEL_ALIAS, channel_url, strip_token
from ..errors import UsageError


@dataclass(frozen=True)
class CondaConfig:
    channel_alias: Optional[str] = None  # may carry a token: memory only
    #: cleaned channel base URL -> the same channel as configured (with its token)
    authenticated: Mapping[str, str] = field(default_factory=dict)
    #: channel name -> base URL (``custom_channels``)
    custom_channels: Mapping[str, str] = field(default_factory=dict)
    #: cleaned channel base URL, or channel name -> mirror base URLs, in order
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    proxies: Mapping[str, str] = field(default_factory=dict)
    ssl_verify: Any = True  # True | False | path to a CA bundle
    files: tuple[str, ...] = ()

    def candidates(self, channel: str, name: str) -> list[str]:
        """Base URLs to fetch channel ``channel`` (cleaned, as recorded) from, best first.

        ``name`` is the channel's short name (``conda-forge``), used for ``custom_channels``,
        ``mirrored_channels`` by name and ``channel_alias``.
        """
        out: list[str] = []
        for key in (channel, name):
            out.extend(self.mirrors.get(key, ()))
        base = self.authenticated.get(channel, channel)
        clean_alias = strip_token(self.channel_alias) if self.channel_alias else None
        if base == channel and clean_alias and channel.startswith(clean_alias + "/"):
            # a token on the alias applies to every channel reached through it
            base = str(self.channel_alias) + channel[len(clean_alias) :]
        if name in self.custom_channels:
            custom = self.custom_channels[name].rstrip("/") + "/" + name
            base = self.authenticated.get(strip_token(custom), custom)
        elif self.channel_alias and channel.startswith(DEFAULT_CHANNEL_ALIAS + "/"):
            aliased = self.channel_alias.rstrip("/") + "/" + name
            base = self.authenticated.get(strip_token(aliased), aliased)
        out.append(base)
        seen: set[str] = set()
        return [u for u in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


def config_files(environ: Mapping[str, str]) -> list[Path]:
    home = Path(environ.get("HOME") or Path.home())
    files = [Path("/etc/conda/.condarc"), Path("/etc/conda/condarc")]
    d = Path("/etc/conda/condarc.d")
    if d.is_dir():
        files += sorted(d.glob("*.yml")) + sorted(d.glob("*.yaml"))
    if environ.get("CONDA_ROOT"):
        files.append(Path(environ["CONDA_ROOT"]) / ".condarc")
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    files += [
        xdg / "conda" / ".condarc",
        xdg / "conda" / "condarc",
        home / ".conda" / ".condarc",
        home / ".condarc",
    ]
    if environ.get("CONDA_PREFIX"):
        files.append(Path(environ["CONDA_PREFIX"]) / ".condarc")
    if environ.get("CONDARC"):
        files.append(Path(environ["CONDARC"]))
    return files


def _load(path: Path) -> dict[str, Any]:
    import yaml  # lazy: PyYAML costs ~12 ms to import, needed only where a .condarc exists

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(
            f"the conda configuration {path} is not valid YAML: {exc}",
            f"fix {path} (conda itself would refuse it too)",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"the conda configuration {path} is not a mapping of settings", f"fix {path}"
        )
    return data


def read_conda_config(environ: Optional[Mapping[str, str]] = None) -> CondaConfig:
    """Merge the host's conda configuration files (later files win, lists are joined)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    used: list[str] = []
    for path in config_files(environ):
        data = _load(path)
        if not data:
            continue
        used.append(str(path))
        for key, value in data.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + [v for v in value if v not in merged[key]]
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    alias = environ.get("CONDA_CHANNEL_ALIAS") or merged.get("channel_alias")
    alias = str(alias).rstrip("/") if alias else None
    custom = {str(k): str(v).rstrip("/") for k, v in (merged.get("custom_channels") or {}).items()}
    authenticated: dict[str, str] = {}
    configured = [str(c) for c in (merged.get("channels") or []) if isinstance(c, str)]
    configured += [str(c) for c in (merged.get("default_channels") or []) if isinstance(c, str)]
    configured += [f"{v}/{k}" for k, v in custom.items()]
    for entry in configured:
        if "://" not in entry:
            continue
        full = entry.rstrip("/")
        if full != strip_token(full):
            authenticated[channel_url(full)] = full
    mirrors: dict[str, tuple[str, ...]] = {}
    for key, value in (merged.get("mirrored_channels") or {}).items():
        urls = value if isinstance(value, list) else [value]
        target = channel_url(str(key)) if "://" in str(key) else str(key)
        mirrors[target] = tuple(str(u).rstrip("/") for u in urls if isinstance(u, str))
    proxies = {str(k): str(v) for k, v in (merged.get("proxy_servers") or {}).items()}
    for scheme in ("http", "https"):
        var = environ.get(f"{scheme.upper()}_PROXY") or environ.get(f"{scheme}_proxy")
        if var and scheme not in proxies:
            proxies[scheme] = var
    ssl_verify = merged.get("ssl_verify", True)
    if environ.get("CONDA_SSL_VERIFY"):
        ssl_verify = environ["CONDA_SSL_VERIFY"]
    if isinstance(ssl_verify, str) and ssl_verify.lower() in ("false", "0", "no"):
        ssl_verify = False
    return CondaConfig(
        channel_alias=alias,
        authenticated=authenticated,
        custom_channels=custom,
        mirrors=mirrors,
        proxies=proxies,
        ssl_verify=ssl_verify,
        files=tuple(used),
    )


__all__ = ["CondaConfig", "read_conda_config"]
