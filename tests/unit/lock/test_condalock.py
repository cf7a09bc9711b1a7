"""conda-lock.yml and @EXPLICIT from conda records; the host's .condarc; fetching with tokens.

The channel is real (archives written by conda-package-handling, indexed by py-rattler) and
served by a real HTTP server on 127.0.0.1 that wants a token in the path, as anaconda.org's
``/t/<token>/`` channels do.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from reprobox.capture import conda
from reprobox.lock.condaconfig import read_conda_config
from reprobox.lock.condafetch import (
    CondaAuthError,
    CondaFetchError,
    CondaUnlockable,
    check_package,
    fetch,
)
from reprobox.lock.condalock import lock_conda, topological
from reprobox.model import CondaEnvironment, CondaPackage, Environment, Interpreter
from tests.asserts import refuses
from tests.fixtures.conda.channel import index_channel, noarch_package, write_package

TOKEN = "tk-CANARY-7f3e9a"
META = Path(__file__).parents[2] / "fixtures" / "conda" / "meta"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chan") / "private"
    write_package(noarch_package("alpha", "1.0"), root, fmt=".tar.bz2")
    write_package(noarch_package("beta", "2.0"), root)
    index_channel(root)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    root: Path = Path("/nonexistent")
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        prefix = f"/t/{TOKEN}/private/"
        if not self.path.startswith(prefix):
            self.send_error(401, "token required")
            return
        target = self.root / self.path[len(prefix) :]
        if not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Server(str):
    """The server's base URL; ``seen`` lists the paths it was asked for."""

    seen: list[str]


