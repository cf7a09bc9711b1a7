"""Packages with no recorded hash are fetched by the host without any credential of the host,
hashed, kept in the wheelhouse and reported as unverified. Real git, real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from reprobox.errors import CommandError, LockError
from reprobox.lock.config import IndexConfig
from reprobox.lock.wheelhouse import DirectSource, Wheelhouse, fetch_direct

from ...conftest import git

CANARY = "canary-host-credential-7f3a"


class Server:
    """Serves ``files`` and answers anything else with 401; records every request's headers."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append((self.path, dict(self.headers)))
                body = files.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="x"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This machine holds credentials for 127.0.0.1: netrc, a git credential store, an agent."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login host password {CANARY}\n")
    os.chmod(home / ".netrc", 0o600)
    (home / ".git-credentials").write_text(f"http://host:{CANARY}@127.0.0.1\n")
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(home / "agent.sock"))
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(tmp_path / "house"))
    return home


@pytest.fixture
def archive_server() -> Iterator[Server]:
    server = Server({"/pkgs/blob-2.0.tar.gz": b"an archive nobody hashed"})
    yield server
    server.close()


def _no_credential_sent(server: Server) -> None:
    for path, headers in server.seen:
        assert "Authorization" not in headers, f"a credential was sent for {path}"
        assert CANARY not in str(headers)


def test_an_archive_without_a_hash_is_fetched_anonymously_and_reported_unverified(
    host_credentials: Path, archive_server: Server
) -> None:
    src = DirectSource("blob", "2.0", "archive", f"{archive_server.url}/pkgs/blob-2.0.tar.gz")
    result = fetch_direct([src], IndexConfig())
    [art] = result.artifacts
    assert art.verified == "unverified" and result.unverified == (art,)
    assert art.path.read_bytes() == b"an archive nobody hashed"
    assert art.sha256 == hashlib.sha256(b"an archive nobody hashed").hexdigest()
    assert art.path.parent.name == art.sha256
    assert archive_server.seen
    assert all(p == "/pkgs/blob-2.0.tar.gz" for p, _h in archive_server.seen)
    _no_credential_sent(archive_server)


def test_an_archive_whose_recorded_hash_differs_is_refused(
    host_credentials: Path, archive_server: Server, tmp_path: Path
) -> None:
    src = DirectSource(
        "blob",
        "2.0",
        "archive",
        f"{archive_server.url}/pkgs/blob-2.0.tar.gz",
        hash="sha256=" + "0" * 64,
    )
    with pytest.raises(LockError, match="blob-2.0.tar.gz has sha256"):
        fetch_direct([src], IndexConfig())
    assert not (tmp_path / "house" / "sha256").exists()


def test_a_git_repository_asking_for_credentials_gets_none(
    host_credentials: Path, archive_server: Server
) -> None:
    src = DirectSource(
        "tool", "1.0", "vcs", f"git+{archive_server.url}/private/tool.git", commit="c" * 40
    )
    with pytest.raises(CommandError, match="no credentials"):
        fetch_direct([src], IndexConfig())
    assert archive_server.seen, "git did ask the server"
    _no_credential_sent(archive_server)


def test_a_public_git_commit_is_archived_and_reported_unverified(
    host_credentials: Path, git_repo: Path, tmp_path: Path
) -> None:
    (git_repo / "py").mkdir()
    (git_repo / "py" / "setup.py").write_text("from setuptools import setup\nsetup(name='tool')\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "tool")
    commit = git(git_repo, "rev-parse", "HEAD").strip()
    bare = tmp_path / "srv" / "tool.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(git_repo), str(bare)], check=True)
    (bare / "git-daemon-export-ok").touch()
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={tmp_path / 'srv'}",
            "--export-all",
            "--enable=upload-pack",
            "--informative-errors",
            str(tmp_path / "srv"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(port)
        src = DirectSource(
            "tool",
            "1.0",
            "vcs",
            f"git+git://127.0.0.1:{port}/tool.git",
            commit=commit,
            subdirectory="py",
        )
        result = fetch_direct([src], IndexConfig())
    finally:
        daemon.terminate()
        daemon.wait()
    [art] = result.artifacts
    assert art.filename == f"tool-1.0-{commit[:12]}.tar.gz" and art.verified == "unverified"
    listing = subprocess.run(
        ["tar", "-tzf", str(art.path)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "tool-1.0/setup.py" in listing  # the subdirectory, at the recorded commit
    # the server is gone: a second fetch of the same commit comes from the wheelhouse
    again = fetch_direct([src], IndexConfig(), house=Wheelhouse())
    assert again.fetched == 0 and again.artifacts[0].sha256 == art.sha256
    assert again.unverified == again.artifacts


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int) -> None:
    import socket
    import time

    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("git daemon did not start listening")
