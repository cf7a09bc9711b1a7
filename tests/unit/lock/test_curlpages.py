"""A cold lock's pages through curl (reprobox.lock.curlpages), against a real local index.

curl itself runs for real; the index is the recorded-pages server of the other lock tests.
The Python client sends ``Accept-Encoding: gzip`` and curl ``gzip, deflate``, which is how these
tests tell who asked what.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from reprobox.lock import curlpages
from reprobox.lock.config import IndexConfig
from reprobox.lock.curlpages import CurlPages, usable
from reprobox.lock.index import IndexClient
from reprobox.lock.transport import Response
from tests.conftest import require, require_tool
from tests.fixtures.lock.fakeindex import JSON_TYPE, FakeIndex, recorded
from tests.fixtures.lock.silent import SilentIndex, children, gone

PAGES = {
    "six": {"json": recorded("six", "json"), "html": recorded("six", "html")},
    "pyyaml": {"json": recorded("pyyaml", "json"), "html": recorded("pyyaml", "html")},
}
WANTED = [("pyyaml", "6.0.2"), ("six", "1.16.0")]


@pytest.fixture(autouse=True)
def _curl() -> None:
    require_tool("curl")


@pytest.fixture()
def tmp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """curl's answers go under TMPDIR: a folder of the test's own, to see what is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)
    return folder


@pytest.fixture()
def no_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _by_python(idx: FakeIndex) -> list[str]:
    return [p for p, h in idx.requests if h.get("Accept-Encoding") == "gzip"]


def _by_curl(idx: FakeIndex) -> list[str]:
    return [p for p, h in idx.requests if h.get("Accept-Encoding") != "gzip"]


# --------------------------------------------------------------------------- when curl is used


@pytest.mark.parametrize(
    "config, url, ok",
    [
        ({}, "https://pypi.org/simple/six/", True),
        ({}, "http://127.0.0.1:8080/simple/six/", True),
        ({}, "https://user:secret@mirror.example/simple/six/", False),
        ({}, "https://token@mirror.example/simple/six/", False),
        ({}, "file:///opt/pypi/simple/six/", False),
        ({}, "ftp://mirror.example/simple/six/", False),
        ({"proxies": {"https": "http://proxy:3128"}}, "https://pypi.org/simple/six/", False),
        ({"proxies": {"http": "http://proxy:3128"}}, "https://pypi.org/simple/six/", False),
        ({"proxies": {"no": "localhost"}}, "https://pypi.org/simple/six/", True),
        ({"client_cert": "/etc/me.pem"}, "https://pypi.org/simple/six/", False),
        ({"trusted_hosts": ("pypi.org",)}, "https://pypi.org/simple/six/", False),
        ({}, 'https://pypi.org/simple/six"/', False),
        ({}, "https://pypi.org/simple/six\\/", False),
        ({}, "https://pypi.org/simple/six\n/", False),
        ({}, "https://pypi.org/simple/six\x7f/", False),
        ({}, "https://pypi.org/simple/s\u00efx/", False),
        ({}, "https://p\u00ffpi.org/simple/six/", False),
        ({}, "https://[::1]:8443/simple/six/", True),
        ({}, "https://pypi.org/simple/a{b,c}[1-2]/", True),  # sent as they stand (globoff)
    ],
)
def test_curl_is_used_only_where_the_python_client_connects_the_same_way(
    config: dict, url: str, ok: bool, no_netrc: None
) -> None:
    assert usable(IndexConfig(**config), url) is ok


