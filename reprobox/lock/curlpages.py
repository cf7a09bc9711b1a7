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
  index is ``https://`` or ``http://``, with no credentials in its URL or in netrc for its
  host (a netrc for other hosts, such as wandb's, is fine), no
  proxy, no client certificate and no ``trusted-host`` for it; the CA certificates are the
  ones the Python client loads (pip's ``cert``, else OpenSSL's defaults), named explicitly,
  and curl's own configuration (``~/.curlrc``) and proxy variables are ignored;
* its configuration goes through its standard input (no URL globbing, no path rewriting);
  each page's answer goes into an anonymous file in memory (``memfd_create``) that only this
  process and curl hold, gone when both close it, whatever ends them (else, where Linux's
  memory files or ``/proc`` are missing, one file per page in a private temporary folder,
  removed on close); it asks for the encodings the Python client decodes (gzip, deflate),
  over TLS 1.2 or later;
* it follows no redirect: a page curl did not fetch cleanly (any transfer error, any status
  but 200, 404 or 410, a redirect included) is fetched again by the Python client, which
  follows redirects by its own rules, retries and reports failures as before;
* a curl that is missing, not found at an absolute path, older than 7.75, built on another
  TLS library than OpenSSL (whose trust could reach beyond the certificates named), or
  without HTTP/2 for an ``https://`` index hands everything to the Python client: ``curl
  -V`` is asked beside the transfers, and no answer is read before it is.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import tempfile
from typing import TYPE_CHECKING, Iterator, NamedTuple, Optional, Sequence
from urllib.parse import urlsplit

from .config import (
    ACCEPT,
    MAX_CONNECT_TIMEOUT,
    MAX_SOCKET_TIMEOUT,
    USER_AGENT,
    IndexConfig,
    read_netrc,
    timeouts,
)

if TYPE_CHECKING:
    from .transport import Response

#: Streams curl keeps in flight at once (PyPI's CDN allows 100 per connection; more than 100
#: made the data-science set's pages take 0.4 s instead of 0.16 s).
PARALLEL = 64
#: Connections to a plain-HTTP index (a local mirror), as many as the Python client opens.
PARALLEL_HTTP1 = 16
#: Statuses the lock reads from curl's answer; any other goes to the Python client.
_TAKEN = (200, 404, 410)
#: File descriptors left free beside the memory files (curl's connections, the Python
#: client's, the cache): with fewer, the answers go to a folder instead.
FD_MARGIN = 256
#: The oldest curl whose write-out names each transfer of a parallel run (``%{urlnum}``).
MIN_VERSION = (7, 75, 0)
#: An answer larger than this goes to the Python client (PyPI's largest pages are ~10 MB).
MAX_PAGE = 1 << 30
#: One line per finished transfer: what the lock needs of it (the URL before the content type,
#: which is the server's text and last, so that nothing in it can shift the other fields).
_WRITE_OUT = r"%{urlnum}\t%{exitcode}\t%{response_code}\t%{url_effective}\t%{content_type}\n"


class _Done(NamedTuple):
    ok: bool
    exitcode: int
    status: int
    url: str
    content_type: str


def _quoted(text: str) -> str:
    """``text`` as a double-quoted value of a curl configuration file; ValueError for a
    control character, which would end the value there (then curl is not used)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"a control character in {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _netrc_sends(hosts: "set[str]") -> bool:
    """Whether the Python client would send netrc credentials to any of ``hosts``: it reads
    the file as requests does (:func:`.config.read_netrc`, as the client does; a ``default``
    entry counts for every host). A netrc for other hosts only (wandb's, a git forge's) does
    not keep curl out."""
    rc = read_netrc(os.environ)
    return rc is not None and any(rc.authenticators(h) for h in hosts)


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


def _plain(config: IndexConfig, index_url: str) -> bool:
    """:func:`usable`'s rules but the netrc file's."""
    parts = urlsplit(index_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    if config.proxies.get("http") or config.proxies.get("https") or config.client_cert:
        return False
    if config.is_trusted(index_url):
        return False
    # printable ASCII only (curl and http.client treat other bytes differently), no quote or
    # backslash; curl's globbing is off, so brackets and braces go out as they stand
    return all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in index_url)


def usable(config: IndexConfig, index_url: str) -> bool:
    """Whether the Python client would reach ``index_url`` just as curl is told to here: no
    credentials (in the URL, or in netrc for its host), no proxy, no client certificate, no
    ``trusted-host``, nothing in the URL that the two would send differently."""
    if not _plain(config, index_url):
        return False
    return not _netrc_sends({urlsplit(index_url).hostname or ""})


def _find_curl() -> Optional[str]:
    """curl in PATH's absolute folders (an empty or relative entry, the current folder, which
    may be a stranger's checkout, is passed over)."""
    for folder in os.get_exec_path():
        if not os.path.isabs(folder):
            continue
        path = os.path.join(folder, "curl")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _acceptable(version_text: str, secure: bool) -> bool:
    """Whether ``curl -V``'s answer names a curl this module may use: libcurl 7.75 or later
    on OpenSSL, with gzip decoding, and HTTP/2 for an ``https://`` index."""
    lines = version_text.splitlines()
    if not lines:
        return False
    words = lines[0].split()
    lib = next((w for w in words if w.startswith("libcurl/")), "")
    found = re.match(r"libcurl/(\d+)\.(\d+)\.(\d+)", lib)
    if not found or tuple(int(n) for n in found.groups()) < MIN_VERSION:
        return False
    # the TLS library curl uses (one in parentheses is built in but not the one in use)
    if not any(w.startswith("OpenSSL/") for w in words):
        return False
    features = next((ln.split()[1:] for ln in lines if ln.startswith("Features:")), [])
    return "libz" in features and (not secure or "HTTP2" in features)


def curl_available() -> bool:
    return _find_curl() is not None


def _memory_files(count: int) -> Optional[list[int]]:
    """``count`` anonymous memory files for curl's answers, or None where they cannot be
    used: no ``memfd_create`` (not Linux), no ``/proc`` to name them to curl by, or too few
    file descriptors left. A page written to memory is read back without a disk's write,
    read and unlink (on this machine's ext4 ~15 ms of a cold lock's CPU for 29 MB), and
    nothing is left behind by a process killed before its cleanup."""
    create = getattr(os, "memfd_create", None)
    if create is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        import resource  # lazy: Unix only, and only where memory files are possible

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    if soft != resource.RLIM_INFINITY and count + FD_MARGIN > soft:
        return None
    fds: list[int] = []
    try:
        for i in range(count):
            # close-on-exec: curl gets them through pass_fds, no other program does
            fds.append(create(f"reprobox-page-{i}", os.MFD_CLOEXEC))
    except OSError:
        _close_fds(fds)
        return None
    return fds


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _read_fd(fd: int) -> Optional[bytes]:
    """The whole content of the memory file ``fd`` (from its start); None past MAX_PAGE."""
    size = os.fstat(fd).st_size
    if size > MAX_PAGE:
        return None
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _remove_folder(folder: str) -> None:
    """Remove this module's private folder: curl's answers (when not in memory) and the empty
    CA folder, nothing deeper (links are removed, never followed)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        os.rmdir(entry.path)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    pass
        os.rmdir(folder)
    except OSError:
        pass


#: Every CurlPages not closed yet, for :func:`close_all`.
_LIVE: "set[CurlPages]" = set()


def close_all() -> None:
    """Close every CurlPages of this process (a stopped lookup child's last word)."""
    for pages in list(_LIVE):
        pages.close()


class CurlPages:
    """curl fetching a list of URLs at once; :meth:`finished` yields each as it is done, and
    :meth:`response` hands its answer over. :meth:`close` (always) stops curl, closes the
    memory files and removes the folder."""

    def __init__(self, folder: str, urls: Sequence[str], secure: bool) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._check: Optional[subprocess.Popen] = None
        self._folder = folder
        self._secure = secure
        self._idle = MAX_SOCKET_TIMEOUT  # set from the client's timeout at launch
        self._urls = list(urls)
        self._index = {u: i for i, u in enumerate(self._urls)}
        self._done: dict[int, _Done] = {}
        self._seen: set[int] = set()  # every transfer reported, its answer taken or not
        #: one memory file per URL (-1 once read and closed); empty: files in the folder
        self._fds: list[int] = []
        _LIVE.add(self)

    @classmethod
    def start(cls, config: IndexConfig, urls: Sequence[str]) -> Optional["CurlPages"]:
        """curl started on ``urls`` (the pages of the first index, every one of them
        accepted by :func:`usable`'s rules), or None where curl cannot be used."""
        if not urls or not all(_plain(config, u) for u in urls):
            return None
        if _netrc_sends({urlsplit(u).hostname or "" for u in urls}):  # read once, not per URL
            return None
        curl = _find_curl()
        if curl is None:
            return None
        secure = all(u.startswith("https:") for u in urls)
        pages = cls(tempfile.mkdtemp(prefix="reprobox-pages-"), urls, secure)
        try:  # whatever stops it here (an error, a stopped child's SystemExit) cleans up
            launched = pages._launch(config, curl)
        except BaseException:
            pages.close()
            raise
        if not launched:
            pages.close()
            return None
        return pages

    def _launch(self, config: IndexConfig, curl: str) -> bool:
        empty = os.path.join(self._folder, "ca")
        os.mkdir(empty)
        timeout, connect_timeout = timeouts(config)
        self._idle = timeout
        try:
            ca = _ca_options(config, empty)
            if ca is None:
                return False
            lines = [
                "silent",
                "globoff",  # a URL is sent as it stands, [] and {} included
                "path-as-is",  # and so is its path (no ../ squashed)
                "parallel",
                # HTTP/2 multiplexes the pages over one connection; plain HTTP/1.1 opens its
                # connections at once (waiting to learn whether the first one multiplexes
                # would send the pages one at a time)
                *(
                    [f"parallel-max = {PARALLEL}", "http2", "tlsv1.2"]
                    if self._secure
                    else [f"parallel-max = {PARALLEL_HTTP1}", "parallel-immediate"]
                ),
                "compressed",  # decodes gzip and deflate, the encodings asked for below
                f'proto = "{"=https" if self._secure else "=http,https"}"',
                f"connect-timeout = {connect_timeout:g}",
                # a transfer stalled for the client's socket timeout is abandoned (then asked
                # again by the Python client)
                "speed-limit = 1",
                f"speed-time = {max(int(timeout), 1)}",
                f"max-filesize = {MAX_PAGE}",
                'noproxy = "*"',
                f"user-agent = {_quoted(USER_AGENT)}",
                *ca,
                f"write-out = {_quoted(_WRITE_OUT)}",
                f"header = {_quoted('Accept: ' + ACCEPT)}",
                f"header = {_quoted('Accept-Encoding: gzip, deflate')}",
            ]
            self._fds = _memory_files(len(self._urls)) or []
            for i, url in enumerate(self._urls):
                lines.append(f"url = {_quoted(url)}")
                lines.append(f"output = {_quoted(self._output(i))}")
        except ValueError:
            return False
        try:
            self._proc = subprocess.Popen(
                [curl, "-q", "--config", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=self._fds,
            )
            assert self._proc.stdin is not None
            self._proc.stdin.write(("\n".join(lines) + "\n").encode())
            self._proc.stdin.close()
            # which curl this is, asked while the transfers start; read before any answer is
            self._check = subprocess.Popen(
                [curl, "-V"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError:
            return False
        return True

    def _output(self, num: int) -> str:
        """Where curl writes the answer of transfer ``num``: its memory file, which curl
        opens by its own inherited descriptor's number, or a file in the folder."""
        if self._fds:
            return f"/proc/self/fd/{self._fds[num]}"
        return os.path.join(self._folder, str(num))

    def _checked(self) -> bool:
        """Whether ``curl -V`` named a curl this module may use (waits for its answer)."""
        if self._check is None:
            return False
        try:
            out, _ = self._check.communicate(timeout=MAX_CONNECT_TIMEOUT)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False
        return self._check.returncode == 0 and _acceptable(
            out.decode("utf-8", "replace"), self._secure
        )

    def finished(self) -> Iterator[str]:
        """Each URL as curl reports its transfer done (cleanly or not), then the end; nothing
        at all from a curl this module may not use (:func:`_acceptable`)."""
        if self._proc is None or self._proc.stdout is None:
            return
        if not self._checked():
            self._stop()
            return
        fd = self._proc.stdout.fileno()
        pending = b""
        while True:
            # a whole socket timeout with no transfer done: the index stalls (curl's own
            # stall check runs one transfer at a time while the others wait), and the rest
            # goes to the Python client, which reports it
            ready, _, _ = select.select([fd], [], [], self._idle)
            if not ready:
                self._stop()
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                url = self._report(raw)
                if url is not None:
                    yield url
        self._proc.wait()

    def _report(self, raw: bytes) -> Optional[str]:
        """The URL of one line of curl's write-out, its outcome kept; None for a line that
        is not one (or names a transfer reported already)."""
        fields = raw.decode("utf-8", "replace").split("\t", 4)
        if len(fields) != 5 or not (fields[0].isascii() and fields[0].isdigit()):
            return None
        num = int(fields[0])
        if num >= len(self._urls) or num in self._seen:
            return None
        self._seen.add(num)
        exitcode, status, final, ctype = fields[1:]
        code = int(status) if status.isascii() and status.isdigit() else 0
        ended = int(exitcode) if exitcode.isascii() and exitcode.isdigit() else -1
        # with no redirect followed, the URL curl ends at is the one it was given
        ok = ended == 0 and code in _TAKEN and final == self._urls[num]
        self._done[num] = _Done(ok, ended, code, final, ctype)
        return self._urls[num]

    def exitcode(self, url: str) -> Optional[int]:
        """curl's exit code for ``url``'s transfer (0: done; 60: the certificate was not
        trusted, ...), once it reported it and until its answer is taken."""
        num = self._index.get(url)
        done = self._done.get(num) if num is not None else None
        return done.exitcode if done is not None else None

    def ready(self, url: str) -> bool:
        """Whether curl fetched ``url`` cleanly and its answer is not taken yet."""
        num = self._index.get(url)
        done = self._done.get(num) if num is not None else None
        return done is not None and done.ok

    def response(self, url: str) -> Optional[Response]:
        """curl's answer for ``url``, when it fetched it cleanly (once: the memory file is
        read and closed, or the file read and removed); else None, for the Python client to
        ask."""
        num = self._index.get(url)
        done = self._done.pop(num, None) if num is not None else None
        if num is None or done is None or not done.ok:
            return None
        try:
            if self._fds:
                fd, self._fds[num] = self._fds[num], -1
                try:
                    body = _read_fd(fd)
                finally:
                    os.close(fd)
            else:
                path = self._output(num)
                with open(path, "rb") as fh:
                    body = fh.read() if os.fstat(fh.fileno()).st_size <= MAX_PAGE else None
                os.unlink(path)
        except OSError:
            return None
        if body is None:
            return None
        from .transport import Response  # lazy: the client that asks has loaded it

        return Response(done.url, done.status, {"content-type": done.content_type}, body)

    def _stop(self) -> None:
        for proc in (self._proc, self._check):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop curl if it still runs, close the memory files and remove the folder (again:
        nothing more)."""
        _LIVE.discard(self)
        self._stop()
        for proc in (self._proc, self._check):
            for stream in (proc.stdout, proc.stdin) if proc is not None else ():
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        fds, self._fds = self._fds, []
        _close_fds(fds)
        _remove_folder(self._folder)
