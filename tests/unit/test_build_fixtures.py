"""Captures for the build tests: real ones recorded on a Debian 12 machine, and variants of them.

``tests/fixtures/build/`` holds two real captures: a small venv (attrs, six, pip, setuptools and
an editable package at the repository root) and a ~120-distribution data-science venv. The
variants (an Ubuntu host, a GPU host, VCS and archive packages...) are made from them with
``dataclasses.replace``, so every field keeps a shape the capture really produces.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from reprobox.model import (
    GPU,
    Environment,
    Experiment,
    Hardware,
    OSInfo,
    Package,
    PackageSource,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "build"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def load_env(name: str = "environment.json") -> Environment:
    return Environment.from_dict(json.loads((FIXTURES / name).read_text()))


def load_exp(name: str = "experiment.json") -> Experiment:
    return Experiment.from_dict(json.loads((FIXTURES / name).read_text()))


def small() -> tuple[Experiment, Environment]:
    return load_exp(), load_env()


def datascience() -> tuple[Experiment, Environment]:
    return load_exp("experiment-datascience.json"), load_env("environment-datascience.json")


def with_env(exp: Experiment, env: Environment) -> Experiment:
    """The experiment re-pointed at a changed environment (digest and id follow)."""
    return replace(exp, environment_digest=env.digest, id="").with_id()


def ubuntu(env: Environment) -> Environment:
    os_info = replace(env.os, id="ubuntu", codename="jammy", version_id="22.04",
                      id_like=("debian",), pretty_name="Ubuntu 22.04.4 LTS", glibc="2.35")
    return replace(env, os=os_info)


def macos(env: Environment) -> Environment:
    return replace(env, os=OSInfo(system="Darwin", arch="arm64", kernel="23.4.0"),
                   system_packages=())


def gpu(env: Environment) -> Environment:
    hw = replace(env.hardware, cuda_runtime="12.1", cudnn="8.9.2", cuda_source="torch",
                 gpus=(GPU("NVIDIA A100-SXM4-80GB", 81920, "535.104.05", "12.2", "8.0"),))
    return replace(ubuntu(env), hardware=hw)


def mixed_sources(env: Environment) -> Environment:
    """Add the source kinds the small capture lacks: VCS, archive, a nested directory."""
    extra = (
        Package("pyjokes", "0.6.0", PackageSource(
            "vcs", url="https://github.com/pyjokes/pyjokes", vcs="git",
            commit="3b3b7f6a8f6e9d2c1b0a9f8e7d6c5b4a39281706")),
        Package("tomli", "2.0.1", PackageSource(
            "archive",
            url="https://files.pythonhosted.org/packages/97/75/10a9ebee3fd790d20926a90a2547f0bf78f371b2f13aa822c759680ca7b9/tomli-2.0.1-py3-none-any.whl",
            hash="sha256=939de3e7a6161af0c887ef91b7d41a53e7c5a1ca976325f429cb46ea9bc30ecc")),
        Package("helpers", "0.2.0", PackageSource("directory", path="libs/helpers",
                                                   editable=False, in_repo=True)),
    )
    return replace(env, packages=env.packages + extra)


def outside_folder(env: Environment) -> Environment:
    """A package installed from a folder outside the repository (never read by a rebuild)."""
    return replace(env, packages=env.packages + (
        Package("outside", "1.0", PackageSource("directory", path="/home/someone/outside",
                                                editable=True, in_repo=False)),))


def no_packages(env: Environment) -> Environment:
    return replace(env, packages=(), system_packages=())


def test_fixtures_are_real_captures() -> None:
    exp, env = small()
    assert exp.environment_digest == env.digest and exp.content_matches_id
    exp, env = datascience()
    assert exp.environment_digest == env.digest
    assert len(env.packages) > 100
    assert env.os.id == "debian" and env.os.codename == "bookworm"


def test_variants_keep_ids_consistent() -> None:
    exp, env = small()
    changed = mixed_sources(env)
    moved = with_env(exp, changed)
    assert moved.environment_digest == changed.digest
    assert moved.id != exp.id and moved.content_matches_id
    assert isinstance(gpu(env).hardware, Hardware)
