"""The lock a build installs is checked line by line against environment.json; the host's
wheelhouse keeps every file by its sha256 and a second fetch downloads nothing."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from reprobox.errors import LockError
from reprobox.lock.checks import LockRefused, Pin, check_pylock, check_requirements_lock
from reprobox.lock.config import IndexConfig
from reprobox.lock.select import Target
from reprobox.lock.wheelhouse import Wheelhouse, fetch_locked, rank, wheelhouse_dir

from ...asserts import refuses
from ...factories import FIXTURES, small

LOCK = (FIXTURES / "requirements.lock").read_text()
H = "a" * 64


def _refused(text: str, file: str = "requirements.lock") -> LockRefused:
    """The lock refused, naming the file (the caller checks the line and what it names)."""
    with refuses(LockRefused, names=f"{file} line ") as exc:
        check_requirements_lock(text, small()[1], file)
    assert exc.value.exit_code == 2
    return exc.value


def test_the_lock_reprobox_wrote_passes_and_gives_its_pins() -> None:
    pins = check_requirements_lock(LOCK, small()[1])
    by_name = {p.name: p for p in pins}
    assert by_name["attrs"].version == "23.2.0"
    assert by_name["attrs"].hashes[0].startswith("935dc3b5")
    assert len(pins) == LOCK.count("==")


@pytest.mark.parametrize(
    "line, what",
    [
        ("--extra-index-url https://evil.example/simple", "--extra-index-url"),
        ("--index-url=https://evil.example/simple", "--index-url"),
        ("-i https://evil.example/simple", "'-i'"),
        ("--find-links /root/.ssh", "--find-links"),
        ("--trusted-host evil.example", "--trusted-host"),
        ("-e git+https://evil.example/x.git#egg=x", "'-e'"),
        ("-r /etc/passwd", "'-r'"),
        ("-c constraints.txt", "'-c'"),
        ("evil @ https://evil.example/evil-1.0-py3-none-any.whl", "'evil'"),
        ("https://evil.example/evil-1.0.tar.gz", "https://evil.example"),
    ],
)
def test_every_option_line_is_refused_naming_the_line(line: str, what: str) -> None:
    lines = LOCK.splitlines()
    lines.insert(9, line)
    err = _refused("\n".join(lines) + "\n")
    assert "requirements.lock line 10" in err.message and what in err.message


def test_a_pin_environment_json_does_not_list_is_refused_naming_it() -> None:
    err = _refused(LOCK + f"evilpkg==1.0 \\\n    --hash=sha256:{H}\n")
    assert err.what == "the package 'evilpkg'" and "not in environment.json" in err.message
    assert err.line == len(LOCK.splitlines()) + 1


def test_a_pin_at_another_version_a_marker_or_a_bad_hash_is_refused() -> None:
    moved = LOCK.replace("attrs==23.2.0", "attrs==99.0")
    assert "'99.0', environment.json records '23.2.0'" in _refused(moved).message
    marker = LOCK.replace("attrs==23.2.0 \\", "attrs==23.2.0 ; python_version > '3' \\")
    assert "';'" in _refused(marker).message
    short = LOCK.replace("--hash=sha256:935dc3b5", "--hash=sha256:35dc3b5", 1)
    assert "well-formed" in _refused(short).message
    md5 = LOCK + f"six==1.16.0 --hash=md5:{'0' * 32}\n"
    assert "'six'" in _refused(md5).message
    extra = LOCK.replace("attrs==23.2.0", "attrs[evil]==23.2.0")
    assert "attrs[evil]" in _refused(extra).message
    twice = LOCK + f"attrs==23.2.0 --hash=sha256:{H}\n"
    assert "pinned twice" in _refused(twice).message
    assert "control character" in _refused(LOCK + "\x1b[2J\n").message


def test_pylock_may_name_only_recorded_packages() -> None:
    env = small()[1]
    check_pylock('lock-version = "1.0"\n\n[[packages]]\nname = "attrs"\nversion = "23.2.0"\n', env)
    with refuses(LockRefused, names="pylock.toml line 4: the package 'evil'"):
        check_pylock('lock-version = "1.0"\n\n[[packages]]\nname = "evil"\nversion = "1"\n', env)


# --------------------------------------------------------------------------- the wheelhouse


def _wheel(path: Path, name: str, version: str, payload: str = "") -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/__init__.py", payload)
        zf.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
        zf.writestr(
            f"{name}-{version}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "")
    out = path / f"{name}-{version}-py3-none-any.whl"
    out.write_bytes(buf.getvalue())
    return out


TARGET = Target("3.11.7", "cpython", "cp311", "linux", "x86_64")


def test_files_are_ranked_for_this_interpreter_and_architecture() -> None:
    assert rank("x-1-py3-none-any.whl", TARGET) == 1
    assert rank("x-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", TARGET) == 1
    assert rank("x-1-cp311-cp311-musllinux_1_1_x86_64.whl", TARGET) is None
    assert rank("x-1-cp311-cp311-manylinux_2_17_aarch64.whl", TARGET) is None
    assert rank("x-1-cp312-cp312-manylinux_2_17_x86_64.whl", TARGET) is None
    assert rank("x-1.tar.gz", TARGET) == 2


def test_the_wheelhouse_is_content_addressed_and_a_second_fetch_downloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    whl = _wheel(links, "demo", "1.0")
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(tmp_path / "house"))
    assert wheelhouse_dir() == tmp_path / "house"
    config = IndexConfig(no_index=True, find_links=(str(links),))
    pin = Pin("demo", "1.0", (digest,), 1)
    first = fetch_locked([pin], TARGET, config, cache_dir=tmp_path / "cache")
    assert first.fetched == 1
    [art] = first.artifacts
    assert art.path == tmp_path / "house" / "sha256" / digest / whl.name
    assert art.verified == "lock" and hashlib.sha256(art.path.read_bytes()).hexdigest() == digest
    whl.unlink()  # the source is gone: only the wheelhouse can answer now
    second = fetch_locked([pin], TARGET, config, cache_dir=tmp_path / "cache")
    assert second.fetched == 0 and second.artifacts[0].path == art.path
    assert not any((tmp_path / "house" / "tmp").iterdir())  # no temporary file left behind


def test_a_file_whose_hash_the_lock_does_not_list_is_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "demo", "1.0", "import os  # another build of the same version")
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(tmp_path / "house"))
    config = IndexConfig(no_index=True, find_links=(str(links),))
    with refuses(LockError, names=["demo==1.0", "pip's configuration"]):
        fetch_locked([Pin("demo", "1.0", (H,), 1)], TARGET, config, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "house" / "sha256").exists() or not any(
        (tmp_path / "house" / "sha256").iterdir()
    )


def test_put_refuses_a_wrong_digest_and_leaves_nothing(tmp_path: Path) -> None:
    house = Wheelhouse(tmp_path / "h")
    with refuses(LockError, names=["x-1-py3-none-any.whl", "does not list"]):
        house.put("x-1-py3-none-any.whl", [b"bytes"], [H])
    assert os.listdir(tmp_path / "h" / "tmp") == []
    digest, path = house.put("x-1-py3-none-any.whl", [b"by", b"tes"])
    assert digest == hashlib.sha256(b"bytes").hexdigest() and house.get(digest) == path


def test_a_huge_lock_is_refused_before_it_is_parsed() -> None:
    from reprobox.lock.checks import MAX_LOCK_BYTES

    err = _refused("#" * (MAX_LOCK_BYTES + 1))
    assert err.line == 1 and "larger than" in err.message


def test_a_pylock_nested_past_what_toml_reads_is_refused() -> None:
    with refuses(LockRefused, names=["pylock.toml", "nests too deeply"]):
        check_pylock("x = " + "[" * 100_000 + "]" * 100_000 + "\n", small()[1])


def test_a_wheelhouse_file_of_another_project_is_not_taken_for_a_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheelhouse keeps files by sha256: a lock that pairs six with requests' hash got
    requests' wheel as six's file."""
    links = tmp_path / "links"
    links.mkdir()
    other = _wheel(links, "other", "1.0")
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(tmp_path / "house"))
    config = IndexConfig(no_index=True, find_links=(str(links),))
    fetch_locked([Pin("other", "1.0", (digest,), 1)], TARGET, config, cache_dir=tmp_path / "c")
    with refuses(LockError, names=["demo==1.0"]):
        fetch_locked([Pin("demo", "1.0", (digest,), 1)], TARGET, config, cache_dir=tmp_path / "c")