@pytest.mark.parametrize(
    "netrc, ok",
    [
        ("machine pypi.org login me password secret\n", False),
        ("default login me password secret\n", False),  # every host
        ("machine api.wandb.ai login user password key\n", True),  # another host's
        ("machine pypi.org login\n", False),  # empty credentials are still sent
        ("machine pypi.org bogus x\n", True),  # unreadable to the client: it sends nothing
    ],
)
def test_netrc_credentials_for_the_index_keep_curl_out(
    netrc: str, ok: bool, tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """curl is told nothing of netrc: it is used only where the Python client would send no
    netrc credentials to the index's host (as requests reads the file)."""
    from reprobox.lock.transport import Transport

    rc = tmp_path / "netrc"
    rc.write_text(netrc)
    monkeypatch.setenv("NETRC", str(rc))
    sent = Transport(IndexConfig())._netrc_auth("pypi.org")
    assert (sent is None) is ok  # the client's own reading, which curl's use must follow
    assert usable(IndexConfig(), "https://pypi.org/simple/six/") is ok
    with FakeIndex(PAGES) as idx:
        monkeypatch.setenv("NETRC", str(rc))
        host_rc = netrc.replace("pypi.org", "127.0.0.1")
        rc.write_text(host_rc)
        pages = CurlPages.start(IndexConfig(index_url=idx.url), [f"{idx.url}/six/"])
        try:
            assert (pages is not None) is ok
            if pages is not None:
                assert list(pages.finished()) == [f"{idx.url}/six/"]
                assert all("Authorization" not in h for _p, h in idx.requests)
        finally:
            if pages is not None:
                pages.close()
    assert list(tmp_folder.iterdir()) == []


def test_a_folder_of_certificates_keeps_curl_out(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    with SilentIndex() as server:
        urls = [f"{server.url}/six/"]
        assert CurlPages.start(IndexConfig(index_url=server.url, cert=str(folder)), urls) is None
        assert list(tmp_folder.iterdir()) == []  # nothing started, nothing left
        # the folder is what kept curl out: the same with a bundle file starts it
        started = CurlPages.start(IndexConfig(index_url=server.url, cert=str(bundle)), urls)
        assert started is not None
        started.close()


def test_a_path_with_a_control_character_keeps_curl_out(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    """pip's `cert` can span lines in its configuration file: a newline would end the value in
    curl's configuration and start an option of its own."""
    odd = tmp_path / "ca\nproxy = 127.0.0.1"
    odd.write_text("")
    plain = tmp_path / "ca.pem"
    plain.write_text("")
    with SilentIndex() as server:
        urls = [f"{server.url}/six/"]
        assert CurlPages.start(IndexConfig(index_url=server.url, cert=str(odd)), urls) is None
        assert list(tmp_folder.iterdir()) == []
        # the newline is what kept curl out: the same bundle under a plain name starts it
        started = CurlPages.start(IndexConfig(index_url=server.url, cert=str(plain)), urls)
        assert started is not None
        started.close()
    assert list(tmp_folder.iterdir()) == []


@pytest.mark.parametrize(
    "first, features, secure, ok",
    [
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.11 zlib/1.2.13",
            "alt-svc AsynchDNS HTTP2 HTTPS-proxy IPv6 libz SSL",
            True,
            True,
        ),
        (
            "curl 8.5.0 (x86_64-pc-linux-gnu) libcurl/8.5.0 OpenSSL/3.0.13 zlib/1.3",
            "HTTP2 libz SSL",
            True,
            True,
        ),
        (
            "curl 7.74.0 (x86_64-pc-linux-gnu) libcurl/7.74.0 OpenSSL/1.1.1w zlib/1.2.11",
            "HTTP2 libz SSL",
            True,
            False,
        ),  # no %{urlnum}
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 GnuTLS/3.7.9 zlib/1.2.13",
            "HTTP2 libz SSL",
            True,
            False,
        ),  # another TLS library's trust
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 (OpenSSL/3.0.11) Schannel",
            "HTTP2 libz SSL MultiSSL",
            True,
            False,
        ),  # OpenSSL built in, not in use
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.11 zlib/1.2.13",
            "libz SSL",
            True,
            False,
        ),  # no HTTP/2 for an https index
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.11 zlib/1.2.13",
            "libz SSL",
            False,
            True,
        ),  # ... which an http one does not need
        (
            "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.11",
            "HTTP2 SSL",
            True,
            False,
        ),  # no gzip decoding
        ("", "", True, False),
    ],
)
def test_only_a_curl_named_fit_by_its_version_is_used(
    first: str, features: str, secure: bool, ok: bool
) -> None:
    text = f"{first}\nRelease-Date: 2023-02-20\nProtocols: http https\nFeatures: {features}\n"
    assert curlpages._acceptable(text, secure) is ok


