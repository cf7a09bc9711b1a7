"""A cold lock's index pages, fetched by curl over one HTTP/2 connection.

A cold lock of a data-science environment reads 117 project pages, 29 MB (253 pages and
88 MB with torch), and this index sends them uncompressed. Through Python's TLS on four
HTTP/1.1 connections the transfer and the page parsing share one interpreter and its lock;
curl, a native client, multiplexes every page over one HTTP/2 connection on its own core
(0.13–0.20 s for the 29 MB here, with 0.1 s of CPU). The lock's early child
(:mod:`.early`) hands curl the page URLs as it starts, before its index client imports, and
parses each page as curl reports it done.

curl is an accelerator, never a requirement or a second source of truth:

* it is used only where the Python client would connect in exactly the same way: the first
  index is ``https://`` or ``http://``, with no credentials in its URL or in a netrc file, no
  proxy, no client certificate and no ``trusted-host`` for it; the CA certificates are the
  ones the Python client loads (pip's ``cert``, else OpenSSL's defaults), named explicitly,
  and curl's own configuration (``~/.curlrc``) and proxy variables are ignored;
* its configuration goes through its standard input, the answers into a private temporary
  folder (removed on close), one file per page;
* a page curl did not fetch cleanly (any transfer error, any status but 200, 404 or 410) is
  fetched again by the Python client, which retries and reports failures as before; a curl
  that is missing, too old, or built without HTTP/2 falls back to it for everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Iterator, NamedTuple, Optional, Sequence
from urllib.parse import urlsplit

from .config import IndexConfig
from .transport import MAX_CONNECT_TIMEOUT, MAX_SOCKET_TIMEOUT, USER_AGENT, Response

#: Streams curl keeps in flight at once (PyPI's CDN allows 100 per connection).
PARALLEL = 64
#: Statuses the lock reads from curl's answer; any other goes to the Python client.
_TAKEN = (200, 404, 410)
#: One line per finished transfer: what the lock needs of it (the URL before the content type,
#: which is the server's text and last, so that nothing in it can shift the other fields).
_WRITE_OUT = r"%{urlnum}\t%{exitcode}\t%{response_code}\t%{url_effective}\t%{content_type}\n"


class _Done(NamedTuple):
    ok: bool
    status: int
    url: str
    content_type: str


def _quoted(text: str) -> str:
    """``text`` as a double-quoted value of a curl configuration file."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _netrc_file() -> Optional[str]:
    """The netrc file the Python client would read credentials from (see
    :meth:`.transport.Transport._read_netrc`), when there is one."""
    path = os.environ.get("NETRC") or os.path.join(
        os.environ.get("HOME") or os.path.expanduser("~"), ".netrc"
    )
    return path if os.path.lexists(path) else None


def _ca_options(config: IndexConfig, empty: str) -> Optional[list[str]]:
    """curl options naming the CA certificates the Python client trusts (``empty``: an empty
    folder); None where they cannot be named the same way (then curl is not used)."""
    cert = config.cert
    if cert:
        if not os.path.isfile(cert):
            return None  # a folder of certificates, or a missing file the client reports
        # pip's bundle alone, as the Python client loads it: curl would add its built-in
        # folder (/etc/ssl/certs on Debian) to a --cacert unless told another one
        return [f"cacert = {_quoted(cert)}", f"capath = {_quoted(empty)}"]
    import ssl  # lazy: only without pip's `cert`, to name OpenSSL's defaults

    paths = ssl.get_default_verify_paths()  # with SSL_CERT_FILE / SSL_CERT_DIR applied
    if not (paths.cafile and os.path.isfile(paths.cafile)):
        return None  # else curl would add its own built-in bundle
    capath = paths.capath if paths.capath and os.path.isdir(paths.capath) else empty
    return [f"cacert = {_quoted(paths.cafile)}", f"capath = {_quoted(capath)}"]


