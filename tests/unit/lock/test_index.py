"""The simple-API client against a local index serving pages recorded from PyPI.

Real HTTP over a real socket (http.server on 127.0.0.1), real file:// indexes and find-links
folders on disk; nothing inside the client is patched.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


from reprobox.errors import IndexUnavailable
from reprobox.lock.config import IndexConfig
from reprobox.lock.dists import ReleaseFilter, Source
from reprobox.lock.index import IndexClient
from reprobox.lock.pages import parse_html_page, parse_json_page, release_items
from tests.fixtures.lock.fakeindex import (
    FakeIndex,
    html_page,
    json_files,
    make_wheel,
    recorded,
    sha256_of,
)

from ...conftest import require_module
from ...asserts import refuses

PAGES = {
    "six": {"json": recorded("six", "json"), "html": recorded("six", "html")},
    "pyyaml": {"json": recorded("pyyaml", "json"), "html": recorded("pyyaml", "html")},
}


def _client(tmp_path: Path, **cfg: object) -> IndexClient:
    return IndexClient(IndexConfig(timeout=5.0, retries=1, **cfg), tmp_path / "cache")


def _expected(project: str, version: str) -> dict[str, str]:
    keep = ReleaseFilter(project, version)
    return {
        f["filename"]: f["hashes"]["sha256"] for f in json_files(project) if keep(f["filename"])
    }


def test_json_and_html_pages_give_the_same_files():
    src = Source("https://pypi.org/simple", "index")
    for project, version in (("six", "1.16.0"), ("pyyaml", "6.0.2")):
        keep = ReleaseFilter(project, version)
        from_json = parse_json_page(PAGES[project]["json"], "https://pypi.org/simple/x/", src, keep)
        keep = ReleaseFilter(project, version)
        from_html = parse_html_page(PAGES[project]["html"], "https://pypi.org/simple/x/", src, keep)
        assert {f.filename: f.sha256 for f in from_json} == _expected(project, version)
        assert {f.filename: f.sha256 for f in from_html} == _expected(project, version)
        assert all(f.size and f.upload_time for f in from_json)  # PEP 700 fields kept


def test_release_items_fast_path_equals_a_full_decode():
    text = PAGES["pyyaml"]["json"].decode()
    data = json.loads(text)
    versions = {v for v in data["versions"]}
    for version in sorted(versions):
        keep = ReleaseFilter("pyyaml", version)
        fast = release_items(text, version)
        assert fast is not None, version
        assert [i for i in fast if keep(i["filename"])] == [
            i for i in data["files"] if keep(i["filename"])
        ]
    # the same page written compactly, or with its keys in another order, reads the same
    compact = json.dumps(data, separators=(",", ":"))
    shuffled = json.dumps(
        {
            "versions": data["versions"],
            "meta": data["meta"],
            "files": [dict(reversed(list(f.items()))) for f in data["files"]],
            "name": data["name"],
        },
        indent=1,
    )
    for other in (compact, shuffled):
        for version in ("6.0.2", "5.4.1", "3.10"):
            keep = ReleaseFilter("pyyaml", version)
            got = release_items(other, version)
            assert got is not None
            assert sorted(i["filename"] for i in got if keep(i["filename"])) == sorted(
                i["filename"] for i in data["files"] if keep(i["filename"])
            )
    # a page of an unexpected shape is not guessed at: the caller decodes it whole
    odd = '{"files": [], "name": "x", "versions": ["1.0-1"], "meta": {"api-version": "1.1"}}'
    assert release_items(odd, "1") is None
    assert release_items('{"files": []}', "9.9") == []


def test_html_details_base_href_yanked_and_requires_python():
    page = (
        b'<html><head><base href="https://files.example/pkgs/"></head><body>'
        b'<a href="a-1.0.tar.gz#sha256=AB12" data-yanked="broken build" '
        b'data-requires-python="&gt;=3.8">a-1.0.tar.gz</a>'
        b'<a href="a-1.0-py3-none-any.whl#md5=00&sha256=cd34" data-yanked>'
        b'a-1.0-py3-none-any.whl</a><a href="a-0.9.tar.gz">a-0.9.tar.gz</a></body></html>'
    )
    src = Source("https://idx.example/simple", "index")
    files = parse_html_page(page, "https://idx.example/simple/a/", src, ReleaseFilter("a", "1.0"))
    assert [(f.url, f.sha256, f.yanked, f.requires_python) for f in files] == [
        ("https://files.example/pkgs/a-1.0.tar.gz", "ab12", "broken build", ">=3.8"),
        ("https://files.example/pkgs/a-1.0-py3-none-any.whl", "cd34", "", None),
    ]


def test_lookup_over_http_with_json_and_keep_alive(tmp_path):
    with FakeIndex(PAGES) as idx:
        client = _client(tmp_path, index_url=idx.url)
        found = client.lookup_many([("pyyaml", "6.0.2"), ("six", "1.16.0"), ("nope", "1.0")])
        client.close()
        assert {f.filename: f.sha256 for f in found[("six", "1.16.0")][0].files} == _expected(
            "six", "1.16.0"
        )
        assert len(found[("pyyaml", "6.0.2")][0].files) == 53
        nope = found[("nope", "1.0")][0]
        assert not nope.project_found and nope.files == ()
        assert all("application/vnd.pypi.simple.v1+json" in h["Accept"] for _, h in idx.requests)
        assert len(idx.project_requests()) == 3


def test_connections_are_reused(tmp_path):
    pages = {f"p{i}": {"html": html_page(f"p{i}", [])} for i in range(40)}
    with FakeIndex(pages) as idx:
        client = IndexClient(IndexConfig(index_url=idx.url), tmp_path / "c", max_workers=4)
        client.lookup_many([(f"p{i}", "1.0") for i in range(40)])
        client.close()
        assert len(idx.project_requests()) == 40
        assert idx.connections <= 4  # one per worker, kept alive


def test_release_cache_makes_a_second_lookup_free_and_holds_no_credentials(tmp_path):
    with FakeIndex(PAGES, auth=("alice", "s3cret-token")) as idx:
        url = idx.url.replace("http://", "http://alice:s3cret-token@")
        first = _client(tmp_path, index_url=url).lookup_many([("six", "1.16.0")])
        assert idx.project_requests() == ["/simple/six/"]
        second_client = _client(tmp_path, index_url=url)
        second = second_client.lookup_many([("six", "1.16.0")])
        assert second_client.requests == 0 and len(idx.project_requests()) == 1
        assert first == second
    dump = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert b"s3cret-token" not in dump and b"alice" not in dump


def test_missing_release_is_remembered_for_a_while(tmp_path):
    with FakeIndex(PAGES) as idx:
        _client(tmp_path, index_url=idx.url).lookup_many([("six", "99.0")])
        again = _client(tmp_path, index_url=idx.url)
        out = again.lookup_many([("six", "99.0")])[("six", "99.0")][0]
        assert again.requests == 0
        assert out.project_found and out.files == () and out.other_versions > 10


def test_redirect_to_the_normalized_name_is_followed(tmp_path):
    with FakeIndex(PAGES) as idx:
        client = _client(tmp_path, index_url=idx.url)
        got = client._page(idx.url + "/PyYAML/")
        assert got is not None and got[0].endswith("/simple/pyyaml/")


def test_wrong_credentials_name_the_fix(tmp_path):
    with FakeIndex(PAGES, auth=("alice", "right")) as idx:
        url = idx.url.replace("http://", "http://alice:wrong@")
        with refuses(IndexUnavailable, names=["HTTP 401", "netrc"]) as err:
            _client(tmp_path, index_url=url).lookup_many([("six", "1.16.0")])
    assert "wrong" not in str(err.value)


def test_netrc_credentials_are_used_but_never_stored(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password n3trc-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with FakeIndex(PAGES, auth=("bob", "n3trc-pw")) as idx:
        found = _client(tmp_path, index_url=idx.url).lookup_many([("six", "1.16.0")])
    assert found[("six", "1.16.0")][0].files
    dump = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert b"n3trc-pw" not in dump


def test_transient_errors_are_retried(tmp_path):
    with FakeIndex(PAGES, fail=1) as idx:
        found = _client(tmp_path, index_url=idx.url).lookup_many([("six", "1.16.0")])
        assert found[("six", "1.16.0")][0].files and len(idx.requests) == 2
    with FakeIndex(PAGES, fail=10) as idx:
        with refuses(IndexUnavailable, names=["HTTP 503", "reprobox lock EXP"]):
            _client(tmp_path / "b", index_url=idx.url).lookup_many([("six", "1.16.0")])


def test_unreachable_index_names_the_fix(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with refuses(IndexUnavailable, names=f"cannot reach http://127.0.0.1:{port}") as err:
        _client(tmp_path, index_url=f"http://u:pw@127.0.0.1:{port}/simple").lookup_many(
            [("six", "1.16.0")]
        )
    assert "connection refused" in err.value.message
    assert "proxy" in err.value.hint and "reprobox lock EXP" in err.value.hint
    assert "pw" not in str(err.value)


def test_plain_http_proxy_is_used(tmp_path):
    # the fake index also answers absolute-URI requests, as an HTTP proxy receives them
    with FakeIndex(PAGES) as proxy:
        target = "http://index.invalid/simple"  # only the proxy can reach it
        client = _client(
            tmp_path, index_url=target, proxies={"http": f"http://127.0.0.1:{proxy.port}"}
        )
        found = client.lookup_many([("six", "1.16.0")])
        assert found[("six", "1.16.0")][0].files
        assert proxy.proxied == ["http://index.invalid:80/simple/six/"]
        bypass = _client(
            tmp_path / "b",
            index_url=target,
            proxies={"http": f"http://127.0.0.1:{proxy.port}", "no": "index.invalid"},
        )
        # no_proxy: asked directly, the name does not resolve, and nothing went to the proxy.
        with refuses(IndexUnavailable, names="index.invalid"):
            bypass.lookup_many([("six", "1.16.0")])
        assert proxy.proxied == ["http://index.invalid:80/simple/six/"]


def test_file_index_and_find_links_folder(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    whl = make_wheel(files, "tiny", "1.0")
    sdist = files / "tiny-1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    simple = tmp_path / "simple" / "tiny"
    simple.mkdir(parents=True)
    (simple / "index.html").write_bytes(
        html_page(
            "tiny",
            [
                (f"../../files/{whl.name}#sha256={sha256_of(whl)}", whl.name),
                ("../../files/tiny-1.0.tar.gz", "tiny-1.0.tar.gz"),  # no hash: computed locally
                ("../../files/tiny-0.9.tar.gz#sha256=00", "tiny-0.9.tar.gz"),
            ],
        )
    )
    links = tmp_path / "links"
    links.mkdir()
    local = make_wheel(links, "tiny", "1.0+local")
    cfg = dict(index_url=(tmp_path / "simple").as_uri(), find_links=(str(links),))
    client = _client(tmp_path, **cfg)
    found = client.lookup_many([("tiny", "1.0"), ("tiny", "1.0+local")])
    on_index, in_links = found[("tiny", "1.0")]
    assert {f.filename: f.sha256 for f in on_index.files} == {
        whl.name: sha256_of(whl),
        sdist.name: sha256_of(sdist),
    }
    assert all(f.size and f.path for f in on_index.files)
    assert in_links.project_found and in_links.files == ()
    local_lookup = found[("tiny", "1.0+local")][1]
    assert [(f.filename, f.sha256) for f in local_lookup.files] == [(local.name, sha256_of(local))]
    assert client.requests == 0


def test_lookup_many_stops_asking_once_settled(tmp_path):
    with FakeIndex(PAGES) as first, FakeIndex(PAGES) as second:
        client = _client(tmp_path, index_url=first.url, extra_index_urls=(second.url,))
        found = client.lookup_many(
            [("six", "1.16.0"), ("six", "99.0")], done=lambda key, lookups: bool(lookups[-1].files)
        )
        assert len(found[("six", "1.16.0")]) == 1 and len(found[("six", "99.0")]) == 2
        assert len(first.project_requests()) == 2
        assert second.project_requests() == ["/simple/six/"]  # only the unsettled one


def test_fill_hash_downloads_a_file_the_index_did_not_hash(tmp_path):
    payload = b"wheel bytes"
    pages = {
        "tiny": {
            "html": html_page(
                "tiny", [("/files/tiny-1.0-py3-none-any.whl", "tiny-1.0-py3-none-any.whl")]
            )
        }
    }
    with FakeIndex(pages, files={"tiny-1.0-py3-none-any.whl": payload}) as idx:
        client = _client(tmp_path, index_url=idx.url)
        lookup = client.lookup_many([("tiny", "1.0")])[("tiny", "1.0")][0]
        assert lookup.files[0].sha256 is None
        filled = client.fill_hash(lookup.files[0])
    assert filled.sha256 == hashlib.sha256(payload).hexdigest() and filled.size == len(payload)


def test_https_with_an_untrusted_certificate_names_the_cert_setting(tmp_path):
    # a TLS server whose certificate nobody trusts: the message must point at pip's `cert`
    ssl = require_module("ssl", "Python's ssl module (a CPython built with OpenSSL)")
    import subprocess

    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/simple"
        with refuses(IndexUnavailable, names=["certificate", "cert"]):
            _client(tmp_path, index_url=url).lookup_many([("six", "1.0")])
        # trusted-host turns verification off for that host, as with pip
        found = _client(
            tmp_path / "t", index_url=url, trusted_hosts=(f"127.0.0.1:{server.server_address[1]}",)
        ).lookup_many([("six", "1.0")])
        assert not found[("six", "1.0")][0].project_found
        # and the right CA bundle makes it verify
        found = _client(tmp_path / "v", index_url=url, cert=str(crt)).lookup_many([("six", "1.0")])
        assert not found[("six", "1.0")][0].project_found
    finally:
        server.shutdown()
        server.server_close()


def test_started_queries_are_collected_not_repeated(tmp_path):
    with FakeIndex(PAGES) as first, FakeIndex(PAGES) as second:
        client = _client(tmp_path, index_url=first.url, extra_index_urls=(second.url,))
        wanted = [("six", "1.16.0"), ("six", "99.0")]
        client.prewarm(wanted)
        client.start(wanted)
        found = client.lookup_many(wanted, done=lambda key, lookups: bool(lookups[-1].files))
        client.close()
        assert {f.filename: f.sha256 for f in found[("six", "1.16.0")][0].files} == _expected(
            "six", "1.16.0"
        )
        assert len(found[("six", "99.0")]) == 2
        assert len(first.project_requests()) == 2  # each asked once, by start()
        assert second.project_requests() == ["/simple/six/"]
        assert client.requests == 3


def test_start_sends_nothing_when_a_local_source_comes_first(tmp_path):
    local = tmp_path / "simple"
    (local / "six").mkdir(parents=True)
    (local / "six" / "index.html").write_text(PAGES["six"]["html"].decode())
    with FakeIndex(PAGES) as idx:
        client = _client(tmp_path, index_url=local.as_uri(), extra_index_urls=(idx.url,))
        client.start([("six", "1.16.0")])
        found = client.lookup_many(
            [("six", "1.16.0")], done=lambda key, lookups: bool(lookups[-1].files)
        )
        client.close()
        assert len(found[("six", "1.16.0")]) == 1 and found[("six", "1.16.0")][0].files
        assert idx.project_requests() == []


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _serve(handler: type) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _hashed_paths(cache_root: Path) -> set[str]:
    import sqlite3

    from reprobox.lock.cache import CACHE_VERSION

    db = sqlite3.connect(str(cache_root / CACHE_VERSION / "index.sqlite"))
    try:
        return {row[0] for row in db.execute("SELECT path FROM file_hashes")}
    finally:
        db.close()


def test_start_hashes_the_wanted_files_of_a_find_links_folder_ahead(tmp_path):
    # a remote index first, then a folder: the folder's wanted wheels are hashed while the
    # index has not answered yet; its other files are not read
    links = tmp_path / "links"
    links.mkdir()
    wanted_local = make_wheel(links, "tiny", "1.0+local")
    also_on_index = make_wheel(links, "six", "1.16.0")
    other_version = make_wheel(links, "tiny", "2.0")
    other_project = make_wheel(links, "unwanted", "1.0")
    ahead = {str(wanted_local), str(also_on_index)}
    seen: dict[str, set[str]] = {}

    class Waits(BaseHTTPRequestHandler):
        """Answers only once the folder's hashes are in the cache (or after 10 s)."""

        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            deadline = time.monotonic() + 10
            hashed: set[str] = set()
            while time.monotonic() < deadline:
                try:
                    hashed = _hashed_paths(tmp_path / "cache")
                except Exception:  # noqa: BLE001 - the cache is not created yet
                    hashed = set()
                if ahead <= hashed:
                    break
                time.sleep(0.01)
            seen[self.path] = hashed
            if self.path.rstrip("/").endswith("/six"):
                _send(self, 200, PAGES["six"]["json"], "application/vnd.pypi.simple.v1+json")
            else:
                _send(self, 404, b"not here", "text/plain")

    server = _serve(Waits)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        client = _client(tmp_path, index_url=url, find_links=(str(links),))
        wanted = [("six", "1.16.0"), ("tiny", "1.0+local")]
        client.start(wanted)
        found = client.lookup_many(wanted, done=lambda key, lookups: bool(lookups[-1].files))
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    # both answers went out after both wheels were hashed: the hashing overlapped the wait
    assert seen == {"/simple/six/": ahead, "/simple/tiny/": ahead}
    (local_lookup,) = [lk for lk in found[("tiny", "1.0+local")] if lk.source.kind == "find-links"]
    assert [(f.filename, f.sha256) for f in local_lookup.files] == [
        (wanted_local.name, sha256_of(wanted_local))
    ]
    # six was settled by the index: the folder was never asked about it; its wheel there was
    # hashed ahead, and the digest kept is the file's
    assert [lk.source.kind for lk in found[("six", "1.16.0")]] == ["index"]
    hashed = _hashed_paths(tmp_path / "cache")
    assert hashed == ahead and str(other_version) not in hashed
    assert str(other_project) not in hashed
    again = _client(tmp_path, find_links=(str(links),))
    assert again.cache.file_hash(str(also_on_index)) == sha256_of(also_on_index)
    again.close()


