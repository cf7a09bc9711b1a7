"""Keeping the capture host's secrets out of everything reprobox writes or prints.

A capture is committed and pushed: whatever it writes is public to everyone who can read the
repository. Secrets reach it by many roads — an ``--api-key X`` in the command, a ``$HF_TOKEN``
that the shell expanded before reprobox saw it, a token logged as a metric, credentials inside
URLs (``user:pass@``, an Azure SAS ``sig=``, ``?token=``, a token as a path segment), an
allowlisted variable whose value holds a URL with credentials, a dirty file's diff.

The rules, from cheapest to most thorough:

* names: environment variables whose names look like secrets are never read into a record
  (:func:`is_secret_name`);
* URLs: user info, query strings and fragments holding credential parameters, and path segments
  shaped like tokens are removed (:func:`strip_url_credentials`);
* command lines: the value of a secret-looking option (``--api-key X``, ``--token=X``,
  ``-p PASSWORD``) or assignment (``HF_TOKEN=x python ...``);
* values: the values of the host's secret-looking environment variables, wherever they appear
  (an expanded ``$HF_TOKEN``), compared in memory and never written anywhere;
* known token formats: reprobox's own patterns (GitHub, Hugging Face, GitLab, Slack, OpenAI,
  AWS, Google, PyPI, npm, JWT, private keys) and the detectors of ``detect-secrets``, a
  maintained secret scanner, run only on the text that will be written.

:class:`Redactor` applies them to each field of a capture and remembers which fields it changed,
so that the capture can warn once per field (naming the field, never the value).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit


class _Pattern:
    """A regular expression compiled on its first use: this module's ~20 patterns cost ~4 ms to
    compile, paid by every command at import, where most commands (a lock's index lookups among
    them) only ever strip credentials from URLs, which needs one or two of them."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: Optional[re.Pattern[str]] = None

    def __getattr__(self, name: str) -> Any:  # search, sub, finditer, ...: the pattern's own
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(*self._args)
        return getattr(compiled, name)


_SECRET_NAME = _Pattern(
    r"(TOKEN|SECRET|PASSW(OR)?D|PASSWD|PWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE|AUTH|COOKIE|"
    r"SESSION|SIGNATURE|CERT_?KEY|_KEY$|^KEY$|KEY_)",
    re.IGNORECASE,
)

# user:pass@ or token@ in scheme://...  also git's scp-like form keeps user only (git@host:org/repo)
_URL_CREDS = _Pattern(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<creds>[^/@\s]+@)")

#: Query (and fragment) parameters that carry credentials, beyond secret-looking names: Azure SAS
#: (``sig``, with ``se``/``sp``/``sv`` it is the token), S3 / GCS presigned URLs, OAuth.
_SECRET_PARAMS = frozenset(
    {
        "sig",
        "signature",
        "sas",
        "code",
        "key",
        "apikey",
        "api_key",
        "access_token",
        "id_token",
        "refresh_token",
        "private_token",
        "token",
        "auth",
        "password",
        "pass",
        "pwd",
        "secret",
        "client_secret",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "googleaccessid",
        "awsaccesskeyid",
    }
)

#: Text put in place of a secret inside a URL (the URL grammar allows no ``<``/``>``).
URL_MARK = "REDACTED"


def mark(kind: str) -> str:
    """The marker that replaces a secret in free text: ``<redacted:KIND>``."""
    return f"<redacted:{kind}>"


def is_secret_name(name: str) -> bool:
    """True when an environment variable's name suggests it holds a secret."""
    return bool(_SECRET_NAME.search(name))