def test_this_machines_curl_is_fit() -> None:
    """The tests below exercise curl for real: the curl here must pass the check."""
    curl = curlpages._find_curl()
    assert curl is not None
    text = subprocess.run([curl, "-V"], capture_output=True, text=True, check=True).stdout
    assert curlpages._acceptable(text, True), text


def test_a_curl_found_relative_to_the_current_folder_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty PATH entry means the current folder, which may be a stranger's checkout."""
    planted = tmp_path / "curl"
    planted.write_text("#!/bin/sh\ntouch ran\n")
    planted.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", ":/nonexistent")
    import shutil

    assert shutil.which("curl") == "curl"  # what PATH names
    assert curlpages._find_curl() is None
    assert not curlpages.curl_available()
    # the current folder is passed over, not the search: a real curl further on PATH is found
    real = shutil.which("curl", path="/usr/bin:/bin:/usr/local/bin")
    assert real is not None
    monkeypatch.setenv("PATH", f":{os.path.dirname(real)}")
    assert shutil.which("curl") == "curl"
    assert curlpages._find_curl() == real


def test_the_configuration_goes_through_stdin_not_the_command_line(
    tmp_folder: Path, no_netrc: None
) -> None:
    with FakeIndex(PAGES) as idx:
        pages = CurlPages.start(IndexConfig(index_url=idx.url), [f"{idx.url}/six/"])
        assert pages is not None
        try:
            assert pages._proc.args[1:] == ["-q", "--config", "-"]  # -q: no ~/.curlrc
            assert list(pages.finished()) == [f"{idx.url}/six/"]
        finally:
            pages.close()


# --------------------------------------------------------------------------- fetching


def test_pages_are_fetched_once_each_and_handed_over_once(tmp_folder: Path, no_netrc: None) -> None:
    with FakeIndex(PAGES) as idx:
        urls = [f"{idx.url}/six/", f"{idx.url}/pyyaml/", f"{idx.url}/absent/", f"{idx.url}/Six/"]
        pages = CurlPages.start(IndexConfig(index_url=idx.url), urls)
        assert pages is not None
        try:
            assert sorted(pages.finished()) == sorted(urls)
            six = pages.response(urls[0])
            assert six is not None
            assert (six.status, six.headers["content-type"]) == (200, JSON_TYPE)
            assert six.body == PAGES["six"]["json"]
            assert pages.response(urls[0]) is None  # handed over once
            absent = pages.response(urls[2])
            assert absent is not None and absent.status == 404
            # a redirect (301 to the normalized name) is not followed: the Python client
            # follows it by its own rules
            assert not pages.ready(urls[3]) and pages.exitcode(urls[3]) == 0
            assert pages.response(urls[3]) is None
        finally:
            pages.close()
        assert sorted(_by_curl(idx)) == sorted(
            ["/simple/six/", "/simple/pyyaml/", "/simple/absent/", "/simple/Six/"]
        )
        assert _by_python(idx) == []
    assert list(tmp_folder.iterdir()) == []  # the answers' folder is gone


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def _fetch_all(idx: FakeIndex) -> dict[str, Optional[Response]]:
    urls = [f"{idx.url}/six/", f"{idx.url}/pyyaml/", f"{idx.url}/absent/"]
    pages = CurlPages.start(IndexConfig(index_url=idx.url), urls)
    assert pages is not None
    try:
        assert sorted(pages.finished()) == sorted(urls)
        return {u: pages.response(u) for u in urls}
    finally:
        pages.close()


def _assert_answers(idx: FakeIndex, got: dict[str, Optional[Response]]) -> None:
    six, pyyaml, absent = (got[f"{idx.url}/{n}/"] for n in ("six", "pyyaml", "absent"))
    assert six is not None and six.body == PAGES["six"]["json"]
    assert pyyaml is not None and pyyaml.body == PAGES["pyyaml"]["json"]
    assert absent is not None and absent.status == 404