@pytest.fixture
def server(channel: Path) -> Iterator[Server]:
    seen: list[str] = []
    handler = type("H", (_Handler,), {"root": channel, "seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    url.seen = seen
    try:
        yield url
    finally:
        httpd.shutdown()
        httpd.server_close()


def _record(channel: Path, name: str, base: str) -> CondaPackage:
    sub = channel / "noarch"
    archive = next(p for p in sub.iterdir() if p.name.startswith(name + "-"))
    data = archive.read_bytes()
    version, build = archive.name.split("-")[1], archive.name.split("-")[2].split(".")[0]
    return CondaPackage(
        name=name,
        version=version,
        build=build,
        channel=f"{base}/private",
        subdir="noarch",
        url=f"{base}/private/noarch/{archive.name}",
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        depends=("python >=3.8",),
        noarch="python",
    )


def _env(*pkgs: CondaPackage) -> Environment:
    channels = tuple(dict.fromkeys(p.channel for p in pkgs if p.channel))
    return Environment(
        interpreter=Interpreter("cpython", "3.11.7"),
        conda=CondaEnvironment(packages=pkgs, channels=channels, platform="linux-64"),
    )


def _condarc(tmp_path: Path, text: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".condarc").write_text(text)
    return {"HOME": str(home)}


# --------------------------------------------------------------------------- the lock files


def test_lock_files_are_conda_lock_valid_and_explicit(channel: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    base = channel.parent.as_uri()
    env = _env(_record(channel, "alpha", base), _record(channel, "beta", base))
    files = lock_conda(env, (), config=read_conda_config({}))
    path = channel.parent / "conda-lock.yml"
    path.write_text(files["conda-lock.yml"])
    lock = parse_conda_lock_file(path)
    by_name = {p.name: p for p in lock.package}
    assert set(by_name) == {"alpha", "beta"}
    alpha = by_name["alpha"]
    assert alpha.manager == "conda" and alpha.build == "pyhd8ed1ab_0"
    assert alpha.hash.md5 == env.conda.packages[0].md5  # type: ignore[union-attr]
    assert alpha.hash.sha256 == env.conda.packages[0].sha256  # type: ignore[union-attr]
    assert alpha.url.endswith("/noarch/alpha-1.0-pyhd8ed1ab_0.tar.bz2")
    assert lock.metadata.platforms == ["linux-64"]
    explicit = files["conda-explicit.txt"].splitlines()
    at = explicit.index("@EXPLICIT")
    urls = explicit[at + 1 :]
    assert urls[0].startswith(alpha.url + "#sha256:") and len(urls) == 2
    assert urls[0].split("#sha256:")[1] == alpha.hash.sha256


def test_md5_only_record_is_completed_through_the_token_in_condarc(
    channel: Path, server: Server, tmp_path: Path
) -> None:
    rec = replace(_record(channel, "beta", server), sha256=None)
    want = _record(channel, "beta", server).sha256
    environ = _condarc(tmp_path, f"channels:\n  - {server}/t/{TOKEN}/private\n")
    files = lock_conda(_env(rec), (), config=read_conda_config(environ))
    assert f"sha256: {want}" in files["conda-lock.yml"]
    for name, text in files.items():  # canary: the token reached the server, never a file
        assert TOKEN not in text, name
    assert any(TOKEN in p for p in server.seen)


def test_channel_needing_a_token_the_host_lacks(channel: Path, server: str, tmp_path: Path) -> None:
    rec = replace(_record(channel, "beta", server), sha256=None)
    with pytest.raises(CondaAuthError) as err:
        lock_conda(_env(rec), (), config=read_conda_config(_condarc(tmp_path, "{}\n")))
    assert "conda package beta 2.0" in err.value.message
    assert f"{server}/private (HTTP 401)" in err.value.message
    assert "token" in (err.value.hint or "") and "~/.condarc" in (err.value.hint or "")
    assert err.value.exit_code == 3


def test_package_without_url_is_refused_naming_it(channel: Path) -> None:
    base = channel.parent.as_uri()
    local = replace(_record(channel, "alpha", base), url=None, channel=None)
    with pytest.raises(CondaUnlockable) as err:
        lock_conda(_env(local, _record(channel, "beta", base)), (), config=read_conda_config({}))
    assert "conda package alpha 1.0 (pyhd8ed1ab_0) has no download URL" in err.value.message
    assert "beta" not in err.value.message and err.value.exit_code == 2


def test_changed_archive_is_refused_naming_the_package(channel: Path, tmp_path: Path) -> None:
    base = channel.parent.as_uri()
    rec = replace(_record(channel, "alpha", base), sha256="0" * 64)
    with pytest.raises(CondaFetchError) as err:
        fetch(rec, read_conda_config({}), cache=tmp_path / "cache")
    assert "conda package alpha 1.0" in err.value.message and "sha256" in err.value.message


def test_mirror_from_condarc_is_tried_first(channel: Path, server: str, tmp_path: Path) -> None:
    # recorded from a channel that does not answer; the host mirrors it (with its token)
    rec = _record(channel, "alpha", "https://conda.example.invalid")
    environ = _condarc(
        tmp_path,
        "mirrored_channels:\n  https://conda.example.invalid/private:\n"
        f"    - {server}/t/{TOKEN}/private\n",
    )
    path = fetch(rec, read_conda_config(environ), cache=tmp_path / "cache")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.sha256


def test_condarc_alias_custom_channels_and_tokens(tmp_path: Path) -> None:
    environ = _condarc(
        tmp_path,
        "\n".join(
            [
                "channel_alias: https://conda.corp.example/t/tk-ALIAS",
                "custom_channels:",
                "  internal: https://pkgs.corp.example",
                "channels:",
                "  - https://pkgs.corp.example/t/tk-CUSTOM/internal",
                "  - conda-forge",
                "",
            ]
        ),
    )
    cfg = read_conda_config(environ)
    assert cfg.candidates("https://conda.anaconda.org/conda-forge", "conda-forge") == [
        "https://conda.corp.example/t/tk-ALIAS/conda-forge"
    ]
    assert cfg.candidates("https://conda.anaconda.org/internal", "internal") == [
        "https://pkgs.corp.example/t/tk-CUSTOM/internal"
    ]
    assert cfg.candidates("https://other.example/x", "https://other.example/x") == [
        "https://other.example/x"
    ]


def test_untrusted_records_are_checked_before_any_fetch() -> None:
    from reprobox.errors import ValidationError

    good = CondaPackage(
        "alpha",
        "1.0",
        "py_0",
        channel="https://c.example/ch",
        subdir="noarch",
        url="https://c.example/ch/noarch/alpha-1.0-py_0.conda",
        md5="a" * 32,
    )
    check_package(good)
    for bad, field in [
        (replace(good, url="https://c.example/ch/noarch/evil-1.0-py_0.conda"), "url"),
        (replace(good, url="ftp://c.example/ch/noarch/alpha-1.0-py_0.conda"), "url"),
        (
            replace(
                good,
                url="https://c.example/t/tok/ch/noarch/alpha-1.0-py_0.conda",
                channel="https://c.example/t/tok/ch",
            ),
            "url",
        ),
        (replace(good, build="py_0; rm -rf /"), "build"),
        (replace(good, subdir="../../etc"), "subdir"),
        (replace(good, md5="zz"), "md5"),
        (replace(good, channel="https://elsewhere.example/ch"), "channel"),
    ]:
        with refuses(ValidationError, field=f"conda package 'alpha'.{field}"):
            check_package(bad)


def test_explicit_order_puts_dependencies_first() -> None:
    env = conda.read_prefix(META / "conda-forge-openblas").environment
    order = [p.name for p in topological(env.packages)]
    assert order.index("libopenblas") < order.index("libblas") < order.index("numpy")
    assert order.index("python") < order.index("numpy")


def test_capture_shapes_round_trip_into_conda_lock(tmp_path: Path) -> None:
    """The hand-written conda, micromamba and pixi records make valid conda-lock files."""
    from conda_lock.lockfile import parse_conda_lock_file

    for shape in ("conda-forge-openblas", "pytorch-cuda-micromamba", "pixi-rattler"):
        env = Environment(
            interpreter=Interpreter("cpython", "3.11.7"),
            conda=conda.read_prefix(META / shape).environment,
        )
        files = lock_conda(env, (), config=read_conda_config({}))
        out = tmp_path / f"{shape}.yml"
        out.write_text(files["conda-lock.yml"])
        assert len(parse_conda_lock_file(out).package) == len(env.conda.packages)  # type: ignore
        assert "SECRETTOKEN" not in json.dumps(files) and "hunter2" not in json.dumps(files)


def test_condarc_files_merge_in_conda_order_with_proxies_and_ssl(tmp_path: Path) -> None:
    environ = _condarc(
        tmp_path,
        "ssl_verify: /etc/ssl/corp-ca.pem\n"
        "proxy_servers:\n  https: http://proxy.corp.example:3128\n"
        "channel_alias: https://first.example\n",
    )
    later = tmp_path / "later.condarc"
    later.write_text("channel_alias: https://second.example\nssl_verify: false\n")
    cfg = read_conda_config({**environ, "CONDARC": str(later)})
    assert cfg.channel_alias == "https://second.example"  # $CONDARC is read last and wins
    assert cfg.ssl_verify is False
    assert cfg.proxies == {"https": "http://proxy.corp.example:3128"}
    assert cfg.files[-1] == str(later)
    only_home = read_conda_config(environ)
    assert only_home.ssl_verify == "/etc/ssl/corp-ca.pem"


def test_broken_condarc_is_named(tmp_path: Path) -> None:
    from reprobox.errors import UsageError

    environ = _condarc(tmp_path, "channels: [unclosed\n")
    with pytest.raises(UsageError) as err:
        read_conda_config(environ)
    assert str(Path(environ["HOME"]) / ".condarc") in err.value.message