def _secret_param(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_PARAMS or low.startswith(("x-amz-", "x-goog-")) or is_secret_name(name)


# --------------------------------------------------------------------------- token formats

#: reprobox's own patterns for tokens with a recognisable shape (whole token matched).
TOKEN_PATTERNS: tuple[tuple[str, _Pattern], ...] = tuple(
    (kind, _Pattern(rx))
    for kind, rx in (
        ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})"),
        ("huggingface-token", r"\bhf_[A-Za-z0-9]{30,}"),
        ("gitlab-token", r"\b(?:glpat|gldt|glft|glsoat|glrt|glcbt)-[A-Za-z0-9_\-]{20,}"),
        ("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("api-key", r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}"),
        ("aws-access-key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}"),
        ("pypi-token", r"\bpypi-[A-Za-z0-9_\-]{50,}"),
        ("npm-token", r"\bnpm_[A-Za-z0-9]{36}"),
        ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
        ("private-key", r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----"),
        ("azure-storage-key", r"AccountKey=[A-Za-z0-9+/=]{40,}"),
    )
)

#: ``detect-secrets`` plugins used. The entropy detectors are left out: lock files and records are
#: full of sha256 digests, which they would all flag; the public-IP one flags no secret. The
#: keyword detector (``password = "..."`` in code) runs on the patch only.
_DS_EXCLUDED = frozenset(
    {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector"}
)


#: A superset of what the detectors used can match, cheap to test: a run of 11 or more token
#: characters mixing letters and digits (every token format they know is at least that long),
#: credentials in a URL, or one of the fixed markers of the other formats (private keys, npm and
#: Azure connection strings, Slack, AWS, SoftLayer). Text without any of these is not scanned.
_MAYBE_SECRET = _Pattern(
    r"(?=[A-Za-z0-9_+/=-]{0,200}?[0-9])(?=[A-Za-z0-9_+/=-]{0,200}?[A-Za-z])"
    r"(?<![A-Za-z0-9_+/=-])[A-Za-z0-9_+/=-]{11,}"
    r"|://[^/\s]*@|AccountKey|_authToken|PRIVATE KEY|BEGIN|PuTTY|xox|aws|softlayer|hooks\.slack",
    re.IGNORECASE,
)

#: Lines the keyword detector may flag name the secret (``password = ...``, ``api_key: ...``).
_KEYWORD_HINT = _Pattern(r"pass|pwd|secret|token|key|auth|cred|private", re.IGNORECASE)


@dataclass(frozen=True)
class _Detectors:
    plugins: tuple[dict[str, str], ...]
    prefilter: tuple[tuple[str, re.Pattern[str]], ...]  # (secret type, denylist regex)


@lru_cache(maxsize=None)
def _detectors() -> _Detectors:
    # lazy: detect-secrets costs ~75 ms to import; most text holds no candidate and never needs it
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    plugins: list[dict[str, str]] = []
    prefilter: list[tuple[str, re.Pattern[str]]] = []
    mapping: dict[str, Any] = dict(get_mapping_from_secret_type_to_class())
    for secret_type, cls in sorted(mapping.items()):
        if cls.__name__ in _DS_EXCLUDED:
            continue
        plugins.append({"name": cls.__name__})
        for rx in getattr(cls, "denylist", ()) or ():
            prefilter.append((secret_type, rx))
    return _Detectors(tuple(plugins), tuple(prefilter))


def detect_secrets_in(
    lines: Sequence[str], *, keywords: bool = False
) -> list[tuple[int, str, list[str]]]:
    """``detect-secrets`` over ``lines``: ``(index, secret type, spans to remove)`` per finding.

    The detectors' own patterns pick the candidate lines first (cheap); only those are scanned
    in full, with the library's false-positive filters. ``keywords`` adds the keyword detector
    (``password = "..."``), meant for source code (the patch), and scans every line.
    """
    maybe = [
        i
        for i, line in enumerate(lines)
        if _MAYBE_SECRET.search(line) or (keywords and _KEYWORD_HINT.search(line))
    ]
    if not maybe:
        return []  # the common case: the library is not even loaded

    from detect_secrets.core.scan import scan_line  # lazy: ~75 ms, only once a line may hold one
    from detect_secrets.settings import transient_settings  # lazy: as above

    det = _detectors()
    candidates: list[int] = []
    for i in maybe:
        line = lines[i]
        if (keywords and _KEYWORD_HINT.search(line)) or any(
            rx.search(line) for _t, rx in det.prefilter
        ):
            candidates.append(i)
    if not candidates:
        return []
    plugins = list(det.plugins) + ([{"name": "KeywordDetector"}] if keywords else [])
    found: list[tuple[int, str, list[str]]] = []
    with transient_settings({"plugins_used": plugins}):
        for i in candidates:
            line = lines[i]
            for secret in scan_line(line):
                spans = _spans(line, secret.type, secret.secret_value, det)
                found.append((i, str(secret.type), spans))
    return found


def _spans(line: str, secret_type: str, value: Optional[str], det: _Detectors) -> list[str]:
    """The substrings of ``line`` to remove for a finding: the detector's matches, else the value
    it reported (some detectors report only a group of their match)."""
    spans: list[str] = []
    for t, rx in det.prefilter:
        if t != secret_type:
            continue
        for m in rx.finditer(line):
            text = m.group(0).strip(" \t=:\"'")
            if len(text) >= 8:
                spans.append(text)
    if value and len(value) >= 4 and value in line and not any(value in s for s in spans):
        spans.append(value)
    return spans


# --------------------------------------------------------------------------- URLs


_URL_IN_TEXT = _Pattern(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


#: The fixed part every one of TOKEN_PATTERNS starts with (or holds): text without any of
#: them matches none, and this one search costs a twentieth of the twelve (a lock strips
#: every file URL it writes: ~1,600 on a torch environment).
TOKEN_MARKERS = _Pattern(
    r"gh[pousr]_|github_pat_|hf_|gl(?:pat|dt|ft|soat|rt|cbt)-|xox[abposr]-|\bsk-"
    r"|A(?:KIA|SIA|BIA|CCA|Iza)|pypi-|npm_|eyJ|-----BEGIN|AccountKey="
)


def _tokenish(segment: str) -> bool:
    if TOKEN_MARKERS.search(segment) is None:
        return False
    return any(rx.search(segment) for _k, rx in TOKEN_PATTERNS)


def strip_url_credentials(url: str) -> str:
    """A URL without the credentials it may carry; other text is left as is.

    Removed: ``user:password@`` (or ``token@``); the whole query or fragment when one of its
    parameters carries a credential (``?token=``, an Azure SAS ``sig=``, presigned S3 / GCS
    URLs); a path segment shaped like a token (``/ghp_.../``, ``/hf_.../``), replaced by
    ``REDACTED``.
    ``git@github.com:org/repo.git`` (scp-like ssh) keeps its user name, which is not a secret.
    """
    if "://" not in url:
        return url
    if _plain_url(url):
        return url  # nothing to strip, nothing a split would change: most URLs a lock writes
    return _strip_split(url)


def _plain_url(url: str) -> bool:
    """A URL with a host and no user part, query or fragment, no token marker anywhere, a
    lower-case scheme and printable ASCII without spaces: :func:`_strip_split` would give it
    back as it is (one search instead of a split and a join; a lock strips ~4,000 file
    URLs)."""
    scheme, _, rest = url.partition("://")
    return (
        url.isascii()
        and url.isprintable()
        and not any(c in url for c in " @?#")
        and scheme.islower()
        and scheme[:1].isalpha()
        and all(c.isalnum() or c in "+-." for c in scheme)
        and rest[:1] not in ("", "/")
        and TOKEN_MARKERS.search(url) is None
    )


def _strip_split(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_CREDS.sub(lambda m: m.group("scheme"), url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query, fragment = parts.query, parts.fragment
    if query and any(_secret_param(k.split("=", 1)[0]) for k in re.split(r"[&;]", query)):
        query = ""
    if (
        fragment
        and "=" in fragment
        and any(_secret_param(k.split("=", 1)[0]) for k in re.split(r"[&;]", fragment))
    ):
        fragment = ""
    path = parts.path
    if path and _tokenish(path):
        path = "/".join(URL_MARK if _tokenish(seg) else seg for seg in path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_text(text: str) -> str:
    """Strip URL credentials anywhere in free text (log lines, error tails)."""
    return _URL_CREDS.sub(lambda m: m.group("scheme"), text)


# --------------------------------------------------------------------------- command lines

#: An option whose value is a secret: its name ends with one of these words.
_SECRET_OPTION = _Pattern(
    r"(?:^|[-_])(?:token|api[-_]?key|apikey|secret|secret[-_]key|client[-_]secret|password|"
    r"passwd|pass|pwd|access[-_]key|auth[-_]token|hf[-_]token|wandb[-_]key)$",
    re.IGNORECASE,
)


def _secret_option(opt: str) -> bool:
    name = opt.lstrip("-")
    return bool(name) and bool(_SECRET_OPTION.search(name))


def _password_like(value: str) -> bool:
    """For ``-p VALUE``, a short option that is a password for some tools (mysql, sshpass) and a
    port, a plugin (pytest ``-p no:cacheprovider``) or a path for others: a value that mixes
    letters with digits or symbols is taken as a password."""
    if not value or value.startswith("$"):
        return False
    has_alpha = any(c.isalpha() for c in value)
    has_other = any(not c.isalpha() for c in value)
    return (
        has_alpha
        and has_other
        and not re.fullmatch(r"[A-Za-z0-9_.:/=-]*[:/][A-Za-z0-9_.:/=-]*", value)
    )


def _argv_secrets(command: str) -> list[tuple[str, str]]:
    """``(value, kind)`` for each secret given as an argument in a shell command line; for
    ``-pVALUE`` the value is ``-pVALUE`` and the kind ``-p:password``."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        words = command.split()
    out: list[tuple[str, str]] = []
    i = 0
    assignments = True
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if assignments and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w, re.DOTALL):
            name, value = w.split("=", 1)
            if is_secret_name(name) and value and not value.startswith("$"):
                out.append((value, "$" + name))
            i += 1
            continue
        assignments = False
        if w.startswith("-") and "=" in w:
            opt, value = w.split("=", 1)
            if _secret_option(opt) and value and not value.startswith("$"):
                out.append((value, opt.lstrip("-")))
        elif w.startswith("--") and _secret_option(w) and nxt is not None:
            if not nxt.startswith("$") and not nxt.startswith("-"):
                out.append((nxt, w.lstrip("-")))
                i += 1
        elif w == "-p" and nxt is not None and _password_like(nxt):
            out.append((nxt, "password"))
            i += 1
        elif w.startswith("-p") and len(w) > 2 and not w.startswith("--") and _password_like(w[2:]):
            out.append((w, "-p:password"))
        i += 1
    return out


# --------------------------------------------------------------------------- the pass


@dataclass
class Redactor:
    """One redaction pass over the fields of a capture.

    ``environ`` is the capture host's environment: the values of its secret-looking variables are
    looked for in every field (kept in memory only, longest first).
    """

    environ: Mapping[str, str] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)  # field -> kinds, in order

    def __post_init__(self) -> None:
        values: dict[str, str] = {}
        for name, value in self.environ.items():
            if not isinstance(value, str):
                continue
            if is_secret_name(name) and _worth_matching(value):
                values.setdefault(value, name)
            if "@" in value and "://" in value:  # PIP_INDEX_URL=https://user:token@host/...
                for m in _URL_CREDS.finditer(value):
                    for part in m.group("creds")[:-1].split(":", 1)[::-1]:
                        if _worth_matching(part):
                            values.setdefault(part, name)
                            break
        self._env_values = sorted(values.items(), key=lambda kv: -len(kv[0]))

    # ------------------------------------------------------------ fields

    def text(self, value: str, where: str, *, command: bool = False, detect: bool = True) -> str:
        """A free-text field with every secret replaced by ``<redacted:KIND>``.

        ``command`` adds the command-line rules; ``detect`` (default) runs ``detect-secrets`` too.
        """
        if not isinstance(value, str) or not value:
            return value
        out, kinds = self._rules(value, command=command)
        if detect:
            lines = out.split("\n")
            kinds += self._detect(lines)
            out = "\n".join(lines)
        if kinds:
            self._note(where, kinds)
        return out

    def _rules(self, value: str, *, command: bool = False) -> tuple[str, list[str]]:
        """reprobox's own rules (URLs, command-line options, the host's secret values, token
        formats): the redacted text and the kinds found."""
        kinds: list[str] = []
        out = value
        if "://" in out:

            def url(m: re.Match[str]) -> str:
                cleaned = strip_url_credentials(m.group(0))
                if cleaned != m.group(0):
                    kinds.append("url-credentials")
                return cleaned

            out = _URL_IN_TEXT.sub(url, out)
        for secret, name in self._env_values:
            if secret in out:
                out = out.replace(secret, mark("$" + name))
                kinds.append("$" + name)
        if command:
            for secret, kind in _argv_secrets(out):
                if secret in out and "<redacted:" not in secret:
                    if kind.startswith("-p:"):  # -pVALUE: the option stays, the value goes
                        kind = kind[3:]
                        new = _replace_word(out, secret, "-p" + mark(kind))
                    else:
                        new = _replace_word(out, secret, mark(kind))
                    if new != out:
                        out = new
                        kinds.append(kind)
        for kind, rx in TOKEN_PATTERNS if TOKEN_MARKERS.search(out) else ():
            if rx.search(out):
                out = rx.sub(mark(kind), out)
                kinds.append(kind)
        return out, kinds

    @staticmethod
    def _detect(lines: list[str], marker: Optional[str] = None) -> list[str]:
        """``detect-secrets`` over ``lines``, redacting them in place; the kinds found."""
        kinds: list[str] = []
        for i, secret_type, spans in detect_secrets_in(lines):
            kind = _kind(secret_type)
            line = lines[i]
            for span in spans or [line]:
                line = line.replace(span, marker or mark(kind))
            if line != lines[i]:
                lines[i] = line
                kinds.append(kind)
        return kinds

    def url(self, value: Optional[str], where: str) -> Optional[str]:
        """A URL field: credentials stripped (``REDACTED`` in place of a token), valid as a URL."""
        if not value:
            return value
        out = strip_url_credentials(value)
        kinds = ["url-credentials"] if out != value else []
        for secret, name in self._env_values:
            if secret in out:
                out = out.replace(secret, URL_MARK)
                kinds.append("$" + name)
        for kind, rx in TOKEN_PATTERNS if TOKEN_MARKERS.search(out) else ():
            if rx.search(out):
                out = rx.sub(URL_MARK, out)
                kinds.append(kind)
        lines = [out]
        kinds += self._detect(lines, URL_MARK)
        out = lines[0]
        if kinds:
            self._note(where, kinds)
        return out

    def holds_secret(self, value: str) -> Optional[str]:
        """The kind of the first secret found in ``value`` (for fields that cannot be rewritten,
        such as paths: the caller leaves them out), else None."""
        probe = Redactor(self.environ)
        probe._env_values = self._env_values
        probe.text(value, "_")
        kinds = probe.changed.get("_")
        return kinds[0] if kinds else None

    def tree(self, data: Any, where: str) -> Any:
        """A JSON-like tree (metrics) with keys and string leaves redacted."""
        if isinstance(data, Mapping):
            out: dict[Any, Any] = {}
            for key, value in data.items():
                new_key = self.text(key, f"{where} key") if isinstance(key, str) else key
                out[new_key] = self.tree(value, f"{where}.{new_key}")
            return out
        if isinstance(data, list):
            return [self.tree(v, f"{where}[{i}]") for i, v in enumerate(data)]
        if isinstance(data, tuple):
            return tuple(self.tree(v, f"{where}[{i}]") for i, v in enumerate(data))
        if isinstance(data, str):
            return self.text(data, where)
        return data

    def file_text(self, text: str, name: str) -> str:
        """A whole text file written with the capture (lock files, Dockerfile), line by line;
        ``detect-secrets`` runs once over the file's lines."""
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if line:
                new, kinds = self._rules(line)
                if kinds:
                    lines[i] = new
                    self._note(f"{name} line {i + 1}", kinds)
        before = list(lines)
        kinds = self._detect(lines)
        if kinds:
            for i, (old, new) in enumerate(zip(before, lines)):
                if old != new:
                    self._note(f"{name} line {i + 1}", kinds)
        return "\n".join(lines)

    # ------------------------------------------------------------ reporting

    def _note(self, where: str, kinds: Iterable[str]) -> None:
        have = self.changed.setdefault(where, [])
        for k in kinds:
            if k not in have:
                have.append(k)

    def warnings(self) -> list[str]:
        """One sentence per changed field, naming the field and the kinds, never the value."""
        out = []
        for where, kinds in self.changed.items():
            what = ", ".join(kinds)
            msg = f"{where}: a secret ({what}) was redacted before recording"
            if where == "command":
                msg += (
                    "; a rerun gets the marker in its place: pass secrets through environment "
                    'variables (`--api-key "$API_KEY"`), not on the command line'
                )
            out.append(msg)
        return out


def _worth_matching(value: str) -> bool:
    """A secret variable's value long and specific enough to look for in text (not ``1``,
    ``true``, a path such as ``/home/me``)."""
    return (
        len(value) >= 8
        and not value.startswith("/")
        and value.lower() not in ("true", "false", "enabled", "disabled")
    )


def _replace_word(text: str, secret: str, replacement: str) -> str:
    """Replace ``secret`` where it stands as a word of ``text`` (quoted or not)."""
    return re.sub(r"(?<![A-Za-z0-9_])" + re.escape(secret) + r"(?![A-Za-z0-9_])", replacement, text)


def _kind(secret_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", secret_type.lower()).strip("-") or "secret"


# --------------------------------------------------------------------------- patches


@dataclass(frozen=True)
class PatchSecret:
    path: str
    line: int
    kind: str


def scan_patch(patch: bytes, environ: Mapping[str, str]) -> list[PatchSecret]:
    """Secrets in the lines a patch adds: ``(file, line in the new file, kind)``, never the value.

    A patch cannot be redacted without breaking it, so the caller refuses it. Only added lines
    are scanned: removed and context lines are in the recorded commit already.
    """
    text = patch.decode("utf-8", errors="replace")
    added: list[tuple[str, int, str]] = []
    path, new_line, in_binary = "?", 0, False
    for raw in text.split("\n"):
        if raw.startswith("diff --git "):
            in_binary = False
            m = re.match(r"diff --git a/(.*) b/(.*)", raw)
            path = m.group(2) if m else path
        elif raw.startswith("GIT binary patch"):
            in_binary = True
        elif in_binary:
            continue
        elif raw.startswith("+++ "):
            target = raw[4:].strip()
            path = target[2:] if target.startswith("b/") else target
        elif raw.startswith("@@"):
            m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", raw)
            new_line = int(m.group(1)) if m else 0
        elif raw.startswith("+"):
            added.append((path, new_line, raw[1:]))
            new_line += 1
        elif raw.startswith(" "):
            new_line += 1
    if not added:
        return []
    found: list[PatchSecret] = []
    red = Redactor(environ)
    for p, n, line in added:
        for kind in red._rules(line)[1]:
            found.append(PatchSecret(p, n, kind))
    for i, secret_type, _spans in detect_secrets_in([a[2] for a in added], keywords=True):
        p, n, _ = added[i]
        if not any(f.path == p and f.line == n for f in found):
            found.append(PatchSecret(p, n, _kind(secret_type)))
    return sorted(set(found), key=lambda f: (f.path, f.line, f.kind))


__all__ = [
    "TOKEN_PATTERNS",
    "URL_MARK",
    "PatchSecret",
    "Redactor",
    "detect_secrets_in",
    "is_secret_name",
    "mark",
    "redact_text",
    "scan_patch",
    "strip_url_credentials",
]