def test_answers_go_to_memory_files_that_close_with_the_fetch(
    tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the pages never touch the disk: curl writes each into an anonymous memory
    file it inherited, the folder holds only the empty CA folder, and once the answers are
    taken and the fetch closed, no descriptor of them is left open."""
    require(hasattr(os, "memfd_create"), "memfd_create (Linux)")
    seen: list[list[str]] = []
    real = curlpages.CurlPages._launch

    def launch(self: CurlPages, config: IndexConfig, curl: str) -> bool:
        ok = real(self, config, curl)
        seen.append([self._output(i) for i in range(len(self._urls))])
        return ok

    monkeypatch.setattr(curlpages.CurlPages, "_launch", launch)
    before = _open_fds()
    with FakeIndex(PAGES) as idx:
        got = _fetch_all(idx)
        _assert_answers(idx, got)
    assert all(out.startswith("/proc/self/fd/") for out in seen[0]), seen
    assert _open_fds() - before == set()
    assert list(tmp_folder.iterdir()) == []


@pytest.mark.parametrize("case", ["no memfd", "few descriptors"])
def test_answers_go_to_the_folder_where_memory_files_cannot_be_used(
    case: str, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No memfd_create (not Linux), or too few file descriptors for one per page: the same
    answers, from files in the private folder, which is removed."""
    import resource

    if case == "no memfd":
        monkeypatch.delattr(os, "memfd_create", raising=False)
    else:
        soft = 3 + curlpages.FD_MARGIN - 1  # one short for three pages
        monkeypatch.setattr(resource, "getrlimit", lambda _what: (soft, soft))
    assert curlpages._memory_files(3) is None
    outputs: list[str] = []
    real = curlpages.CurlPages._launch

    def launch(self: CurlPages, config: IndexConfig, curl: str) -> bool:
        ok = real(self, config, curl)
        outputs.extend(self._output(i) for i in range(len(self._urls)))
        return ok

    monkeypatch.setattr(curlpages.CurlPages, "_launch", launch)
    with FakeIndex(PAGES) as idx:
        _assert_answers(idx, _fetch_all(idx))
    assert len(outputs) == 3
    assert all(Path(out).parent.parent == tmp_folder for out in outputs), outputs
    assert list(tmp_folder.iterdir()) == []


def _lookups(config: IndexConfig, cache: Path) -> dict:
    client = IndexClient(config, cache)
    try:
        found = client.lookup_many(WANTED)
        assert client.requests == 0  # all from the cache the prefetch filled
    finally:
        client.close()
    return {
        k: [(lk.project_found, lk.files, lk.other_versions) for lk in v] for k, v in found.items()
    }


def _prefetch(config: IndexConfig, cache: Path, *, curl: bool) -> IndexClient:
    client = IndexClient(config, cache)
    pages = None
    if curl:
        urls = [f"{config.index_url}/{name}/" for name, _v in WANTED]
        pages = CurlPages.start(config, urls)
        assert pages is not None
        client.transport.pages = pages
    try:
        client.prefetch(WANTED, pages=pages)
    finally:
        client.close()
        if pages is not None:
            pages.close()
    return client


def test_a_prefetch_through_curl_caches_what_the_python_client_would(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        _prefetch(config, tmp_path / "python", curl=False)
        assert sorted(_by_python(idx)) == ["/simple/pyyaml/", "/simple/six/"]
        idx.requests.clear()
        client = _prefetch(config, tmp_path / "curl", curl=True)
        assert client.requests == 2
        assert sorted(_by_curl(idx)) == ["/simple/pyyaml/", "/simple/six/"]
        assert _by_python(idx) == []
        idx.requests.clear()
        found = _lookups(config, tmp_path / "curl")
        assert all(found[w][0][0] and found[w][0][1] for w in WANTED)  # real files, found
        assert found == _lookups(config, tmp_path / "python")
        assert idx.requests == []
    assert list(tmp_folder.iterdir()) == []


def test_answers_are_stored_in_batches_and_read_ahead_from_memory(
    tmp_path: Path, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child stores curl's answers as they come, telling the lock after each batch; what
    the lock reads then (read_ahead) it later takes from memory, not from the cache."""
    from reprobox.lock import index as index_mod

    monkeypatch.setattr(index_mod, "STORE_EVERY", (1, 60.0))  # a batch per page
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        cache = tmp_path / "cache"
        client = IndexClient(config, cache)
        reader = IndexClient(config, cache)  # the lock's own client, reading meanwhile
        source = client.sources()[0]
        seen: list[int] = []

        def stored() -> None:
            # each notice comes once its batch is in the cache: the lock can read it now
            seen.append(len(reader.cache.cached_keys(source, WANTED)))
            reader.read_ahead(source, WANTED)

        urls = [f"{config.index_url}/{name}/" for name, _v in WANTED]
        pages = CurlPages.start(config, urls)
        assert pages is not None
        client.transport.pages = pages
        try:
            client.prefetch(WANTED, pages=pages, stored=stored)
        finally:
            client.close()
            pages.close()
        assert seen == [1, 2]
        # the cache goes: the lookups come from what was read ahead, with no request
        reader.cache.close()
        for leftover in cache.rglob("*"):
            if leftover.is_file():
                leftover.unlink()
        idx.requests.clear()
        try:
            found = reader.lookup_many(WANTED)
            assert reader.requests == 0 and idx.requests == []
        finally:
            reader.close()
        assert all(found[w][0].project_found and found[w][0].files for w in WANTED)


def test_a_page_curl_did_not_get_is_asked_again_by_the_python_client(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        _prefetch(config, tmp_path / "python", curl=False)
        idx.requests.clear()
        idx.fail = 1  # the next request of all answers 503
        _prefetch(config, tmp_path / "curl", curl=True)
        assert len(_by_curl(idx)) == 2
        failed = idx.requests[0][0]
        assert _by_python(idx) == [failed]  # the one curl did not get, asked again
        idx.requests.clear()
        assert _lookups(config, tmp_path / "curl") == _lookups(config, tmp_path / "python")
    assert list(tmp_folder.iterdir()) == []


def _all_left_to_python(fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeIndex:
    """A prefetch with ``fake`` as curl: every page asked by the Python client, and found."""
    fake.chmod(0o755)
    monkeypatch.setattr(curlpages, "_find_curl", lambda: str(fake))
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        client = _prefetch(config, tmp_path / "cache", curl=True)
        assert client.requests == 2
        assert sorted(_by_python(idx)) == ["/simple/pyyaml/", "/simple/six/"]
        found = _lookups(config, tmp_path / "cache")
        assert all(found[w][0][0] and found[w][0][1] for w in WANTED)
    return idx


def test_a_curl_that_cannot_do_the_job_leaves_it_all_to_the_python_client(
    tmp_path: Path, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A curl that exits at once (too old, no HTTP/2: curl says so and stops) answers
    nothing; every page is then asked by the Python client."""
    fake = tmp_path / "curl"
    fake.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        "echo 'option --http2: the installed libcurl version does not support this' >&2\n"
        "exit 4\n"
    )
    idx = _all_left_to_python(fake, tmp_path, monkeypatch)
    assert _by_curl(idx) == []
    assert list(tmp_folder.iterdir()) == []


def test_a_missing_curl_means_no_curl(monkeypatch: pytest.MonkeyPatch, no_netrc: None) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert CurlPages.start(IndexConfig(), ["https://pypi.org/simple/six/"]) is None


# --------------------------------------------------------------------------- stopping


def test_removing_the_folder_follows_no_link(tmp_path: Path) -> None:
    """The private folder is emptied by hand (files, links, the empty CA folder): a link put
    in it is removed, never followed, and what it points at is left alone."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    folder = tmp_path / "pages"
    (folder / "ca").mkdir(parents=True)
    (folder / "0").write_bytes(b"{}")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    (folder / "filelink").symlink_to(outside / "keep")
    curlpages._remove_folder(str(folder))
    assert not folder.exists()
    assert (outside / "keep").read_text() == "kept"
    curlpages._remove_folder(str(folder))  # gone already: nothing to do, nothing raised


def test_close_ends_a_curl_still_waiting_and_removes_its_folder(
    tmp_folder: Path, no_netrc: None
) -> None:
    with SilentIndex() as server:
        pages = CurlPages.start(IndexConfig(index_url=server.url), [f"{server.url}/six/"])
        assert pages is not None
        while not server.held:
            time.sleep(0.01)
        assert pages._proc.poll() is None and len(list(tmp_folder.iterdir())) == 1
        pages.close()
        assert pages._proc.poll() is not None
    assert list(tmp_folder.iterdir()) == []


def test_a_stopped_lookup_child_ends_its_curl_and_removes_its_folder(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    """The lock stops a child it does not wait for (SIGTERM): curl goes with it, and so does
    the folder of curl's answers."""
    code = (
        "import os, signal, sys\n"
        "from reprobox.lock import early\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    early._run_child(r, w, [('six', '1.16.0'), ('pyyaml', '6.0.2')])\n"
        "print(pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "os.kill(pid, signal.SIGTERM)\n"
        "os.waitpid(pid, 0)\n"
    )
    with SilentIndex() as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_INDEX_URL": server.url,
            "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        child = int(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while len(server.held) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.held, "curl never connected"
        curls = children(child)
        assert curls, "the child started no curl"
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    for pid in curls:
        assert gone(pid)
    assert list(tmp_folder.iterdir()) == []


# --------------------------------------------------------------------------- certificates


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        [
            require_tool("openssl"),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


class _OnePage:
    """six's recorded page at any path, over HTTPS with a certificate of the test's own
    (``key``, ``cert``) or plain HTTP, gzipped on request; ``requests``: (path,
    Accept-Encoding) of each request."""

    def __init__(
        self, key: Optional[Path] = None, cert: Optional[Path] = None, gzipped: bool = False
    ) -> None:
        self.key, self.cert, self.gzipped = key, cert, gzipped
        self.requests: list[tuple[str, str]] = []

    def __enter__(self) -> "_OnePage":
        import gzip
        import http.server
        import ssl

        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                index.requests.append((self.path, self.headers.get("Accept-Encoding", "")))
                body = PAGES["six"]["json"]
                self.send_response(200)
                self.send_header("Content-Type", JSON_TYPE)
                if index.gzipped:
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if self.cert is not None and self.key is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/simple"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [p for p, _enc in self.requests]


def _fetch_one(config: IndexConfig, url: str) -> tuple[Optional[Response], Optional[int]]:
    """curl's answer for ``url`` and its exit code."""
    pages = CurlPages.start(config, [url])
    assert pages is not None
    try:
        assert list(pages.finished()) == [url]
        code = pages.exitcode(url)
        return pages.response(url), code
    finally:
        pages.close()


#: curl's exit code for a peer certificate it does not trust.
UNTRUSTED = 60


def test_curl_trusts_the_certificate_pip_names_and_no_other(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    key, cert = _self_signed(tmp_path, "index")
    _other_key, other = _self_signed(tmp_path, "other")
    with _OnePage(key, cert) as idx:
        got, code = _fetch_one(IndexConfig(index_url=idx.url, cert=str(cert)), f"{idx.url}/six/")
        assert got is not None and got.status == 200 and got.body == PAGES["six"]["json"]
        assert code == 0 and idx.paths() == ["/simple/six/"]
        refused, code = _fetch_one(
            IndexConfig(index_url=idx.url, cert=str(other)), f"{idx.url}/six/"
        )
        assert refused is None  # left to the Python client, which reports the certificate
        assert code == UNTRUSTED and idx.paths() == ["/simple/six/"]
    assert list(tmp_folder.iterdir()) == []


def test_a_bundle_pip_names_replaces_curls_own_certificate_folder(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    """curl adds its built-in folder (/etc/ssl/certs) to a --cacert; the Python client
    trusts pip's bundle alone. A bundle that does not hold the public index's CA must make
    curl refuse it too (the public index: the one that the host's pip reaches)."""
    from reprobox.lock.config import read_index_config

    index = read_index_config().index_url.rstrip("/")
    require(index.startswith("https://"), "a first index served over HTTPS in pip's configuration")
    url = f"{index}/six/"
    trusted, _code = _fetch_one(IndexConfig(index_url=index), url)  # OpenSSL's defaults
    require(trusted is not None and trusted.status == 200, f"{url} answering here")
    _key, other = _self_signed(tmp_path, "other")
    refused, code = _fetch_one(IndexConfig(index_url=index, cert=str(other)), url)
    assert refused is None and code == UNTRUSTED


def test_the_environments_certificate_variables_do_not_widen_pips_bundle(
    tmp_path: Path, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_DIR / SSL_CERT_FILE / CURL_CA_BUNDLE naming the index's own CA: with pip's
    `cert` naming another bundle, curl trusts that bundle alone, as the Python client does."""
    key, cert = _self_signed(tmp_path, "index")
    _other_key, other = _self_signed(tmp_path, "other")
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    digest = subprocess.run(
        [require_tool("openssl"), "x509", "-hash", "-noout", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (hashed / f"{digest}.0").write_bytes(cert.read_bytes())
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(cert))
    with _OnePage(key, cert) as idx:
        # without pip's cert, OpenSSL's defaults (these variables applied) are trusted
        got, code = _fetch_one(IndexConfig(index_url=idx.url), f"{idx.url}/six/")
        assert got is not None and got.status == 200 and code == 0
        refused, code = _fetch_one(
            IndexConfig(index_url=idx.url, cert=str(other)), f"{idx.url}/six/"
        )
        assert refused is None and code == UNTRUSTED
        assert idx.paths() == ["/simple/six/"]
    assert list(tmp_folder.iterdir()) == []


# --------------------------------------------------------------------------- the lock's own start


def _started(config: IndexConfig, cache: Path) -> dict:
    """start() then lookup_many(), as a lock without the early child does them."""
    client = IndexClient(config, cache)
    try:
        client.prewarm(WANTED, then_start=True)
        client.start(WANTED)
        found = client.lookup_many(WANTED)
        assert client.requests == 2
    finally:
        client.close()
    return {
        k: [(lk.project_found, lk.files, lk.other_versions) for lk in v] for k, v in found.items()
    }


@pytest.mark.parametrize("fail", [0, 1])
def test_a_locks_own_start_hands_the_pages_to_curl(
    fail: int, tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        _prefetch(config, tmp_path / "python", curl=False)
        reference = _lookups(config, tmp_path / "python")
        idx.requests.clear()
        idx.fail = fail  # 1: the first request answers 503
        found = _started(config, tmp_path / "curl")
        assert sorted(_by_curl(idx)) == ["/simple/pyyaml/", "/simple/six/"]
        assert _by_python(idx) == [idx.requests[0][0]] * fail  # only what curl did not get
        assert found == reference and all(found[w][0][1] for w in WANTED)
    assert list(tmp_folder.iterdir()) == []


def test_a_lock_that_ends_early_stops_its_curl(
    tmp_path: Path, tmp_folder: Path, no_netrc: None
) -> None:
    with SilentIndex() as server:
        client = IndexClient(IndexConfig(index_url=server.url, timeout=5.0), tmp_path / "c")
        client.start(WANTED)
        pages = client.transport.pages
        assert pages is not None
        while not server.held:
            time.sleep(0.01)
        client.close()
        assert pages._proc.poll() is not None
    assert list(tmp_folder.iterdir()) == []


# --------------------------------------------------------------------------- hostile surroundings


def test_urls_are_sent_as_they_stand_never_expanded(tmp_folder: Path, no_netrc: None) -> None:
    """curl's URL globbing would make one URL several transfers under one number."""
    with FakeIndex(PAGES) as idx:
        urls = [f"{idx.url}/g{{six,pyyaml}}/", f"{idx.url}/n[1-3]/", f"{idx.url}/a/../six/"]
        pages = CurlPages.start(IndexConfig(index_url=idx.url), urls)
        assert pages is not None
        try:
            assert sorted(pages.finished()) == sorted(urls)
            assert [pages.response(u).status for u in urls] == [404, 404, 404]  # type: ignore[union-attr]
        finally:
            pages.close()
        assert sorted(_by_curl(idx)) == sorted(
            ["/simple/g{six,pyyaml}/", "/simple/n[1-3]/", "/simple/a/../six/"]
        )


def test_curl_ignores_proxy_variables_and_its_own_configuration_files(
    tmp_path: Path, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python client reads pip's proxies only; curl is used only without any, and reads
    neither the proxy variables nor ~/.curlrc (nor CURL_HOME's)."""
    with SilentIndex() as trap, FakeIndex(PAGES) as idx:
        for name in ("ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(name, trap.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        home = tmp_path / "home"
        home.mkdir()
        hostile = f'proxy = "{trap.url}"\nheader = "X-Planted: 1"\nlocation\n'
        (home / ".curlrc").write_text(hostile)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("CURL_HOME", str(home))
        got, code = _fetch_one(IndexConfig(index_url=idx.url), f"{idx.url}/six/")
        assert got is not None and got.status == 200 and code == 0
        assert got.body == PAGES["six"]["json"]
        assert trap.held == []  # no connection through the would-be proxy
        assert [p for p, _h in idx.requests] == ["/simple/six/"]
        assert all("X-Planted" not in h for _p, h in idx.requests)
        assert idx.proxied == []


def test_closing_every_live_fetch_ends_curl_and_removes_its_folder(
    tmp_folder: Path, no_netrc: None
) -> None:
    """What a stopped lookup child calls last, whatever it was doing."""
    with SilentIndex() as server:
        pages = CurlPages.start(IndexConfig(index_url=server.url), [f"{server.url}/six/"])
        assert pages is not None and pages in curlpages._LIVE
        curlpages.close_all()
        assert pages._proc is not None and pages._proc.poll() is not None
        assert pages not in curlpages._LIVE
    assert list(tmp_folder.iterdir()) == []


def test_a_start_interrupted_midway_leaves_nothing(
    tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (SystemExit from the child's SIGTERM handler) after curl started and before
    start() returned: curl is ended, the folder goes, and the stop goes on."""
    real = subprocess.Popen
    started: list[subprocess.Popen] = []

    def popen(args: list[str], **kwargs: object) -> subprocess.Popen:
        if args[1:] == ["-V"]:
            raise SystemExit(0)
        proc = real(args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    monkeypatch.setattr(curlpages.subprocess, "Popen", popen)
    with SilentIndex() as server:
        with pytest.raises(SystemExit):
            CurlPages.start(IndexConfig(index_url=server.url), [f"{server.url}/six/"])
        assert len(started) == 1 and started[0].args[1:] == ["-q", "--config", "-"]
        assert started[0].poll() is not None  # the transfers' curl, ended
    assert list(tmp_folder.iterdir()) == []
    assert not curlpages._LIVE


def test_a_curl_on_another_tls_library_leaves_it_all_to_the_python_client(
    tmp_path: Path, tmp_folder: Path, no_netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A curl that works but names a TLS library whose trust this module cannot pin: its
    answers are never read, and every page is asked by the Python client."""
    real = curlpages._find_curl()
    assert real is not None
    fake = tmp_path / "curl"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -V ]; then\n'
        "  echo 'curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 GnuTLS/3.7.9 zlib/1.2.13'\n"
        "  echo 'Features: HTTP2 libz SSL'\n"
        "  exit 0\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    _all_left_to_python(fake, tmp_path, monkeypatch)
    assert list(tmp_folder.iterdir()) == []


def test_a_gzipped_page_is_decoded_as_the_python_client_decodes_it(
    tmp_folder: Path, no_netrc: None
) -> None:
    with _OnePage(gzipped=True) as idx:
        got, code = _fetch_one(IndexConfig(index_url=idx.url), f"{idx.url}/six/")
    assert code == 0 and got is not None and got.body == PAGES["six"]["json"]
    # what the Python client decodes, and no more
    assert idx.requests == [("/simple/six/", "gzip, deflate")]


def test_an_index_that_never_answers_costs_curl_one_timeout(
    tmp_folder: Path, no_netrc: None
) -> None:
    """Pages queued behind stalled ones would wait out curl's stall check one after another
    (116 pages: minutes): with no transfer done for the client's socket timeout, curl is
    stopped and every page is left to the Python client."""
    with SilentIndex() as server:
        urls = [f"{server.url}/p{i}/" for i in range(40)]
        pages = CurlPages.start(IndexConfig(index_url=server.url, timeout=1.0), urls)
        assert pages is not None
        done: list[str] = []
        worker = threading.Thread(target=lambda: done.extend(pages.finished()), daemon=True)
        worker.start()
        worker.join(timeout=60)  # a hang guard, not a speed check: one timeout is 1 s
        try:
            assert not worker.is_alive(), "curl was not stopped"
            assert pages._proc is not None and pages._proc.poll() is not None
            assert not any(pages.ready(u) for u in urls)
            assert all(pages.response(u) is None for u in urls)
            # connections opened at once (plain HTTP cannot multiplex), not one at a time
            assert len(server.held) > 1
        finally:
            pages.close()
    assert list(tmp_folder.iterdir()) == []
