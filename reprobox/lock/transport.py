"""A small keep-alive HTTP(S) client on the standard library, shared by the index threads.

Why not ``urllib.request``: it closes the connection after every request, and a lock asks one host
for a hundred pages; reusing a handful of TLS connections is most of the speed. Why not
``requests``: it is not a reprobox dependency, and this is all the HTTP a lock needs — GET with
redirects, gzip, Basic auth (from the URL, else ``~/.netrc``), a CA bundle and client certificate,
``trusted-host``, and proxies (``HTTP(S)_PROXY``/``NO_PROXY`` or pip's ``proxy``, HTTPS through
``CONNECT``).

Every failure becomes :class:`~reprobox.errors.IndexUnavailable` whose message shows the URL
without credentials and names the fix.
"""

from __future__ import annotations

import base64
import gzip
import netrc
import os
import queue
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Optional
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import IndexUnavailable
from ..redact import strip_url_credentials
from .config import USER_AGENT, IndexConfig, read_netrc, timeouts

if TYPE_CHECKING:  # imported when the first connection is made: a warm lock needs neither
    import http.client
    import ssl

    from .curlpages import CurlPages

MAX_REDIRECTS = 5
_RETRY_STATUSES = {429, 500, 502, 503, 504}

#: Connections a lock opens to an index at first (its lookup threads, one connection each; the
#: pool grows when the index proves slow to answer, see :mod:`.index`).
START_CONNECTIONS = 4

LATER = "or, if the index is only unreachable from here for now, run `reprobox lock EXP` later"


class ConnectTimeout(OSError):
    """The host did not accept a TCP connection in time."""