def test_no_hashing_ahead_when_a_local_source_comes_first(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "tiny", "1.0")
    client = _client(tmp_path, find_links=(str(links),), index_url=(tmp_path / "none").as_uri())
    client.start([("tiny", "1.0")])
    client.close()
    from reprobox.lock.cache import CACHE_VERSION

    db = tmp_path / "cache" / CACHE_VERSION / "index.sqlite"
    assert not db.exists() or _hashed_paths(tmp_path / "cache") == set()


def test_pool_grows_to_max_workers_when_the_index_is_slow_to_answer(tmp_path):
    from reprobox.lock import index as index_module

    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(index_module.SLOW_FIRST_BYTE * 3)  # a far index: latency-bound
            with lock:
                state["now"] -= 1
            _send(self, 200, b"<html><body></body></html>", "text/html")

    server = _serve(Slow)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        client = IndexClient(IndexConfig(index_url=url), tmp_path / "c", max_workers=24)
        found = client.lookup_many([(f"p{i}", "1.0") for i in range(120)])
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert all(lookups[0].project_found for lookups in found.values())
    assert index_module.START_WORKERS < state["peak"] <= 24


def test_cached_keys_are_what_the_cache_answers(tmp_path):
    """What the lookups ask is decided without reading the answers: the same releases as
    get_releases, an expired negative answer excluded, another source's entries never."""
    import sqlite3

    from reprobox.lock.cache import NEGATIVE_TTL

    found, missing = ("six", "1.16.0"), ("six", "99.0")
    with FakeIndex(PAGES) as idx:
        client = _client(tmp_path, index_url=idx.url)
        client.lookup_many([found, missing])
        source = client.sources()[0]
        cache = client.cache
        wanted = [found, missing, ("pyyaml", "6.0.2")]
        assert cache.cached_keys(source, wanted) == {found, missing}
        assert set(cache.get_releases(source, wanted)) == {found, missing}
        other = Source("http://elsewhere.invalid/simple", "index", 0)
        assert cache.cached_keys(other, wanted) == set() == set(cache.get_releases(other, wanted))
        client.close()
    db = sqlite3.connect(str(tmp_path / "cache" / "v1" / "index.sqlite"))
    with db:
        db.execute("UPDATE releases SET at = at - ?", (NEGATIVE_TTL + 1,))
    db.close()
    aged = _client(tmp_path).cache
    assert aged.cached_keys(source, wanted) == {found}  # a found release is kept forever
    assert set(aged.get_releases(source, wanted)) == {found}


def test_prefetch_asks_only_what_the_cache_lacks(tmp_path):
    with FakeIndex(PAGES) as idx:
        first = _client(tmp_path, index_url=idx.url)
        first.prefetch([("six", "1.16.0")])
        first.close()
        second = _client(tmp_path, index_url=idx.url)
        second.prefetch([("six", "1.16.0"), ("pyyaml", "6.0.2")])
        second.close()
        assert (first.requests, second.requests) == (1, 1)
        assert idx.project_requests() == ["/simple/six/", "/simple/pyyaml/"]
        third = _client(tmp_path, index_url=idx.url)
        third.prefetch([("pyyaml", "6.0.2"), ("six", "1.16.0")])
        third.close()
        assert third.requests == 0 and len(idx.project_requests()) == 2
