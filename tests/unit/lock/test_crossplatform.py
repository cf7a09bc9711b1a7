"""--platform: a macOS capture re-resolved for Linux with uv, every changed version reported.

The resolution is real (uv, offline, against a find-links folder of tiny wheels built here):
``app`` needs ``b`` everywhere and ``c`` only on macOS; ``b 1.0`` exists only as a macOS wheel,
``b 2.0`` is pure Python.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobox.lock.uv import find_uv

from reprobox.lock import IndexConfig, VersionChange, lock_environment
from reprobox.lock.crossplatform import diff_pins, parse_pins, uv_environ
from reprobox.model import Environment, Interpreter, OSInfo, Package
from tests.fixtures.lock.fakeindex import make_wheel, sha256_of

from ...conftest import require

MAC = Interpreter("cpython", "3.11.7", abi="cp311", platform="macosx-11.0-arm64")


def test_parse_and_diff_pins():
    text = (
        "# header\nApp==1.0 \\\n    --hash=sha256:00\nb==2.0 ; sys_platform == 'linux'\n"
        "-e ./local\nc @ https://x/c.whl\nzope.interface==6.1\n"
    )
    assert parse_pins(text) == {"app": "1.0", "b": "2.0", "zope-interface": "6.1"}
    changes = diff_pins(
        {"app": "1.0", "b": "1.0", "c": "1.0"}, {"app": "1.0", "b": "2.0", "d": "4"}
    )
    assert changes == (
        VersionChange("b", "1.0", "2.0"),
        VersionChange("c", "1.0", None),
        VersionChange("d", None, "4"),
    )
    assert [c.describe() for c in changes] == [
        "b 1.0 -> 2.0",
        "c 1.0 dropped (not needed on the target platform)",
        "d 4 added (needed on the target platform)",
    ]


def test_uv_environ_carries_pips_configuration_and_nothing_of_uvs_own():
    cfg = IndexConfig(
        index_url="https://u:p@private.example/simple",
        extra_index_urls=("https://e.example/simple",),
        find_links=("/w",),
        cert="/ca.pem",
        trusted_hosts=("h.example",),
        proxies={"https": "http://proxy:3128", "no": "localhost"},
    )
    env = uv_environ(cfg, {"UV_INDEX_URL": "https://other/simple", "PIP_CERT": "/x", "HOME": "/h"})
    assert env["UV_INDEX_URL"] == "https://u:p@private.example/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "https://e.example/simple"
    assert env["UV_FIND_LINKS"] == "/w" and env["SSL_CERT_FILE"] == "/ca.pem"
    assert env["UV_INSECURE_HOST"] == "h.example" and env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["UV_NO_CONFIG"] == "1" and "PIP_CERT" not in env and env["HOME"] == "/h"


@pytest.fixture()
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "app", "1.0", requires=("b", "c; sys_platform == 'darwin'"))
    make_wheel(folder, "b", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    make_wheel(folder, "b", "2.0")
    make_wheel(folder, "c", "1.0")
    return folder


def test_macos_capture_locked_for_linux(wheels, tmp_path):
    require(find_uv() is not None, "uv (pip install -e '.[test]')")
    env = Environment(
        interpreter=MAC,
        os=OSInfo(system="Darwin", arch="arm64"),
        packages=(
            Package("app", "1.0", wheel_tags=("py3-none-any",), requested=True),
            Package("b", "1.0", wheel_tags=("cp311-cp311-macosx_11_0_arm64",)),
            Package("c", "1.0", wheel_tags=("py3-none-any",)),
        ),
    )
    config = IndexConfig(no_index=True, find_links=(str(wheels),))
    result = lock_environment(
        env, repo_root=tmp_path, config=config, cache_dir=tmp_path / "cache", platform="linux/amd64"
    )
    assert result.changed_versions == (
        VersionChange("b", "1.0", "2.0"),
        VersionChange("c", "1.0", None),
    )
    req = result.requirements_lock
    assert f"app==1.0 \\\n    --hash=sha256:{sha256_of(wheels / 'app-1.0-py3-none-any.whl')}" in req
    assert f"b==2.0 \\\n    --hash=sha256:{sha256_of(wheels / 'b-2.0-py3-none-any.whl')}" in req
    assert "c==" not in req and "b==1.0" not in req
    assert "on linux x86_64" in req
    assert "platform_machine == 'x86_64'" in result.pylock_toml
    assert result.platform == "linux/amd64"


def test_unresolvable_for_the_target_is_a_clear_lock_error(tmp_path):
    require(find_uv() is not None, "uv (pip install -e '.[test]')")
    from reprobox.errors import LockError

    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "maconly", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    env = Environment(
        interpreter=MAC,
        os=OSInfo(system="Darwin", arch="arm64"),
        packages=(
            Package(
                "maconly", "1.0", wheel_tags=("cp311-cp311-macosx_11_0_arm64",), requested=True
            ),
        ),
    )
    with pytest.raises(LockError) as err:
        lock_environment(
            env,
            repo_root=tmp_path,
            config=IndexConfig(no_index=True, find_links=(str(folder),)),
            cache_dir=tmp_path / "c",
            platform="linux/arm64",
        )
    assert "cannot be resolved for linux/aarch64" in err.value.message
    assert "maconly" in err.value.message and err.value.hint
