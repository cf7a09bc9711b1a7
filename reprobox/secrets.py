"""Keeping secrets out of everything reprobox writes or prints.

Two rules: credentials inside URLs are stripped (``https://user:token@host`` -> ``https://host``),
and environment variables whose names look like secrets are never read into a record.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW(OR)?D|PASSWD|PWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE|AUTH|COOKIE|"
    r"SESSION|SIGNATURE|CERT_?KEY|_KEY$|^KEY$|KEY_)",
    re.IGNORECASE,
)

# user:pass@ or token@ in scheme://...  also git's scp-like form keeps user only (git@host:org/repo)
_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<creds>[^/@\s]+@)")


def is_secret_name(name: str) -> bool:
    """True when an environment variable's name suggests it holds a secret."""
    return bool(_SECRET_NAME.search(name))


def strip_url_credentials(url: str) -> str:
    """Remove ``user:password@`` (or ``token@``) from a URL; other text is left as is.

    ``git@github.com:org/repo.git`` (scp-like ssh) keeps its user name, which is not a secret.
    Query strings that carry tokens (``?token=...``, ``?X-Amz-Signature=...``) are dropped too.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_CREDS.sub(lambda m: m.group("scheme"), url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query and any(is_secret_name(k.split("=", 1)[0]) for k in query.split("&")):
        query = ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Strip URL credentials anywhere in free text (log lines, error tails)."""
    return _URL_CREDS.sub(lambda m: m.group("scheme"), text)