@dataclass(frozen=True)
class Response:
    url: str  # the final URL, after redirects (with credentials, in memory only)
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def _basic(user: str, password: str) -> str:
    raw = f"{unquote(user)}:{unquote(password)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Transport:
    """A pool of idle connections per (scheme, host, port, proxy); safe to share between threads."""

    def __init__(self, config: IndexConfig, *, environ: Optional[Mapping[str, str]] = None) -> None:
        self.config = config
        self.timeout, self.connect_timeout = timeouts(config)
        self._environ = dict(os.environ if environ is None else environ)
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        #: Hosts that already failed for network reasons in this lock: later requests to them fail
        #: at once instead of each waiting out its own timeouts (a dead index costs one timeout).
        self._dead: dict[tuple, IndexUnavailable] = {}
        self._lock = threading.Lock()
        self._ctx: Optional[ssl.SSLContext] = None
        self._insecure: Optional[ssl.SSLContext] = None
        self._ctx_lock = threading.Lock()
        self._closed = False
        self._netrc = self._read_netrc(self._environ)
        self._dns: dict[tuple[str, int], list] = {}
        self._dns_locks: dict[tuple[str, int], threading.Lock] = {}
        #: Called with the seconds from sending each request to its status line (the index's
        #: latency, as the caller may size its parallelism by it).
        self.on_first_byte: Optional[Callable[[float], None]] = None
        #: Pages fetched ahead by curl (:mod:`.curlpages`): a GET of one of them that curl
        #: answered cleanly is served from it, any other goes to the network as usual.
        self.pages: Optional[CurlPages] = None

    # ------------------------------------------------------------------ name resolution

    def _addresses(self, host: str, port: int) -> list:
        """getaddrinfo once per host: many threads resolving the same name at once make some
        resolvers drop queries and stall for their 5 s retry (measured here: 32 parallel
        lookups of one name took 5 s, 8 took 3 ms)."""
        key = (host, port)
        with self._lock:
            lock = self._dns_locks.setdefault(key, threading.Lock())
        with lock:
            found = self._dns.get(key)
            if found is None:
                found = _hedged_getaddrinfo(host, port, self.timeout)
                self._dns[key] = found
            return found

    def _create_connection(
        self, address: tuple, timeout: object = None, source_address: object = None
    ) -> socket.socket:
        host, port = address[0], int(address[1])
        error: Optional[OSError] = None
        for family, type_, proto, _name, sockaddr in self._addresses(host, port):
            sock = socket.socket(family, type_, proto)
            try:
                sock.settimeout(self.connect_timeout)
                if source_address:
                    sock.bind(source_address)  # type: ignore[arg-type]
                sock.connect(sockaddr)
                sock.settimeout(self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except socket.timeout:
                sock.close()
                error = ConnectTimeout(
                    f"no connection to {host}:{port} within {self.connect_timeout:.0f} s"
                )
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"no address for {host}")

    # ------------------------------------------------------------------ TLS, auth, proxies

    def _context(self, url: str) -> ssl.SSLContext:
        import ssl  # lazy: ~10 ms, only once a connection is made

        # its own lock: loading a CA bundle takes tens of milliseconds, and nothing else
        # (connection pool, DNS) should wait behind it
        with self._ctx_lock:
            if self.config.is_trusted(url):
                if self._insecure is None:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    self._insecure = ctx
                return self._insecure
            if self._ctx is None:
                self._ctx = self._make_context()
            return self._ctx

    def _make_context(self) -> ssl.SSLContext:
        import ssl  # lazy: ~10 ms, only once a connection is made

        cert = self.config.cert
        try:
            if cert and os.path.isdir(cert):
                ctx = ssl.create_default_context(capath=cert)
            elif cert:
                ctx = ssl.create_default_context(cafile=cert)
            else:
                ctx = ssl.create_default_context()
            if self.config.client_cert:
                ctx.load_cert_chain(self.config.client_cert)
        except (OSError, ssl.SSLError) as exc:
            which = self.config.client_cert if self.config.client_cert and cert is None else cert
            raise IndexUnavailable(
                f"cannot load the certificate file {which}: {exc}",
                "fix pip's `cert` / `client-cert` setting (see `pip config list`) so that it "
                "points at a readable PEM file",
            ) from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _netrc_auth(self, host: str) -> Optional[str]:
        rc = self._netrc
        if rc is None:
            return None
        found = rc.authenticators(host)
        if not found:
            return None
        login, _account, password = found
        return _basic(login or "", password or "")

    @staticmethod
    def _read_netrc(environ: Mapping[str, str]) -> Optional[netrc.netrc]:
        return read_netrc(environ)

    def _proxy_for(self, scheme: str, host: str) -> Optional[str]:
        proxy = self.config.proxies.get(scheme)
        if not proxy:
            return None
        no = self.config.proxies.get("no")
        if no:
            # lazy: urllib.request costs ~25 ms, only with a NO_PROXY setting
            from urllib.request import (  # type: ignore[attr-defined]  # NO_PROXY's rules
                proxy_bypass_environment,
            )

            if proxy_bypass_environment(host, {"no": no}):
                return None
        return proxy

    # ------------------------------------------------------------------ connections

    def _connect(self, key: tuple, url: str) -> http.client.HTTPConnection:
        import http.client  # lazy: ~25 ms, only once a connection is made

        scheme, host, port, proxy = key
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._context(url)
                )
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        pparts = urlsplit(proxy)
        phost = pparts.hostname or ""
        pport = pparts.port or (443 if pparts.scheme == "https" else 80)
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                phost, pport, timeout=self.timeout, context=self._context(url)
            )
            headers = {}
            if pparts.username:
                headers["Proxy-Authorization"] = _basic(pparts.username, pparts.password or "")
            conn.set_tunnel(host, port, headers=headers)
            return conn
        return http.client.HTTPConnection(phost, pport, timeout=self.timeout)

    def _acquire(self, key: tuple, url: str) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        conn = self._connect(key, url)
        conn._create_connection = self._create_connection  # type: ignore[attr-defined]
        return conn, False

    def _release(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.setdefault(key, []).append(conn)
                return
        conn.close()

    def _key_for(self, url: str) -> tuple:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        return (scheme, host, port, self._proxy_for(scheme, host))

    def prewarm_context(self, url: str) -> None:
        """Load the TLS context for ``url`` now (the CA bundle takes ~20 ms to parse, without
        holding the GIL), so that the threads opening connections meanwhile import the HTTP
        modules instead of waiting for it. Failures are left to the requests to report."""
        if urlsplit(url).scheme != "https":
            return
        threading.Thread(
            target=self._prewarm_dns, args=(url,), daemon=True, name="reprobox-dns-prewarm"
        ).start()
        try:
            self._context(url)
        except Exception:  # noqa: BLE001 - the request that needs it reports it properly
            pass

    def _prewarm_dns(self, url: str) -> None:
        """Resolve the host that connections to ``url`` go to (the proxy's, if one is used)
        while the CA bundle loads; the connecting threads then find the answer ready."""
        _scheme, host, port, proxy = self._key_for(url)
        if proxy is not None:
            pparts = urlsplit(proxy)
            host = pparts.hostname or ""
            port = pparts.port or (443 if pparts.scheme == "https" else 80)
        try:
            self._addresses(host, port)
        except Exception:  # noqa: BLE001 - the request that needs it reports it properly
            pass

    def connect_ahead(self, url: str, count: int) -> None:
        """Load the TLS context and open ``count`` connections to ``url``'s host, each on a
        thread of its own, and return at once: they are ready in the idle pool when requests
        come. Failures are left to the requests to report."""
        if urlsplit(url).scheme not in ("http", "https"):
            return

        def one() -> None:
            try:
                self.prewarm_one(url)
            except Exception:  # noqa: BLE001 - the request that needs the host reports it
                pass

        threading.Thread(
            target=self.prewarm_context, args=(url,), daemon=True, name="reprobox-tls-context"
        ).start()
        for i in range(count):
            threading.Thread(target=one, daemon=True, name=f"reprobox-connect-{i}").start()

    def prewarm_one(self, url: str) -> None:
        """Open one connection to ``url``'s host now (name lookup, TCP, TLS, CA bundle
        loading) and keep it idle for the next request; a lookup thread calls this as it
        starts. Failures raise; the caller ignores them, as the request that needs the host
        reports them properly."""
        if urlsplit(url).scheme not in ("http", "https"):
            return
        key = self._key_for(url)
        if key in self._dead:
            return
        conn = self._connect(key, url)
        conn._create_connection = self._create_connection  # type: ignore[attr-defined]
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        self._release(key, conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    # ------------------------------------------------------------------ requests

    def get(self, url: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        """GET ``url`` following redirects; 4xx answers are returned, network failures raise."""
        if self.pages is not None:
            fetched = self.pages.response(url)
            if fetched is not None:
                return fetched
        current = url
        auth_host: Optional[str] = None
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https"):
                raise IndexUnavailable(
                    f"{strip_url_credentials(url)} redirected to an unsupported URL scheme "
                    f"{parts.scheme!r}",
                    "check the index URL in pip's configuration (`pip config list`)",
                )
            hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip", **(headers or {})}
            host = parts.hostname or ""
            if parts.username is not None:
                hdrs["Authorization"] = _basic(parts.username, parts.password or "")
                auth_host = host
            elif auth_host is None or auth_host == host:
                # credentials never follow a redirect to another host
                token = self._netrc_auth(host)
                if token:
                    hdrs["Authorization"] = token
            resp = self._once(current, hdrs)
            if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                nxt = urljoin(current, resp.headers["location"])
                if urlsplit(nxt).hostname != host:
                    auth_host = "\0"  # crossed hosts: drop URL credentials from now on
                    nxt = strip_url_credentials(nxt)
                current = nxt
                continue
            return Response(current, resp.status, resp.headers, resp.body)
        raise IndexUnavailable(
            f"{strip_url_credentials(url)} redirected more than {MAX_REDIRECTS} times",
            "check the index URL in pip's configuration (`pip config list`)",
        )

    def _once(self, url: str, headers: Mapping[str, str]) -> Response:
        import http.client  # lazy: ~25 ms with ssl, only once a connection is made
        import ssl

        parts = urlsplit(url)
        key = self._key_for(url)
        dead = self._dead.get(key)
        if dead is not None:
            raise IndexUnavailable(dead.message, dead.hint)
        scheme, host, port, proxy = key
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hdrs = dict(headers)
        if proxy and scheme == "http":
            target = f"http://{host}:{port}{target}"
            pparts = urlsplit(proxy)
            if pparts.username:
                hdrs["Proxy-Authorization"] = _basic(pparts.username, pparts.password or "")
        attempts = max(self.config.retries, 0) + 1
        failures = 0
        free_retry = True  # a keep-alive connection the server closed while idle costs nothing
        last: Optional[BaseException] = None
        while failures < attempts:
            conn, reused = self._acquire(key, url)
            try:
                sent = time.monotonic()
                conn.request("GET", target, headers=hdrs)
                raw = conn.getresponse()
                if self.on_first_byte is not None:
                    self.on_first_byte(time.monotonic() - sent)
                body = raw.read()
                status = raw.status
                rheaders = {k.lower(): v for k, v in raw.getheaders()}
                will_close = raw.will_close
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise IndexUnavailable(
                    f"the TLS certificate of {host} was not accepted: {exc.verify_message}",
                    "if this network re-signs TLS, point pip's `cert` at the CA bundle "
                    "(`pip config set global.cert /path/to/ca.pem`); " + LATER,
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
                if isinstance(exc, ConnectTimeout):
                    break
                if reused and free_retry:
                    free_retry = False
                    continue
                failures += 1
                if failures < attempts:
                    time.sleep(min(0.25 * 2**failures, 2.0))
                continue
            if will_close:
                conn.close()
            else:
                self._release(key, conn)
            if status in _RETRY_STATUSES:
                failures += 1
                last = IndexUnavailable(f"HTTP {status} after {failures} tries")
                if failures < attempts:
                    time.sleep(min(0.25 * 2**failures, 2.0))
                continue
            enc = rheaders.get("content-encoding", "").lower()
            try:
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
            except (OSError, zlib.error, EOFError) as exc:
                last = exc
                failures += 1
                continue
            return Response(url, status, rheaders, body)
        reason = _describe(last)
        where = f" through the proxy {strip_url_credentials(proxy)}" if proxy else ""
        error = IndexUnavailable(
            f"cannot reach {strip_url_credentials(url)}{where}: {reason}",
            "check the network and the proxy (HTTPS_PROXY / NO_PROXY, pip's `proxy`), "
            "and the index URL in pip's configuration (`pip config list`); " + LATER,
        )
        if not isinstance(last, IndexUnavailable):  # a network failure, not an HTTP status
            self._dead[key] = error
        raise error


#: When a lookup has not answered after these delays, another one is started alongside it.
DNS_HEDGES = (0.25, 1.0)


def _hedged_getaddrinfo(host: str, port: int, timeout: float) -> list:
    """getaddrinfo, with a second (and third) query started if the first is slow.

    A resolver that loses one UDP packet answers only after its retry delay (5 s with glibc's
    defaults); measured on a sandboxed network, about 3 lookups in 100 stalled that way. A
    parallel query for the same name almost never stalls too, so the first answer wins; the
    stalled lookup finishes in its daemon thread and is ignored.
    """
    answers: queue.Queue = queue.Queue()

    def ask() -> None:
        try:
            answers.put((True, socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except OSError as exc:
            answers.put((False, exc))

    started = 0
    failures: list[OSError] = []
    deadline = time.monotonic() + timeout
    delays = list(DNS_HEDGES)
    while True:
        if started == len(failures) or delays:
            threading.Thread(target=ask, daemon=True, name="reprobox-dns").start()
            started += 1
        wait = delays.pop(0) if delays else max(deadline - time.monotonic(), 0.0)
        try:
            ok, value = answers.get(timeout=wait)
        except queue.Empty:
            if time.monotonic() >= deadline:
                raise socket.timeout(f"resolving {host} timed out") from None
            continue
        if ok:
            return value
        failures.append(value)
        if len(failures) >= started and not delays:
            raise failures[-1]


def _describe(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, ConnectTimeout):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, IndexUnavailable):
        return exc.message
    text = str(exc) or type(exc).__name__
    return strip_url_credentials(text)
