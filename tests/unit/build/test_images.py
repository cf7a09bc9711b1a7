"""Base image selection: exact patch release, codename from the capture host, overrides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.build import select_base_image
from reprobox.build.images import (
    base_distro,
    cuda_image,
    explain_base_choice,
    has_python_image,
    newest_debian_for,
    pyproject_base_warning,
    user_config_path,
)
from reprobox.errors import UsageError, ValidationError
from reprobox.model import OSInfo

from ...asserts import refuses
from ...factories import gpu, macos, small, ubuntu


def test_debian_capture_uses_the_host_codename_and_exact_patch() -> None:
    _exp, env = small()
    assert select_base_image(env) == ("python:3.11.7-slim-bookworm", "auto")
    bullseye = replace(env, os=replace(env.os, codename="bullseye", version_id="11"))
    assert select_base_image(bullseye)[0] == "python:3.11.7-slim-bullseye"


def test_ubuntu_capture_maps_to_the_debian_release_it_derives_from() -> None:
    _exp, env = small()
    assert select_base_image(ubuntu(env))[0] == "python:3.11.7-slim-bookworm"


def test_other_systems_get_the_newest_debian_with_that_python() -> None:
    _exp, env = small()
    mac = macos(env)
    assert select_base_image(mac)[0] == "python:3.11.7-slim-bookworm"
    newer = replace(mac, interpreter=replace(mac.interpreter, version="3.12.11"))
    assert select_base_image(newer)[0] == "python:3.12.11-slim-trixie"
    old = replace(mac, interpreter=replace(mac.interpreter, version="3.9.10"))
    assert select_base_image(old)[0] == "python:3.9.10-slim-bullseye"
    assert "newest Debian with Python 3.11.7" in explain_base_choice(
        mac, "python:3.11.7-slim-bookworm", "auto"
    )


@pytest.mark.parametrize(
    "version,codename,expected",
    [
        ("3.11.7", "bookworm", True),
        ("3.11.3", "bookworm", False),  # released before bookworm images existed
        ("3.11.3", "bullseye", True),
        ("3.11.13", "trixie", True),
        ("3.11.13", "bullseye", False),  # bullseye was dropped when trixie arrived
        ("3.14.0", "bullseye", False),
        ("3.6.15", "bookworm", False),
    ],
)
def test_registry_history(version: str, codename: str, expected: bool) -> None:
    assert has_python_image(version, codename) is expected


def test_newest_debian_for() -> None:
    assert newest_debian_for("3.13.8") == "trixie"
    assert newest_debian_for("3.10.4") == "bullseye"


def test_gpu_capture_gets_a_cuda_runtime_base() -> None:
    _exp, env = small()
    image, source = select_base_image(gpu(env))
    assert (image, source) == ("nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04", "auto")
    assert cuda_image("12.4", "9.1.0") == "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
    assert cuda_image("12.8", None) == "nvidia/cuda:12.8.1-runtime-ubuntu24.04"
    assert cuda_image("10.2", "7") is None
    # A CUDA build of torch on a machine without GPUs is a CPU capture.
    cpu_torch = replace(env, hardware=replace(gpu(env).hardware, gpus=()))
    assert select_base_image(cpu_torch)[0].startswith("python:3.11.7-slim-")


def test_base_distro_from_the_tag() -> None:
    assert str(base_distro("python:3.11.7-slim-bookworm")) == "debian bookworm"
    assert str(base_distro("docker.io/library/python:3.12.1-bookworm")) == "debian bookworm"
    assert str(base_distro("nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04")) == "ubuntu jammy"
    assert base_distro("registry.example:5000/team/base:1") is None
    assert base_distro("python") is None


def test_flag_beats_user_config_beats_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exp, env = small()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert select_base_image(env)[1] == "auto"
    conf = tmp_path / "config" / "reprobox" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('[build]\nbase-image = "registry.example/py:3.11.7"\n')
    assert user_config_path() == conf
    assert select_base_image(env) == ("registry.example/py:3.11.7", "config")
    assert select_base_image(env, override="my/base:2") == ("my/base:2", "flag")
    assert str(conf) in explain_base_choice(env, "registry.example/py:3.11.7", "config")


def test_a_user_config_nested_too_deeply_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprobox.errors import UsageError

    _exp, env = small()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    conf = tmp_path / "config" / "reprobox" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsageError) as info:
        select_base_image(env)
    assert str(conf) in info.value.message and "nests too deeply" in info.value.message


def test_a_base_image_in_the_checkout_is_ignored_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull request writes pyproject.toml: it never chooses what the build starts from."""
    _exp, env = small()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.reprobox]\nbase-image = "evil.example/py:latest"\n'
    )
    assert select_base_image(env) == ("python:3.11.7-slim-bookworm", "auto")
    warning = pyproject_base_warning(tmp_path)
    assert warning is not None
    assert "pyproject.toml is ignored" in warning and "--base-image" in warning
    assert str(tmp_path / "config" / "reprobox" / "config.toml") in warning
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert pyproject_base_warning(tmp_path) is None


def test_bad_overrides_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exp, env = small()
    with refuses(UsageError, names=["--base-image", "'python:3.11 ; id'"]) as flag:
        select_base_image(env, override="python:3.11 ; id")
    assert flag.value.exit_code == 2
    conf = tmp_path / "config.toml"
    conf.write_text('base-image = "Bad Image"\n')
    with refuses(UsageError, names=["base-image = 'Bad Image'", str(conf)]):
        select_base_image(env, config_file=conf)
    conf.write_text("[build\n")
    with refuses(UsageError, names=str(conf)):
        select_base_image(env, config_file=conf)


def test_an_inexact_interpreter_version_cannot_name_an_image() -> None:
    _exp, env = small()
    dev = replace(env, interpreter=replace(env.interpreter, version="3.11.7+"))
    with refuses(ValidationError, field="interpreter version", names=["'3.11.7+'", "--base-image"]):
        select_base_image(dev)
    assert select_base_image(dev, override="python:3.11-slim")[0] == "python:3.11-slim"


def test_unknown_os_without_codename() -> None:
    _exp, env = small()
    bare = replace(env, os=OSInfo())
    assert select_base_image(bare)[0] == "python:3.11.7-slim-bookworm"