def usable(config: IndexConfig, index_url: str) -> bool:
    """Whether the Python client would reach ``index_url`` just as curl is told to here."""
    parts = urlsplit(index_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None or _netrc_file():
        return False
    if config.proxies.get("http") or config.proxies.get("https") or config.client_cert:
        return False
    if config.is_trusted(index_url):
        return False
    return not any(ord(c) < 0x21 or c in '"\\' for c in index_url)


def _find_curl() -> Optional[str]:
    return shutil.which("curl")


def curl_available() -> bool:
    return _find_curl() is not None


class CurlPages:
    """curl fetching a list of URLs at once; :meth:`finished` yields each as it is done, and
    :meth:`response` hands its answer over. :meth:`close` (always) stops curl and removes the
    folder."""

    def __init__(self, proc: subprocess.Popen, folder: str, urls: Sequence[str]) -> None:
        self._proc = proc
        self._folder = folder
        self._urls = list(urls)
        self._index = {u: i for i, u in enumerate(self._urls)}
        self._done: dict[int, _Done] = {}

    @classmethod
    def start(cls, config: IndexConfig, urls: Sequence[str]) -> Optional["CurlPages"]:
        """curl started on ``urls`` (the pages of the first index, every one of them
        accepted by :func:`usable`'s rules), or None where curl cannot be used."""
        if not urls or not all(usable(config, u) for u in urls):
            return None
        curl = _find_curl()
        if curl is None:
            return None
        folder = tempfile.mkdtemp(prefix="reprobox-pages-")
        empty = os.path.join(folder, "ca")
        os.mkdir(empty)
        ca = _ca_options(config, empty)
        if ca is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        timeout = min(max(config.timeout, 1.0), MAX_SOCKET_TIMEOUT)
        secure = all(u.startswith("https:") for u in urls)
        lines = [
            "silent",
            "parallel",
            f"parallel-max = {PARALLEL}",
            *(["http2"] if secure else []),
            "compressed",
            "location",
            "max-redirs = 5",
            'proto = "=https"' if secure else 'proto = "=http,https"',
            'proto-redir = "=http,https"',
            f"connect-timeout = {min(timeout, MAX_CONNECT_TIMEOUT):g}",
            # a transfer stalled for the client's socket timeout is abandoned (then retried
            # by the Python client)
            "speed-limit = 1",
            f"speed-time = {max(int(timeout), 1)}",
            'noproxy = "*"',
            f"user-agent = {_quoted(USER_AGENT)}",
            *ca,
            f"write-out = {_quoted(_WRITE_OUT)}",
        ]
        from .index import ACCEPT  # lazy: the index client imports this module

        lines.append(f"header = {_quoted('Accept: ' + ACCEPT)}")
        for i, url in enumerate(urls):
            lines.append(f"url = {_quoted(url)}")
            lines.append(f"output = {_quoted(os.path.join(folder, str(i)))}")
        try:
            proc = subprocess.Popen(
                [curl, "-q", "--config", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        pages = cls(proc, folder, urls)
        try:
            assert proc.stdin is not None
            proc.stdin.write(("\n".join(lines) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pages.close()
            return None
        return pages

    def finished(self) -> Iterator[str]:
        """Each URL as curl reports its transfer done (cleanly or not), then the end."""
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            fields = raw.rstrip(b"\n").decode("utf-8", "replace").split("\t", 4)
            if len(fields) != 5 or not (fields[0].isascii() and fields[0].isdigit()):
                continue
            num = int(fields[0])
            if num >= len(self._urls) or num in self._done:
                continue
            exitcode, status, final, ctype = fields[1:]
            code = int(status) if status.isascii() and status.isdigit() else 0
            ok = exitcode == "0" and code in _TAKEN and final.startswith(("https:", "http:"))
            self._done[num] = _Done(ok, code, final, ctype)
            yield self._urls[num]
        self._proc.wait()

    def ready(self, url: str) -> bool:
        """Whether curl fetched ``url`` cleanly and its answer is not taken yet."""
        num = self._index.get(url)
        done = self._done.get(num) if num is not None else None
        return done is not None and done.ok

    def response(self, url: str) -> Optional[Response]:
        """curl's answer for ``url``, when it fetched it cleanly (once: the file is read and
        removed); else None, for the Python client to ask."""
        num = self._index.get(url)
        done = self._done.pop(num, None) if num is not None else None
        if done is None or not done.ok:
            return None
        path = os.path.join(self._folder, str(num))
        try:
            with open(path, "rb") as fh:
                body = fh.read()
            os.unlink(path)
        except OSError:
            return None
        return Response(done.url, done.status, {"content-type": done.content_type}, body)

    def close(self) -> None:
        """Stop curl if it still runs and remove its folder (again: nothing more)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stdin):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        shutil.rmtree(self._folder, ignore_errors=True)