def test_an_sdist_is_not_taken_where_the_capture_installed_a_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock listing only the sdist's hash of a release the capture installed from a wheel:
    the sdist would be built here (its setup.py run) into other files. Refused; without the
    recorded wheel tags (nothing known), the sdist is still taken."""
    links = tmp_path / "links"
    links.mkdir()
    sdist = links / "demo-1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    monkeypatch.setenv("REPROBOX_WHEELHOUSE", str(tmp_path / "house"))
    config = IndexConfig(no_index=True, find_links=(str(links),))
    pin = Pin("demo", "1.0", (digest,), 1)
    wheel_tags = {"demo": ("py3-none-any",)}
    for _ in range(2):  # from the sources, then with the file already in the wheelhouse
        with refuses(LockError, names=["no wheel (the capture installed one) of demo==1.0"]):
            fetch_locked([pin], TARGET, config, installed_tags=wheel_tags, cache_dir=tmp_path / "c")
        got = fetch_locked([pin], TARGET, config, cache_dir=tmp_path / "c")
        assert [a.filename for a in got.artifacts] == ["demo-1.0.tar.gz"]
    # a wheel for another platform only (a cross-platform capture): the sdist may stand in
    mac = {"demo": ("cp311-cp311-macosx_11_0_arm64",)}
    got = fetch_locked([pin], TARGET, config, installed_tags=mac, cache_dir=tmp_path / "c")
    assert [a.filename for a in got.artifacts] == ["demo-1.0.tar.gz"]
