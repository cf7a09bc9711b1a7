"""A lock's index queries, started before the command line loads the rest of reprobox.

``reprobox lock EXP`` imports the command line, the record model and the store and loads the
record (~0.2 s) before its first query goes out, and the queries are the long pole of a cold
lock (~0.25 s for the 117 pages of a data-science environment). :func:`begin`, called from
:mod:`reprobox.entry` before those imports, reads the names and versions of the experiment's
index packages itself and forks a child that asks the first configured index about them
(:meth:`.index.IndexClient.prefetch`; with a cold cache, through curl over one HTTP/2
connection where curl can reach the index as the Python client would, see :mod:`.curlpages`):
the answers go into the lock's release cache, on the other core while this process loads, and
the lock then finds them there. The lock waits for the child
only for the experiment and cache folder it then works out itself, with no ``--platform``
(:func:`take`); otherwise, and when no lock gets that far (a refused record), the child is
stopped (:func:`discard`).

The record is not checked yet here (the store checks it afterwards), so this reads as little as
it can and trusts none of it: the experiment folder is reached without following a link and read
up to the store's size limit (:mod:`reprobox.safefs`), and the child starts only when every
package name is a distribution name in its normalized form (``[a-z0-9]`` runs joined by ``-``):
that name is all that goes into a URL, to the indexes of the host's own pip configuration, as
the lock itself sends it once the store has checked the record. What the cache keeps comes from
the index, never from the record (rows are keyed by source, project and version), so a record
that lies here can only make the child ask about other packages; the lock looks up what the
checked record names. For any doubt nothing starts, and the lock does it all itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Sequence

from .. import layout
from ..errors import IndexUnavailable
from ..safefs import SafeDir

if TYPE_CHECKING:  # imported by the child and the lock, not before the fork
    from .config import IndexConfig

#: A package name as the store accepts it and the URL carries it (PEP 503 normalized).
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.!+_-]{0,127}")
_TAG = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+")
_HEX = re.compile(r"[0-9a-f]+")
#: The kinds of package the lock looks up on the indexes (:func:`.locker._lookup_keys`).
LOOKED_UP = ("index", "archive")


#: What the child writes to the pipe each time a batch of answers is in the cache, before
#: its answer (a JSON object, which never starts with it).
STORED = b"+\n"

#: The longest the lock waits for the child (whose requests have their own timeouts) before
#: stopping it and looking up on its own.
WAIT_LIMIT = 300.0


class Ahead(NamedTuple):
    """What the child did for the lock: its requests, and when it started (``time.monotonic``)."""

    requests: int
    started: float


class _Child(NamedTuple):
    exp_id: str
    pid: int
    fd: int  # the read end of the pipe the child answers on
    started: float


_lock = threading.Lock()
_child: Optional[_Child] = None


def _take() -> Optional[_Child]:
    global _child
    with _lock:
        child, _child = _child, None
    return child


def experiment_ref(args: Sequence[str]) -> Optional[str]:
    """The EXP of a ``lock`` command line (its arguments after ``lock``) when the line is
    ``EXP`` with at most ``--json`` beside it; else None (help, ``--platform``, anything the
    command line itself must judge). A guess, not a parse: :func:`take` decides."""
    refs = [a for a in args if a != "--json"]
    if len(refs) != 1 or refs[0].startswith("-") or len(args) - len(refs) > 1:
        return None
    return refs[0]


def experiment_id(root: Path, ref: str) -> Optional[str]:
    """The experiment an id or an id prefix names, as the store finds it; None for ``latest``,
    a name, an unknown or ambiguous prefix (the store loads records to find those)."""
    if not _HEX.fullmatch(ref) or len(ref) < layout.MIN_PREFIX:
        return None
    with SafeDir.open(root, [layout.STORE_DIR, layout.EXPERIMENTS]) as exps:
        ids = [n for n in exps.names() if layout.ID_RE.match(n)]
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref)]
    return matches[0] if len(matches) == 1 else None


def lookup_keys(environment: Any) -> Optional[list[tuple[str, str]]]:
    """``(name, version)`` of the packages of an unchecked ``environment.json`` document that
    the lock looks up, in the lock's order (compiled ones first, then by name); None when any
    of them is not plainly well formed (the store then says what is wrong)."""
    packages = environment.get("packages") if isinstance(environment, dict) else None
    if not isinstance(packages, list):
        return None
    keyed = []
    for pkg in packages:
        if not isinstance(pkg, dict):
            return None
        source = pkg.get("source")
        kind = source.get("kind") if isinstance(source, dict) else None
        if kind not in LOOKED_UP:
            continue
        name, version, tags = pkg.get("name"), pkg.get("version"), pkg.get("wheel_tags", [])
        if not (
            isinstance(name, str)
            and _NAME.fullmatch(name)
            and isinstance(version, str)
            and _VERSION.fullmatch(version)
            and isinstance(tags, list)
            and all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags)
        ):
            return None
        keyed.append((all(t.endswith("-any") for t in tags), name, version))
    keyed.sort()
    return [(name, version) for _pure, name, version in keyed]


def begin(args: Sequence[str]) -> None:
    """Start the index queries of ``reprobox lock ARGS`` now, when they can be known safely."""
    global _child
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return  # forking a process with threads is unsafe: the lock asks itself
    try:
        ref = experiment_ref(args)
        if ref is None:
            return
        root = layout.find_root()
        exp_id = experiment_id(root, ref)
        if exp_id is None:
            return
        folder = [layout.STORE_DIR, layout.EXPERIMENTS, exp_id]
        with SafeDir.open(root, folder) as d:
            raw = d.read(layout.ENVIRONMENT_FILE, layout.MAX_RECORD_BYTES)
        keys = lookup_keys(json.loads(raw))
        if not keys:
            return
        # pip's configuration reader (~10 ms of imports, dataclasses the most), which the child
        # needs before it can start curl and the lock needs next: imported once, here
        from . import config  # noqa: F401  # lazy: as above, and only for a lock

        started = time.monotonic()
        r, w = os.pipe()
    except Exception:  # noqa: BLE001 - only a head start: the lock finds and reports it
        return
    # SIGTERM waits while the child is born: the child must not run the parent's handler
    # (which would raise into the parent's code), and installs its own first
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(r)
        os.close(w)
        return
    if pid == 0:
        _run_child(r, w, keys, mask)  # does not return
    os.close(w)
    with _lock:
        _child = _Child(exp_id, pid, r, started)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGTERM now finds the child known


def _run_child(r: int, w: int, keys: list[tuple[str, str]], mask: Optional[set] = None) -> None:
    """The forked child: the lookups, its answer through the pipe ``w``, nothing else; it
    ends the process. ``mask``: the signal mask to restore once its SIGTERM handler is in."""
    try:
        # stopped (:func:`_stop`): its own cleanup runs (curl ended, its folder removed)
        signal.signal(signal.SIGTERM, _end_child)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(r)
        devnull = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):  # off the command's terminal and pipes
            os.dup2(devnull, std)
        view = memoryview(json.dumps(_prefetch(keys, w)).encode())
        while view:
            view = view[os.write(w, view) :]
    finally:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup below is the last word
            pages = sys.modules.get("reprobox.lock.curlpages")
            if pages is not None:  # one stopped between curl's start and its cleanup
                pages.close_all()
        finally:
            os._exit(0)


def _end_child(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _stored(w: int) -> None:
    """In the child: tell the lock that more answers are in the cache (it reads them while
    the others arrive); a lock that went away is no matter."""
    try:
        os.write(w, STORED)
    except OSError:
        pass


def _prefetch(keys: list[tuple[str, str]], w: Optional[int] = None) -> dict[str, Any]:
    """In the child: the lookups, into the cache; what the lock needs to know of them. ``w``:
    the pipe to the lock, told of each batch of answers stored (:data:`STORED`)."""
    # in the child only: pip's configuration (~10 ms) first, so that curl starts before the
    # HTTP client and the cache import
    from .cachedir import cache_file, default_cache_dir  # lazy: as above
    from .config import project_page, read_index_config  # lazy: as above

    config = read_index_config()
    cache_dir = default_cache_dir()
    first = config.index_urls[0] if config.index_urls else ""
    remote = "://" in first and not first.startswith("file:")
    pages = None
    if remote and not cache_file(cache_dir).exists():
        # a cold cache: every page is wanted, and curl fetches them from now on (stopped
        # meanwhile, the child closes it on its way out: curlpages.close_all)
        from .curlpages import CurlPages  # lazy: as above

        pages = CurlPages.start(config, [project_page(first, name) for name, _v in keys])
    from .transport import START_CONNECTIONS, Transport  # lazy: as above

    transport = Transport(config)
    transport.pages = pages
    connected = remote and pages is None
    if connected:  # the connections open while the index client imports
        transport.connect_ahead(first, START_CONNECTIONS)
    try:
        # lazy: ~45 ms, the index client and the page parsers, in the child only
        from .index import IndexClient

        client = IndexClient(config, cache_dir, transport=transport)
        answer: dict[str, Any] = {"cache": str(client.cache_dir), "config": config_digest(config)}
        try:
            client.prefetch(
                keys,
                connected=connected,
                pages=pages,
                stored=None if w is None else partial(_stored, w),
            )
        except IndexUnavailable as exc:
            answer["error"] = [exc.message, exc.hint]
        finally:
            answer["requests"] = client.requests
            client.close()
    finally:
        if pages is not None:
            pages.close()
    return answer


def _stop(child: _Child) -> None:
    try:
        os.kill(child.pid, signal.SIGTERM)
    except OSError:
        pass
    _reap(child)


def _reap(child: _Child) -> None:
    try:
        os.close(child.fd)
    except OSError:
        pass
    try:
        os.waitpid(child.pid, 0)
    except OSError:
        pass


def _read(
    child: _Child, limit: float, stored: Optional[Callable[[], None]] = None
) -> Optional[bytes]:
    """The child's answer, read to its end within ``limit`` seconds; None past it. The
    :data:`STORED` notices before it call ``stored()`` (once for those read together); one
    that fails costs nothing, the lock reads the cache again."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([child.fd], [], [], left)[0]:
            return None
        chunk = os.read(child.fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        if not chunks:  # still before the answer: notices, if any
            answer = chunk.lstrip(STORED)
            if len(answer) < len(chunk) and stored is not None:
                try:
                    stored()
                except Exception:  # noqa: BLE001 - only a read ahead
                    pass
            chunk = answer
        if chunk:
            chunks.append(chunk)


def config_digest(config: IndexConfig) -> str:
    """A digest of an index configuration: the child and the lock compare theirs (the
    configuration may hold credentials, which never go through the pipe)."""
    return hashlib.sha256(repr(config).encode()).hexdigest()


class Pending:
    """The child's lookups, handed to the lock that they are for: :meth:`wait` for them where
    the lock would look up; :meth:`close` (always) stops a child not waited for."""

    def __init__(self, child: _Child) -> None:
        self._child: Optional[_Child] = child

    def wait(
        self, config: IndexConfig, cache_dir: Path, stored: Optional[Callable[[], None]] = None
    ) -> Optional[Ahead]:
        """What the child did, when it looked up with this lock's index configuration
        ``config`` into its cache folder ``cache_dir`` (its answers are in the cache); else
        None (nothing the lock can use). Raises the child's :class:`IndexUnavailable` (an
        index failed it), which the lock would meet again. ``stored()`` is called meanwhile
        each time the child says more answers are in the cache."""
        child, self._child = self._child, None
        if child is None:
            return None
        raw = None
        try:
            raw = _read(child, WAIT_LIMIT, stored)
        finally:
            if raw is None:  # past the limit, or interrupted (Ctrl-C)
                _stop(child)
            else:
                _reap(child)
        try:
            answer = json.loads(raw.decode()) if raw else None
        except ValueError:
            answer = None
        if (
            not isinstance(answer, dict)
            or answer.get("cache") != str(cache_dir)
            or answer.get("config") != config_digest(config)
            or not isinstance(answer.get("requests"), int)
        ):
            return None
        error = answer.get("error")
        if isinstance(error, list) and len(error) == 2 and all(isinstance(e, str) for e in error):
            raise IndexUnavailable(error[0], error[1] or None)
        return Ahead(answer["requests"], child.started)

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            _stop(child)


def take(exp_id: str, platform: Optional[str]) -> Optional[Pending]:
    """The child :func:`begin` started, when it was started for the experiment ``exp_id`` (as
    the store loaded and checked it) and the lock has no ``platform``; else None (and the
    child is stopped). The caller closes what it gets."""
    child = _take()
    if child is None:
        return None
    if platform is not None or child.exp_id != exp_id:
        _stop(child)
        return None
    return Pending(child)


def discard() -> None:
    """Stop the child :func:`begin` started and no lock waited for."""
    child = _take()
    if child is not None:
        _stop(child)
